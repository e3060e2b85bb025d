"""D2-pruning (Maharana et al. 2024): message passing on a kNN graph.

A selection procedure on difficulty scores (`difficulty.difficulty`, by
`d2_score`): an exact kNN graph on the features (`knn_graph`) made
undirected (`undirected_graph`), forward message passing
(`d2_forward_scores`), then greedy picks with reverse message passing
(`d2_greedy_order`). The mask keeps exactly the per-class quotas
(`selection.class_quotas`) when `class_balanced`, or the global budget
`selection.budget(ratio, N)`.

The registry row follows the reference code (adymaharana/d2pruning,
`core/data/sampling.py:GraphDensitySampler`, `core/data/Coreset.py:
density_sampling`, `selection_mp.py`) in its CIFAR recipe (README:
`--coreset-mode class --sampling-mode graph --graph-mode sum
--graph-sampling-mode weighted --n-neighbor 5 --gamma 0.1 --mis-ratio 0.4
--coreset-key forgetting`). What matches:
- The pre-step (`mislabel_mask`): drop the hardest `int(mis_ratio * N)`
  of the whole training set (`drop_hardest`; `d2_mis_per_class=True` cuts
  each class instead, our option). The kept examples are then ordered
  hardest first, the reference's order, so that equal scores in the greedy
  go to the same example as its first-maximum `argmax`.
- Per class, a kNN graph (k = `d2_k`, default 5 as the recipe) on the kept
  examples' features, made undirected; forward `s_i + sum_j exp(-d_ij)
  max(s_j, 1e-7)` (`d2_forward_scores`); greedy picks with `s_j -=
  exp(-0.1 d_ij) s_i` over the picked node's neighbours
  (`d2_greedy_order`).
- The forgetting score counts never-learned examples as 0 events, as the
  reference's score file does.
- The pre-step's key: the accumulated probability margin (`d2.cut=
  aum_prob`, the reference's default `--mis-key accumulated_margin`; the
  mean over the warm-up epochs ranks as its sum); `d2.cut=p_true` is the
  library's earlier stand-in, the mean true-class probability.
- The per-class budget: `int(ratio * N)` split equally over the classes
  left after the cut (`equal_split`, the reference's uniform
  `bin_allocate`): a class the cut left below its share gives the rest to
  the others. `d2.split=proportional` keeps the project's quotas (each
  class about `ratio` of its examples) and a cut that never leaves a class
  below its quota (the library's earlier rule).
What departs:
- The recipe cuts 0.4 at ratio 0.1; our default `d2_mis_ratio` is 0.1, at
  every ratio (the recipe states no other ratio's cut).
- The kNN graph: exact, in float32 (ties to the lower id), where the
  reference calls scikit-learn; the message passing is in float64, as
  there.
`reference_check.d2_reference_mask` is a NumPy port of the recipe; the
masks are compared in docs/results/reference_check.md.
"""

import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import difficulty as difficulty_lib
from mrmc_jax.methods import scores as scores_lib

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


def undirected_graph(graph: Graph) -> Graph:
  """The kNN graph made undirected: j is a neighbour of i if either lists it.

  The reference (`GraphDensitySampler.compute_graph_density`) writes each
  kNN edge into a dense matrix in both directions, so an edge listed by
  both ends counts once. Here the union of both directions is deduplicated
  and each row padded to the largest degree with `(idx = i, dist = inf)`
  (a missing edge). Rows are sorted by distance, ties to the lower id.

  Args:
    graph: `(nbr_idx [N, k], nbr_dist [N, k])` from `knn_graph`.

  Returns:
    `(nbr_idx int32 [N, K], nbr_dist float32 [N, K])` with K >= k the
    largest undirected degree.
  """
  idx, dist = (np.asarray(a) for a in graph)
  _check_graph((idx, dist), idx.shape[0])
  n, k = idx.shape
  rows = np.repeat(np.arange(n), k)
  cols = idx.reshape(-1)
  d = dist.reshape(-1).astype(np.float32)
  real = np.isfinite(d) & (rows != cols)
  src = np.concatenate([rows[real], cols[real]])
  dst = np.concatenate([cols[real], rows[real]])
  dd = np.concatenate([d[real], d[real]])
  # Deduplicate (src, dst) pairs; both directions carry the same distance.
  order = np.lexsort((dst, src))
  src, dst, dd = src[order], dst[order], dd[order]
  first = np.ones(src.size, bool)
  first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
  src, dst, dd = src[first], dst[first], dd[first]
  order = np.lexsort((dst, dd, src))
  src, dst, dd = src[order], dst[order], dd[order]
  deg = np.bincount(src, minlength=n)
  width = max(int(deg.max()) if deg.size else 0, 1)
  starts = np.cumsum(deg) - deg
  slot = np.arange(src.size) - starts[src]
  out_i = np.repeat(np.arange(n, dtype=np.int32)[:, None], width, axis=1)
  out_d = np.full((n, width), np.inf, np.float32)
  out_i[src, slot] = dst
  out_d[src, slot] = dd
  return out_i, out_d


