"""D2-pruning (Maharana et al. 2024): message passing on a kNN graph.

A selection procedure on difficulty scores (`difficulty.difficulty`, by
`d2_score`): an exact kNN graph on the features (`knn_graph`), forward
message passing (`d2_forward_scores`), then greedy picks with reverse
message passing (`d2_greedy_order`). The mask keeps exactly the per-class
quotas (`selection.class_quotas`) when `class_balanced`, or the global
budget `selection.budget(ratio, N)`.
"""

import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import difficulty as difficulty_lib

Array = jax.Array
Graph = tuple[Array, Array]


def _check_graph(graph: Any, n: int) -> None:
  """Checks `(idx int [N, k], dist float [N, k])` from `knn_graph`."""
  if not isinstance(graph, (tuple, list)) or len(graph) != 2:
    raise ValueError(f"graph={type(graph).__name__} is not allowed: it must "
                     "be the pair (nbr_idx [N, k], nbr_dist [N, k]) from "
                     "knn_graph.")
  idx, dist = graph
  common.check_ndim(idx, 2, "graph nbr_idx", "[N, k]")
  if np.shape(idx) != np.shape(dist) or np.shape(idx)[0] != n:
    raise ValueError(f"graph arrays have shapes {np.shape(idx)} and "
                     f"{np.shape(dist)}; both must be [N={n}, k].")
  if np.shape(idx)[1] < 1:
    raise ValueError("graph has k=0 neighbours; it must have k >= 1.")
  if validation.is_concrete(idx, dist):
    i = np.asarray(idx)
    if not np.issubdtype(i.dtype, np.integer) or i.min() < 0 or i.max() >= n:
      raise ValueError(f"graph nbr_idx must be integers in [0, {n}); got "
                       f"dtype {i.dtype}, range [{i.min()}, {i.max()}].")
    d = np.asarray(dist, np.float64)
    if np.isnan(d).any() or (d < 0).any():
      raise ValueError("graph nbr_dist holds NaN or negative values; "
                       "distances must be >= 0 (inf marks a missing edge).")


_KNN_GROUP = 16