def _edge_weights(dist: Array, gamma: float) -> Array:
  """`exp(-gamma * sqrt(d))` over the finite kNN distances; inf -> 0.

  `d` is the squared Euclidean distance of `knn_graph`; the weight uses the
  plain Euclidean distance, as the reference's CIFAR recipe
  (`sklearn.pairwise_distances`, not normalised).
  """
  finite = jnp.isfinite(dist)
  euclid = jnp.sqrt(jnp.where(finite, dist, 0.0))
  return jnp.where(finite, jnp.exp(-gamma * euclid), 0.0)


# The reference's floor on a neighbour's score in the forward pass
# (`max(importance_scores[j], epsilon)`, epsilon = 1e-7).
SCORE_FLOOR = 1e-7


@jax.jit
def _d2_forward_core(scores, idx, dist, gamma, floor):
  # float64 (called under enable_x64): the reference's arithmetic. In
  # float32, an integer score plus its neighbours' small terms rounds to
  # ties that the greedy then breaks differently.
  s = scores.astype(jnp.float64)
  w = _edge_weights(dist.astype(jnp.float64), gamma)
  return s + jnp.sum(w * jnp.maximum(s[idx], floor), axis=1)


def d2_forward_scores(difficulty: Array, graph: Graph, *,
                      gamma_forward: float = 1.0,
                      score_floor: float = SCORE_FLOOR) -> Array:
  """D2 forward message passing: `s_i' = s_i + sum_j w_ij max(s_j, floor)`.

  `j` runs over the neighbours of i in `graph` and `w_ij = exp(-gamma_forward
  * ||x_i - x_j||)` (`_edge_weights`); this is the reference's "sum" graph
  mode, whose forward weight is `exp(-distance)` (gamma_forward = 1) and
  whose neighbour scores are floored at 1e-7, so that examples whose
  neighbours all score 0 are still ordered by how dense their
  neighbourhood is (the own term `s_i` is not floored, as there). Missing
  edges (inf) weigh 0. `d2_select` passes the undirected graph.

  Args:
    difficulty: float `[N]` difficulty scores s.
    graph: `(nbr_idx [N, k], nbr_dist [N, k])` from `knn_graph`.
    gamma_forward: >= 0.
    score_floor: >= 0, the floor on the neighbours' scores (0: none).

  Returns:
    float64 `[N]` updated scores (computed in float64, as the reference).
  """
  common.check_ndim(difficulty, 1, "difficulty", "[N]")
  common.check_finite(difficulty, "difficulty")
  _check_graph(graph, np.shape(difficulty)[0])
  common.check_number(gamma_forward, "gamma_forward", 0.0, np.inf, hi_open=True)
  common.check_number(score_floor, "score_floor", 0.0, np.inf, hi_open=True)
  idx, dist = graph
  with jax.enable_x64(True):
    return np.asarray(_d2_forward_core(
        jnp.asarray(np.asarray(difficulty, np.float64)),
        jnp.asarray(idx, jnp.int32), jnp.asarray(dist, jnp.float32),
        jnp.float64(gamma_forward), jnp.float64(score_floor)))


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
  neg_inf = jnp.asarray(-jnp.inf, scores.dtype)
  groups = jnp.pad(groups.astype(jnp.int32), (0, pad), constant_values=-1)
  # A group that needs nothing is closed from the start; -inf is never picked
  # and stays -inf under finite updates.
  s = jnp.pad(scores, (0, pad), constant_values=-jnp.inf)
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
  `s_j -= exp(-gamma_reverse * ||x_i - x_j||) * s_i`, with `s_i` the picked
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
  # In float64, as the reference (see _d2_forward_core).
  with jax.enable_x64(True):
    weights = _edge_weights(jnp.asarray(dist, jnp.float32).astype(jnp.float64),
                            jnp.float64(gamma_reverse))
    order = _d2_greedy_core(
        jnp.asarray(np.asarray(scores, np.float64)),
        jnp.asarray(np.asarray(groups), jnp.int32),
        jnp.asarray(quotas, jnp.int32), jnp.asarray(idx, jnp.int32), weights,
        num_groups=int(quotas.shape[0]), block=_block_size(n, k))
    return np.asarray(order, np.int32)


def d2_select(features: Array,
              difficulty: Array,
              labels: Array,
              ratio: float,
              *,
              num_classes: int,
              class_balanced: bool = True,
              k: int = 5,
              gamma_forward: float = 1.0,
              gamma_reverse: float = 0.1,
              chunk_size: int = 4096,
              graph: Optional[Graph] = None,
              quotas: Optional[np.ndarray] = None) -> Array:
  """D2-pruning (Maharana et al. 2024): message passing, then greedy picks.

  1. kNN graph on `features` (`knn_graph`, exact), made undirected
     (`undirected_graph`). With `class_balanced` the graph is within-class
     (`labels=labels`), as the reference builds one graph per class;
     otherwise over all examples.
  2. Forward message passing (`d2_forward_scores`).
  3. Greedy selection with reverse message passing (`d2_greedy_order`),
     within each class's quota, or up to the global budget.
  Defaults follow the reference's CIFAR recipe (k = 5, forward `exp(-d)`
  with neighbour scores floored at 1e-7, reverse gamma 0.1, d the
  Euclidean distance); its hard-example pre-step is the registry row's
  (module docstring). The graph depends only on
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
    quotas: optional int `[C]` (or `[1]` without `class_balanced`) in place
      of the ratio's quotas, e.g. those of a larger set this one was cut
      from; each at most its group's size here.

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
  graph = undirected_graph(graph)
  groups, ratio_quotas, _ = common.group_quotas(
      np.asarray(labels, np.int64), num_classes, ratio, class_balanced)
  quotas = ratio_quotas if quotas is None else np.asarray(quotas, np.int64)
  forward = d2_forward_scores(difficulty, graph, gamma_forward=gamma_forward)
  order = d2_greedy_order(forward, groups, quotas, graph,
                          gamma_reverse=gamma_reverse)
  picked = order[:int(quotas.sum())]
  return jnp.zeros(n, jnp.bool_).at[picked].set(True)


def drop_hardest(hardness: Array, labels: Array, ratio: float, *,
                 num_classes: int, class_balanced: bool,
                 mis_ratio: float, seed: int,
                 per_class: bool = False) -> np.ndarray:
  """The reference's pre-step: drop the hardest `mis_ratio` of the set.

  The reference (`mislabel_mask`) drops the `int(mis_ratio * N)` hardest
  examples of the whole training set; with `per_class` the hardest
  `floor(mis_ratio * n_c)` of each class instead. Ties are in a seeded
  random order. Unlike the reference, the cut never leaves a quota group
  (a class with `class_balanced`, else the whole set) with fewer examples
  than its quota: such a group keeps its easiest, and fewer are dropped.

  Args:
    hardness: float `[N]`, higher = harder.
    labels: int `[N]`.
    ratio: the kept fraction in (0, 1] (for the quotas).
    num_classes: C.
    class_balanced: quotas per class, or one global budget.
    mis_ratio: in [0, 1).
    seed: int >= 0.
    per_class: cut each class (True) or the whole set (False, the
      reference).

  Returns:
    bool `[N]`: True for the examples that stay.
  """
  common.check_ndim(hardness, 1, "hardness", "[N]")
  common.check_ratio_labels(labels, ratio, num_classes, hardness=hardness)
  common.check_finite(hardness, "hardness")
  common.check_number(mis_ratio, "mis_ratio", 0.0, 1.0, hi_open=True)
  validation.check_seed(seed)
  labels = np.asarray(labels, np.int64)
  h = np.asarray(hardness, np.float64)
  cut_groups = labels if per_class else np.zeros_like(labels)
  cut_sizes = np.bincount(cut_groups)
  n_cut = np.floor(mis_ratio * cut_sizes + 1e-9).astype(np.int64)
  pos = common.within_group_position(h, cut_groups, seed)
  candidate = pos >= cut_sizes[cut_groups] - n_cut[cut_groups]
  # The quota guard: in each quota group drop only its hardest candidates,
  # at most (size - quota) of them.
  groups, quotas, num_groups = common.group_quotas(
      labels, num_classes, ratio, class_balanced)
  sizes = np.bincount(groups, minlength=num_groups)
  n_drop = np.minimum(np.bincount(groups[candidate], minlength=num_groups),
                      sizes - quotas)
  pos = common.within_group_position(np.where(candidate, h, -np.inf), groups,
                                     seed)
  return ~(candidate & (pos >= sizes[groups] - n_drop[groups]))


def equal_split(budget: int, sizes: np.ndarray) -> np.ndarray:
  """D2's `bin_allocate(budget, sizes, mode='uniform')`: int64 `[C]`.

  The classes from the smallest up each take `min(size, rest // classes
  left)`, so a class smaller than its equal share gives the rest to the
  larger ones; a budget left by the integer division goes, one each, to
  the largest classes with room (ties in size: the higher class id
  first, the reference's stable order read from the end).

  Args:
    budget: int >= 0, at most `sizes.sum()`.
    sizes: int `[C]` class sizes (0 for a class left empty).

  Returns:
    int64 `[C]` quotas summing to `budget`, each <= its size.
  """
  sizes = np.asarray(sizes, np.int64)
  if budget < 0 or budget > sizes.sum():
    raise ValueError(f"budget={budget} is not allowed: it must be in "
                     f"[0, {int(sizes.sum())}], the examples left.")
  order = np.argsort(sizes, kind="stable")
  rest = int(budget)
  out = np.zeros_like(sizes)
  nonempty = int((sizes > 0).sum())
  for c in order:
    if sizes[c] == 0:
      continue
    out[c] = min(int(sizes[c]), rest // nonempty)
    rest -= int(out[c])
    nonempty -= 1
  for c in order[::-1]:
    if rest == 0:
      break
    if out[c] < sizes[c]:
      out[c] += 1
      rest -= 1
  return out


def _select(art, labels, ratio, *, num_classes, opts, cache):
  traj = common.trajectory_view(art, opts)
  if opts.d2_score == "forgetting":
    # The reference's forgetting score: never-learned examples have 0 events.
    scores = np.asarray(scores_lib.forgetting_scores(
        traj["correct"], never_learned_first=False))
  else:
    scores = difficulty_lib.difficulty(opts.d2_score, art, opts)
  cb = opts.class_balanced
  equal = cb and opts.d2_split == "equal"
  labels = np.asarray(labels)
  if opts.d2_cut == "p_true":
    # The earlier stand-in for the reference's AUM: the mean p_true.
    easiness = np.asarray(traj["p_true"], np.float64).mean(axis=1)
  else:  # The reference's accumulated margin (difficulty is its negation).
    easiness = -np.asarray(difficulty_lib.difficulty(opts.d2_cut, art, opts),
                           np.float64)
  # The equal split cuts over all N with no per-class guard (its quotas
  # come from the classes left), like the reference.
  keep = drop_hardest(-easiness, labels, ratio, num_classes=num_classes,
                      class_balanced=cb and not equal,
                      mis_ratio=opts.d2_mis_ratio, seed=opts.seed,
                      per_class=opts.d2_mis_per_class)
  # The kept examples in the reference's order, hardest first (ties in a
  # seeded order): the greedy's ties go to the first in this order.
  kept = np.flatnonzero(keep)
  order = common.within_group_position(-easiness[kept],
                                       np.zeros(kept.size, np.int64),
                                       opts.seed)
  kept = kept[np.argsort(-order, kind="stable")]
  # The graph depends on the features, k, the class split and the examples
  # left by the pre-step (in this order) only: built once for every ratio
  # that keeps them.
  cache = {} if cache is None else cache
  key = ("d2_graph", opts.d2_k, cb, hash(kept.tobytes()))
  if key not in cache:
    cache[key] = knn_graph(art["features"][kept], k=opts.d2_k,
                           labels=labels[kept] if cb else None)
  # The quotas: the reference's equal split of the budget over the classes
  # left, or those of all N examples (`d2.split=proportional`), filled from
  # the ones left.
  if equal:
    quotas = equal_split(selection.budget(ratio, labels.shape[0]),
                         np.bincount(labels[kept], minlength=num_classes))
  else:
    quotas = common.group_quotas(labels, num_classes, ratio, cb)[1]
  sub = d2_select(
      None, scores[kept], labels[kept], ratio, num_classes=num_classes,
      class_balanced=cb, k=opts.d2_k, gamma_forward=opts.d2_gamma,
      gamma_reverse=opts.d2_gamma_reverse, graph=cache[key], quotas=quotas)
  mask = np.zeros(labels.shape[0], bool)
  mask[kept[np.asarray(sub)]] = True
  # The scores are the difficulty input.
  return np.asarray(scores, np.float32), mask


OPTIONS = common.declare(
    common.Option("k", int, 5, "D2: neighbours of the kNN graph (the "
                  "reference recipe's 5)", low=1, legacy="d2_k"),
    common.Option("gamma", float, 1.0, "D2: forward message-passing "
                  "weight", low=0.0, legacy="d2_gamma"),
    common.Option("gamma_reverse", float, 0.1, "D2: reverse "
                  "message-passing weight", low=0.0,
                  legacy="d2_gamma_reverse"),
    # Not "score": that is MRMC's option, which the difficulty reads.
    common.Option("difficulty", str, "forgetting", "D2: the difficulty "
                  "input", choices=difficulty_lib.DIFFICULTY_SCORES,
                  legacy="d2_score"),
    common.Option("mis_ratio", float, 0.1, "D2: fraction of the hardest "
                  "(lowest mean p_true) dropped first", low=0.0, high=1.0,
                  high_open=True, legacy="d2_mis_ratio"),
    common.Option("mis_per_class", bool, False, "D2: cut the hardest per "
                  "class instead of over the whole set (the reference)",
                  legacy="d2_mis_per_class"),
    # The variants of the reference's rule (added in 0.3.0).
    common.Option("split", str, "equal", "D2: the budget over the "
                  "classes left by the cut: equal shares, a small class's "
                  "rest to the others (the reference's bin_allocate), or "
                  "each class's quota of all N (proportional)",
                  choices=("equal", "proportional"), absent="proportional",
                  legacy="d2_split"),
    common.Option("cut", str, "aum_prob", "D2: the key of the cut, "
                  "lowest first: the accumulated probability margin (the "
                  "reference's mis_key) or the mean p_true (p_true)",
                  choices=("aum_prob", "aum", "p_true"), absent="p_true",
                  legacy="d2_cut"),
    scope="d2")

METHOD = common.Method(
    "d2", frozenset({"features", "trajectory"}),
    common.COMMON + OPTIONS + difficulty_lib.OPTIONS, _select,
    "kNN message passing on difficulty, greedy reverse passing",
    extra_needs=lambda o: (difficulty_lib.needs(o.d2_score) |
                           difficulty_lib.needs(o.d2_cut)))