def _tile_top_k(dist, ids, best_d, best_i, k):
  """Merges a `[c, m]` distance tile into the running `[c, k]` best.

  `lax.top_k` over all m columns costs ~15 ns per entry on CPU, several
  times the tile's matrix product. So the columns are cut into contiguous
  groups of `_KNN_GROUP`; only the k groups with the smallest minima (ties
  to the lower group) can hold the tile's k nearest, since those k minima
  are k entries at least as close (and, on equal distances, of lower id)
  as anything in another group. Exact, ties included, for ~k * g + m / g
  entries through top_k instead of m.
  """
  c, m = dist.shape
  g = _KNN_GROUP
  if m % g == 0 and m // g >= 2 * k:
    grouped = dist.reshape(c, m // g, g)
    _, gi = jax.lax.top_k(-jnp.min(grouped, axis=2), k)
    # Gather in group order so that ties below resolve to the lower id.
    gi = jnp.sort(gi, axis=1)
    dist = jnp.take_along_axis(grouped, gi[:, :, None], axis=1
                               ).reshape(c, k * g)
    ids = (ids[gi * g][:, :, None] + jnp.arange(g, dtype=jnp.int32)
           ).reshape(c, k * g)
  else:
    ids = jnp.broadcast_to(ids, (c, m))
  # Running best first: lax.top_k keeps the lower position on ties, so equal
  # distances resolve to the lower (sorted) id.
  all_d = jnp.concatenate([best_d, dist], axis=1)
  all_i = jnp.concatenate([best_i, ids], axis=1)
  neg, pos = jax.lax.top_k(-all_d, k)
  return -neg, jnp.take_along_axis(all_i, pos, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _knn_core(features, labels, k, chunk_size):
  n = features.shape[0]
  g = _KNN_GROUP
  c = -(-min(chunk_size, n) // g) * g  # Whole groups per tile.
  num_tiles = -(-n // c)
  padded = num_tiles * c
  # Sorting by label makes each class a contiguous run, so a row tile only
  # scans the column tiles that overlap its classes (about C times less work
  # for a within-class graph). Without labels everything is one class.
  perm = jnp.argsort(labels, stable=True).astype(jnp.int32)
  x = jnp.pad(features.astype(jnp.float32)[perm], ((0, padded - n), (0, 0)))
  lab = jnp.pad(labels[perm], (0, padded - n), constant_values=-1)
  sq = jnp.sum(x * x, axis=1)
  sizes = jnp.bincount(labels, length=n)  # labels < n always (see caller).
  ends = jnp.cumsum(sizes)
  begins = ends - sizes
  cols = jnp.arange(c, dtype=jnp.int32)

  def row_tile(r):
    r0 = r * c
    xr = jax.lax.dynamic_slice_in_dim(x, r0, c)
    sqr = jax.lax.dynamic_slice_in_dim(sq, r0, c)
    labr = jax.lax.dynamic_slice_in_dim(lab, r0, c)
    rows = r0 + cols
    first_label = lab[r0]
    last_label = lab[jnp.minimum(r0 + c, n) - 1]
    j_lo = begins[first_label] // c
    j_hi = (ends[last_label] - 1) // c

    def col_tile(j, best):
      best_d, best_i = best
      c0 = j * c
      xc = jax.lax.dynamic_slice_in_dim(x, c0, c)
      sqc = jax.lax.dynamic_slice_in_dim(sq, c0, c)
      labc = jax.lax.dynamic_slice_in_dim(lab, c0, c)
      dot = jnp.dot(xr, xc.T, precision=jax.lax.Precision.HIGHEST)
      dist = jnp.maximum(sqr[:, None] + sqc[None, :] - 2.0 * dot, 0.0)
      ids = c0 + cols
      invalid = ((labr[:, None] != labc[None, :]) | (labc[None, :] < 0)
                 | (rows[:, None] == ids[None, :]))
      dist = jnp.where(invalid, jnp.inf, dist)
      return _tile_top_k(dist, ids, best_d, best_i, k)

    init = (jnp.full((c, k), jnp.inf, jnp.float32),
            jnp.broadcast_to(rows[:, None], (c, k)))
    best_d, best_i = jax.lax.fori_loop(j_lo, j_hi + 1, col_tile, init)
    # The expansion |a|^2 + |b|^2 - 2ab loses precision for close points;
    # recompute the chosen k distances directly and re-sort them.
    missing = jnp.isinf(best_d)
    best_i = jnp.where(missing, rows[:, None], best_i)
    exact = jnp.sum((x[best_i] - xr[:, None, :]) ** 2, axis=-1)
    exact = jnp.where(missing, jnp.inf, exact)
    exact, best_i = jax.lax.sort((exact, best_i), dimension=1, num_keys=2)
    return best_i, exact

  idx, dist = jax.lax.map(row_tile, jnp.arange(num_tiles))
  idx = idx.reshape(padded, k)[:n]
  dist = dist.reshape(padded, k)[:n]
  # Back from label-sorted positions to example ids, rows and entries.
  inv = jnp.zeros(n, jnp.int32).at[perm].set(jnp.arange(n, dtype=jnp.int32))
  return perm[idx][inv], dist[inv]


def knn_graph(features: Array,
              k: int = 10,
              chunk_size: int = 4096,
              labels: Optional[Array] = None) -> Graph:
  """Exact k-nearest-neighbour graph (squared Euclidean), self excluded.

  Tiled brute force in one jitted call: row tiles of `chunk_size` scan
  column tiles of `chunk_size`, each tile a `[c, D] x [D, c]` product
  (HIGHEST precision, so no TF32 on GPUs) merged into a running `[c, k]`
  best (`_tile_top_k`, which prunes the tile by group minima before
  `lax.top_k`). Peak memory is O(chunk_size^2 + N * D) (a 64 MiB tile at
  4096), not O(N^2) nor O(chunk_size * N). Time O(N^2 D), or about
  O(N^2 D / C) with `labels`, since rows are grouped by class and only
  same-class tiles are scanned. The k distances found are recomputed as
  `sum((x_i - x_j)^2)`; the choice among near-ties (relative gap ~1e-6)
  may differ from a float64 search, exact ties go to the lower id.

  Args:
    features: float `[N, D]`, finite.
    k: neighbours per node, 1 <= k < N.
    chunk_size: tile side, >= 1; need not divide N.
    labels: optional int `[N]`; if given only same-class neighbours are
      allowed (the D2 reference builds one graph per class). A class with
      fewer than k + 1 members leaves slots with `idx = i`, `dist = inf`.

  Returns:
    `(nbr_idx int32 [N, k], nbr_dist float32 [N, k])`, rows sorted by
    ascending distance, ties to the lower id.

  Raises:
    ValueError: on a bad shape, NaN/inf features, bad k or chunk_size.
  """
  common.check_ndim(features, 2, "features", "[N, D]")
  n = np.shape(features)[0]
  validation.check_int(k, "k")
  if k >= n:
    raise ValueError(f"k={k} is not allowed: it must be < N={n} (self is "
                     "excluded).")
  validation.check_int(chunk_size, "chunk_size")
  common.check_finite(features, "features")
  if labels is None:
    labels = jnp.zeros(n, jnp.int32)
  else:
    common.check_ndim(labels, 1, "labels", "[N]")
    validation.check_same_length(features=features, labels=labels)
    # Relabel to 0..G-1 (G <= N) so bincount has a static bound of N.
    labels = np.unique(np.asarray(labels), return_inverse=True)[1]
  return _knn_core(jnp.asarray(features), jnp.asarray(labels, jnp.int32),
                   k=int(k), chunk_size=int(chunk_size))


def _edge_weights(dist: Array, gamma: float) -> Array:
  """`exp(-gamma * d / mean(d))` over the finite kNN distances; inf -> 0.

  `d` is the squared Euclidean distance (the reference's faiss L2 index
  returns squared distances). Dividing by the mean kNN distance makes gamma
  scale-free: a typical edge has weight exp(-gamma).
  """
  finite = jnp.isfinite(dist)
  total = jnp.sum(jnp.where(finite, dist, 0.0))
  mean = total / jnp.maximum(jnp.sum(finite), 1)
  scale = jnp.where(mean > 0, mean, 1.0)
  return jnp.where(finite, jnp.exp(-gamma * dist / scale), 0.0)


@jax.jit
def _d2_forward_core(scores, idx, dist, gamma):
  s = scores.astype(jnp.float32)
  return s + jnp.sum(_edge_weights(dist, gamma) * s[idx], axis=1)


def d2_forward_scores(difficulty: Array, graph: Graph, *,
                      gamma_forward: float = 1.0) -> Array:
  """D2 forward message passing: `s_i' = s_i + sum_j w_ij s_j`.

  `j` runs over the k nearest neighbours of i and `w_ij = exp(-gamma_forward
  * d_ij / mean(d))` with `d` the squared distance (`_edge_weights`); this
  is the reference's "sum" graph mode. Missing edges (inf) weigh 0.

  Args:
    difficulty: float `[N]` difficulty scores s.
    graph: `(nbr_idx [N, k], nbr_dist [N, k])` from `knn_graph`.
    gamma_forward: >= 0.

  Returns:
    float32 `[N]` updated scores.
  """
  common.check_ndim(difficulty, 1, "difficulty", "[N]")
  common.check_finite(difficulty, "difficulty")
  _check_graph(graph, np.shape(difficulty)[0])
  common.check_number(gamma_forward, "gamma_forward", 0.0, np.inf, hi_open=True)
  idx, dist = graph
  return _d2_forward_core(jnp.asarray(difficulty), jnp.asarray(idx, jnp.int32),
                          jnp.asarray(dist, jnp.float32),
                          jnp.float32(gamma_forward))


def _block_size(n: int, k: int) -> int:
  # Balances the two per-step costs, N / B block maxima and (k + 1) * B
  # entries rescanned; a power of two keeps the compile cache small.
  b = math.sqrt(n / (k + 1))
  return int(max(8, 2 ** round(math.log2(max(b, 1.0)))))


@functools.partial(jax.jit, static_argnames=("num_groups", "block"))
def _d2_greedy_core(scores, groups, quotas, idx, weights, *, num_groups,
                    block):
  n, k = idx.shape
  nb = -(-n // block)
  pad = nb * block - n
  neg_inf = jnp.float32(-jnp.inf)
  groups = jnp.pad(groups.astype(jnp.int32), (0, pad), constant_values=-1)
  # A group that needs nothing is closed from the start; -inf is never picked
  # and stays -inf under finite updates.
  s = jnp.pad(scores.astype(jnp.float32), (0, pad), constant_values=-jnp.inf)
  s = jnp.where((groups >= 0) & (quotas[jnp.maximum(groups, 0)] > 0), s,
                neg_inf)
  base = jnp.arange(nb, dtype=jnp.int32) * block

  def all_blocks(s):
    blocks = s.reshape(nb, block)
    return (jnp.max(blocks, axis=1),
            base + jnp.argmax(blocks, axis=1).astype(jnp.int32))

  bmax, barg = all_blocks(s)
  total = jnp.sum(quotas)

  def body(t, state):
    s, bmax, barg, counts, order = state
    i = barg[jnp.argmax(bmax)]  # First maximal block, its first max: lowest id.
    s_i = s[i]
    nbrs = idx[i]
    s = s.at[nbrs].add(-weights[i] * s_i)
    s = s.at[i].set(neg_inf)
    g = groups[i]
    counts = counts.at[g].add(1)
    order = order.at[t].set(i)

    def close_group(s):
      s = jnp.where(groups == g, neg_inf, s)
      return (s,) + all_blocks(s)

    def touched_blocks(s):
      tb = jnp.concatenate([nbrs, i[None]]) // block
      rows = s.reshape(nb, block)[tb]
      # Duplicate blocks in `tb` write identical values, so order is moot.
      return (s, bmax.at[tb].set(jnp.max(rows, axis=1)),
              barg.at[tb].set(base[tb] + jnp.argmax(rows, axis=1)
                              .astype(jnp.int32)))

    s, bmax, barg = jax.lax.cond(counts[g] >= quotas[g], close_group,
                                 touched_blocks, s)
    return s, bmax, barg, counts, order

  state = (s, bmax, barg, jnp.zeros(num_groups, jnp.int32),
           jnp.full(n, -1, jnp.int32))
  return jax.lax.fori_loop(0, total, body, state)[-1]


def d2_greedy_order(scores: Array,
                    groups: Array,
                    quotas: Array,
                    graph: Graph,
                    *,
                    gamma_reverse: float = 0.1) -> Array:
  """D2 reverse message passing: greedy picks with neighbour down-weighting.

  Repeatedly pick the highest current score among groups whose quota is not
  yet met (ties to the lowest id), then for each neighbour j of the picked i:
  `s_j -= exp(-gamma_reverse * d_ij / mean(d)) * s_i`, with `s_i` the picked
  node's current score (the reference's "weighted" sampling mode, its rule
  from the paper). Picked nodes and nodes of a closed group are set to -inf.

  Exact greedy, faster than an O(N) argmax per step: the scores are held in
  blocks of B ~ sqrt(N / (k + 1)) with cached block maxima; a step takes the
  argmax over N / B maxima and rescans the <= k + 1 blocks it touched, and a
  group that fills its quota is masked once in O(N). Total
  O(budget * sqrt(k N) + G * N) inside one `lax.fori_loop`.

  Args:
    scores: float `[N]` forward scores (`d2_forward_scores`), finite.
    groups: int `[N]` group (class) ids in `[0, G)`.
    quotas: int `[G]` picks per group, each <= the group size.
    graph: `(nbr_idx [N, k], nbr_dist [N, k])` from `knn_graph`.
    gamma_reverse: >= 0.

  Returns:
    int32 `[N]`: the picked ids in pick order, then -1 (`sum(quotas)` picks).
  """
  common.check_ndim(scores, 1, "scores", "[N]")
  common.check_finite(scores, "scores")
  n = np.shape(scores)[0]
  _check_graph(graph, n)
  common.check_number(gamma_reverse, "gamma_reverse", 0.0, np.inf, hi_open=True)
  quotas = np.asarray(quotas, np.int64)
  validation.check_labels(groups, quotas.shape[0])
  validation.check_same_length(scores=scores, groups=groups)
  sizes = np.bincount(np.asarray(groups), minlength=quotas.shape[0])
  if np.any(quotas < 0) or np.any(quotas > sizes):
    raise ValueError(f"quotas={quotas.tolist()} is not allowed: each must be "
                     f"in [0, group size] (sizes {sizes.tolist()}).")
  idx, dist = graph
  k = np.shape(idx)[1]
  weights = _edge_weights(jnp.asarray(dist, jnp.float32),
                          jnp.float32(gamma_reverse))
  return _d2_greedy_core(jnp.asarray(scores), jnp.asarray(groups),
                         jnp.asarray(quotas, jnp.int32),
                         jnp.asarray(idx, jnp.int32), weights,
                         num_groups=int(quotas.shape[0]),
                         block=_block_size(n, k))


def d2_select(features: Array,
              difficulty: Array,
              labels: Array,
              ratio: float,
              *,
              num_classes: int,
              class_balanced: bool = True,
              k: int = 10,
              gamma_forward: float = 1.0,
              gamma_reverse: float = 0.1,
              chunk_size: int = 4096,
              graph: Optional[Graph] = None) -> Array:
  """D2-pruning (Maharana et al. 2024): message passing, then greedy picks.

  1. kNN graph on `features` (`knn_graph`, exact, squared Euclidean). With
     `class_balanced` the graph is within-class (`labels=labels`), as the
     reference builds one graph per class; otherwise over all examples.
  2. Forward message passing (`d2_forward_scores`).
  3. Greedy selection with reverse message passing (`d2_greedy_order`),
     within each class's quota, or up to the global budget.
  Defaults follow the reference's CIFAR recipe (forward `exp(-d)`, reverse
  gamma 0.1), on mean-normalised distances; its extra hard-example pruning
  and score stratification are not applied here. The graph depends only on
  the features (and labels), so compute it once with
  `knn_graph(features, k, chunk_size, labels if class_balanced else None)`
  and pass it as `graph` for every ratio.

  Args:
    features: float `[N, D]` (may be None when `graph` is given).
    difficulty: float `[N]` difficulty scores, higher = harder.
    labels: int `[N]` in `[0, num_classes)`.
    ratio: fraction to keep, in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas (default) or one global budget.
    k: neighbours per node (ignored when `graph` is given).
    gamma_forward: forward edge-weight decay, >= 0.
    gamma_reverse: reverse edge-weight decay, >= 0.
    chunk_size: tile side for `knn_graph`.
    graph: optional precomputed `(nbr_idx [N, k], nbr_dist [N, k])`.

  Returns:
    bool `[N]` mask with exactly the per-class quotas (or the global budget).

  Raises:
    ValueError: on bad shapes, NaN, ratio, k, gammas or graph.
  """
  common.check_ndim(difficulty, 1, "difficulty", "[N]")
  common.check_ratio_labels(labels, ratio, num_classes, difficulty=difficulty)
  common.check_finite(difficulty, "difficulty")
  common.check_number(gamma_forward, "gamma_forward", 0.0, np.inf, hi_open=True)
  common.check_number(gamma_reverse, "gamma_reverse", 0.0, np.inf, hi_open=True)
  n = np.shape(difficulty)[0]
  if graph is None:
    if features is None:
      raise ValueError("features=None is not allowed without a precomputed "
                       "graph.")
    validation.check_same_length(features=features, difficulty=difficulty)
    graph = knn_graph(features, k, chunk_size,
                      labels if class_balanced else None)
  _check_graph(graph, n)
  groups, quotas, _ = common.group_quotas(
      np.asarray(labels, np.int64), num_classes, ratio, class_balanced)
  forward = d2_forward_scores(difficulty, graph, gamma_forward=gamma_forward)
  order = d2_greedy_order(forward, groups, quotas, graph,
                          gamma_reverse=gamma_reverse)
  picked = order[:int(quotas.sum())]
  return jnp.zeros(n, jnp.bool_).at[picked].set(True)


def _select(art, labels, ratio, *, num_classes, opts, cache):
  scores = difficulty_lib.difficulty(opts.d2_score, art, opts)
  cb = opts.class_balanced
  # The graph depends on the features, k and the class split only: it is
  # built once for every ratio.
  cache = {} if cache is None else cache
  key = ("d2_graph", opts.d2_k, cb)
  if key not in cache:
    cache[key] = knn_graph(art["features"], k=opts.d2_k,
                           labels=labels if cb else None)
  mask = d2_select(
      None, scores, labels, ratio, num_classes=num_classes,
      class_balanced=cb, k=opts.d2_k, gamma_forward=opts.d2_gamma,
      gamma_reverse=opts.d2_gamma_reverse, graph=cache[key])
  # The scores are the difficulty input.
  return np.asarray(scores, np.float32), np.asarray(mask)


METHOD = common.Method(
    "d2", frozenset({"features", "trajectory"}),
    ("class_balanced", "d2_score", "d2_k", "d2_gamma", "d2_gamma_reverse")
    + difficulty_lib.OPTIONS, _select,
    "kNN message passing on difficulty, greedy reverse passing")
