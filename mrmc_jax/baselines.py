"""Peer core-set methods: scores for `select_mask`, or selection procedures.

Score methods return float32 `[N]`, higher = keep; the shared
`selection.select_mask` then applies the per-class quotas (or the global
budget) with ties to the lower id. Selection procedures (CCS, D2-pruning)
return a bool `[N]` mask that keeps exactly the same per-class quotas
(`selection.class_quotas`) when `class_balanced`, or the global budget
`selection.budget(ratio, N)` otherwise.

| method     | kind   | needs                    | paper                       |
|------------|--------|--------------------------|-----------------------------|
| random     | score  | -                        | uniform                     |
| el2n       | score  | trajectory               | Paul et al. 2021            |
| grand      | score  | grad_norms               | Paul et al. 2021            |
| forgetting | score  | trajectory               | Toneva et al. 2019          |
| dyn_unc    | score  | trajectory               | He et al. 2023              |
| moderate   | score  | features                 | Xia et al. 2023             |
| ccs        | select | trajectory (difficulty)  | Zheng et al. 2023           |
| d2         | select | features, trajectory     | Maharana et al. 2024        |

Each function documents where it follows, or departs from, its paper.
"""

import dataclasses
import functools
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import selection
from mrmc_jax import validation

Array = jax.Array
Graph = tuple[Array, Array]

_EPS = 1e-9


# ----------------------------------------------------------------------------
# Input checks (one-line ValueErrors, as in `validation`).
# ----------------------------------------------------------------------------


def _check_ndim(x: Any, ndim: int, name: str, shape_doc: str) -> None:
  if np.ndim(x) != ndim:
    raise ValueError(f"{name} has shape {np.shape(x)}; expected a {ndim}-D "
                     f"{shape_doc} array.")


def _check_finite(x: Any, name: str, allow_inf: bool = False) -> None:
  """Rejects NaN (and +-inf unless `allow_inf`) in a concrete array."""
  if not validation.is_concrete(x):
    return
  a = np.asarray(x, dtype=np.float64)
  bad = np.isnan(a) if allow_inf else ~np.isfinite(a)
  if bad.any():
    what = "NaN" if allow_inf else "NaN or infinite"
    first = np.unravel_index(int(np.argmax(bad)), a.shape)
    raise ValueError(f"{name} holds {int(bad.sum())} {what} values (first at "
                     f"index {tuple(int(i) for i in first)}); they must be "
                     "finite.")


def _check_number(value: Any, name: str, lo: float, hi: float,
                  lo_open: bool = False, hi_open: bool = False) -> None:
  """Checks lo <(=) value <(=) hi for a finite real scalar."""
  ok = (isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool) and np.isfinite(value))
  if ok:
    v = float(value)
    ok = ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi))
  if not ok:
    interval = (("(" if lo_open else "[") + f"{lo}, {hi}"
                + (")" if hi_open else "]"))
    raise ValueError(f"{name}={value!r} is not allowed: it must be a number "
                     f"in {interval}.")


def _check_seed(seed: Any) -> None:
  if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
      or seed < 0):
    raise ValueError(f"seed={seed!r} is not allowed: it must be an int >= 0.")


def _check_bool_matrix(x: Any, name: str) -> None:
  """Checks a `[N, R]` matrix of bools (or 0/1 ints), R >= 1."""
  _check_ndim(x, 2, name, "[N, R]")
  if np.shape(x)[1] < 1:
    raise ValueError(f"{name} has shape {np.shape(x)}; it needs at least one "
                     "epoch column (R >= 1).")
  if validation.is_concrete(x):
    a = np.asarray(x)
    if a.dtype != np.bool_ and not np.isin(a, (0, 1)).all():
      raise ValueError(f"{name} holds values other than 0/1 (dtype "
                       f"{a.dtype}); it must be boolean.")


def _check_graph(graph: Any, n: int) -> None:
  """Checks `(idx int [N, k], dist float [N, k])` from `knn_graph`."""
  if not isinstance(graph, (tuple, list)) or len(graph) != 2:
    raise ValueError(f"graph={type(graph).__name__} is not allowed: it must "
                     "be the pair (nbr_idx [N, k], nbr_dist [N, k]) from "
                     "knn_graph.")
  idx, dist = graph
  _check_ndim(idx, 2, "graph nbr_idx", "[N, k]")
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


def _check_ratio_labels(labels: Any, ratio: float, num_classes: int,
                        **same_length: Any) -> None:
  validation.check_ratio(ratio)
  validation.check_labels(labels, num_classes)
  validation.check_same_length(labels=labels, **same_length)


def _quotas(labels: np.ndarray, num_classes: int, ratio: float,
            class_balanced: bool) -> tuple[np.ndarray, np.ndarray, int]:
  """Returns (group labels [N], quotas [G], G): classes, or one global group."""
  if class_balanced:
    return (labels, selection.class_quotas(labels, num_classes, ratio),
            num_classes)
  n = labels.shape[0]
  return (np.zeros(n, np.int64),
          np.array([selection.budget(ratio, n)], np.int64), 1)


# ----------------------------------------------------------------------------
# Score methods.
# ----------------------------------------------------------------------------


def random_scores(num_examples: int, seed: int) -> Array:
  """Uniform random scores; with class quotas this is stratified random.

  Args:
    num_examples: N.
    seed: int >= 0, the `jax.random.key` seed.

  Returns:
    float32 `[N]` i.i.d. uniform in [0, 1).
  """
  validation.check_positive_int(num_examples, "num_examples")
  _check_seed(seed)
  return jax.random.uniform(jax.random.key(seed), (num_examples,),
                            jnp.float32)


def el2n_scores(el2n_traj: Array,
                epochs: Optional[Sequence[int]] = None) -> Array:
  """EL2N: mean of the per-epoch EL2N over the chosen epochs; keep highest.

  Paul et al. (2021) average `||softmax(f(x)) - onehot(y)||_2` over several
  seeds at one early epoch; with one warm-up run we average over the chosen
  warm-up epochs of the trajectory instead (default: all R recorded epochs).

  Args:
    el2n_traj: float `[N, R]`, `trajectory["el2n"]`.
    epochs: optional epoch columns in `[0, R)` (non-empty); default all.

  Returns:
    float32 `[N]` mean EL2N.

  Raises:
    ValueError: on a bad shape, NaN, or epochs outside [0, R).
  """
  _check_ndim(el2n_traj, 2, "el2n_traj", "[N, R]")
  r = np.shape(el2n_traj)[1]
  if epochs is None:
    epochs = range(r)
  epochs = [int(e) for e in epochs]
  if not epochs or min(epochs) < 0 or max(epochs) >= r:
    raise ValueError(f"epochs={epochs!r} is not allowed: it must be a "
                     f"non-empty list of epoch columns in [0, {r}).")
  _check_finite(el2n_traj, "el2n_traj")
  cols = jnp.asarray(el2n_traj, jnp.float32)[:, jnp.asarray(epochs)]
  return jnp.mean(cols, axis=1)


def grand_scores(grad_norms: Array) -> Array:
  """GraNd: the per-example gradient norm, validated; keep highest.

  The norms come from `losses.per_example_grad_norms` (eval-mode model, loss
  gradient w.r.t. the parameters) at the end of warm-up. Paul et al. (2021)
  average them over several initialisations at an early epoch; we use the
  single warm-up checkpoint.

  Args:
    grad_norms: float `[N]`, >= 0.

  Returns:
    float32 `[N]`, the same values.

  Raises:
    ValueError: on a bad shape, NaN/inf or negative norms.
  """
  _check_ndim(grad_norms, 1, "grad_norms", "[N]")
  _check_finite(grad_norms, "grad_norms")
  if validation.is_concrete(grad_norms) and np.any(np.asarray(grad_norms) < 0):
    raise ValueError("grad_norms holds negative values; norms must be >= 0.")
  return jnp.asarray(grad_norms, jnp.float32)


@jax.jit
def _forgetting_core(correct):
  correct = correct.astype(jnp.bool_)
  events = jnp.sum(correct[:, :-1] & ~correct[:, 1:], axis=1)
  learned = jnp.any(correct, axis=1)
  # Never-learned examples rank above every learned one (Toneva et al. treat
  # them as forgotten infinitely often); max + 1 keeps the score finite.
  return jnp.where(learned, events, jnp.max(events) + 1).astype(jnp.float32)


def forgetting_scores(correct: Array) -> Array:
  """Forgetting events (Toneva et al. 2019); keep the most forgotten.

  A forgetting event is a correct -> incorrect transition between
  consecutive recorded epochs (the paper counts over minibatch presentations;
  the trajectory holds one presentation per epoch). Examples that are never
  correct get `max(events) + 1`, so they rank as the most forgotten and are
  kept first. Counts are integers, so ties are common; `select_mask` breaks
  them towards the lower example id.

  Args:
    correct: bool `[N, R]`, `trajectory["correct"]`.

  Returns:
    float32 `[N]` forgetting counts.

  Raises:
    ValueError: on a bad shape or non-boolean values.
  """
  _check_bool_matrix(correct, "correct")
  return _forgetting_core(jnp.asarray(correct))


@functools.partial(jax.jit, static_argnames=("window",))
def _dyn_unc_core(p_true, window):
  r = p_true.shape[1]
  w = min(window, r)
  nw = r - w + 1
  p = p_true.astype(jnp.float32)
  # Column j of the shifted slice p[:, o:o + nw] is epoch j + o, so summing
  # over offsets o gives every window at once with O(N * R) memory; the
  # two-pass variance avoids the cancellation of E[p^2] - E[p]^2.
  mean = sum(p[:, o:o + nw] for o in range(w)) / w
  var = sum((p[:, o:o + nw] - mean) ** 2 for o in range(w)) / w
  return jnp.mean(jnp.sqrt(var), axis=1)


def dyn_unc_scores(p_true: Array, window: int = 10) -> Array:
  """Dynamic Uncertainty (He et al. 2023); keep highest.

  For each of the `R - window + 1` sliding windows of consecutive epochs,
  the population standard deviation (divide by `window`, as in the paper's
  formula) of the true-class probability; the score is the mean over
  windows. If `R < window` there is a single window of all R epochs. The
  paper's J = 10 is the default window.

  Args:
    p_true: float `[N, R]`, `trajectory["p_true"]`, R >= 2.
    window: window length, >= 2.

  Returns:
    float32 `[N]` dynamic uncertainty.

  Raises:
    ValueError: on a bad shape, R < 2, NaN or window < 2.
  """
  _check_ndim(p_true, 2, "p_true", "[N, R]")
  validation.check_positive_int(window, "window", minimum=2)
  if np.shape(p_true)[1] < 2:
    raise ValueError(f"p_true has shape {np.shape(p_true)}; Dyn-Unc needs at "
                     "least 2 epochs (R >= 2).")
  _check_finite(p_true, "p_true")
  return _dyn_unc_core(jnp.asarray(p_true), window=int(window))


def _group_median(values: Array, labels: Array, num_groups: int) -> Array:
  """Per-group median of each column: `[N, D]` -> `[G, D]` (jit-able).

  Each entry becomes one uint64 key `label << 32 | sortable_bits(value)`;
  one sort per column then lays each group's values out as a contiguous
  sorted run, and the median is the mean of the run's two middle entries
  (numpy's convention for even sizes). A single integer key sorts ~10x
  faster on CPU than a float or two-key sort, and needs O(N * D) memory
  (masking per group would need O(G * N * D)). Empty groups get a
  meaningless row that no example refers to. Call under `enable_x64`.
  """
  n = values.shape[0]
  bits = selection.sortable_u32(values.T)                      # [D, N]
  keys = (labels.astype(jnp.uint64)[None, :] << 32) | bits.astype(jnp.uint64)
  keys = jnp.sort(keys, axis=1)
  sizes = jnp.bincount(labels, length=num_groups)
  starts = jnp.cumsum(sizes) - sizes
  lo = jnp.clip(starts + (sizes - 1) // 2, 0, n - 1)
  hi = jnp.clip(starts + sizes // 2, 0, n - 1)

  def decode(k):  # Inverse of `selection.sortable_u32` on the low 32 bits.
    u = (k & jnp.uint64(0xFFFFFFFF)).astype(jnp.uint32)
    u = jnp.where((u >> 31) == 1, u ^ jnp.uint32(1 << 31), ~u)
    return jax.lax.bitcast_convert_type(u, jnp.float32)

  return (0.5 * (decode(keys[:, lo]) + decode(keys[:, hi]))).T


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _moderate_core(features, labels, num_classes):
  features = features.astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  centre = _group_median(features, labels, num_classes)        # [C, D]
  dist = jnp.linalg.norm(features - centre[labels], axis=1)    # [N]
  med_dist = _group_median(dist[:, None], labels, num_classes)[:, 0]
  return -jnp.abs(dist - med_dist[labels]).astype(jnp.float32)


def moderate_scores(features: Array, labels: Array, *,
                    num_classes: int) -> Array:
  """Moderate-DS (Xia et al. 2023): closeness to the median distance.

  Per class c: the Euclidean distance `d_i` of each feature to the class's
  coordinate-wise median feature, then the score `-|d_i - median_c(d)|`.
  Keeping the highest scores under a per-class quota keeps the band of
  distances around the class's median distance. The paper keeps a band of
  ranks `[0.5 - r/2, 0.5 + r/2]` of the sorted distances; ours is a band of
  distance values, the same band when the distances are symmetric about
  their median. With `class_balanced=False` the band is still centred per
  class, only its half-width is shared across classes.

  Args:
    features: float `[N, D]` (e.g. penultimate-layer features).
    labels: int `[N]` in `[0, num_classes)`.
    num_classes: C.

  Returns:
    float32 `[N]` scores <= 0.

  Raises:
    ValueError: on bad shapes, NaN/inf features or bad labels.
  """
  _check_ndim(features, 2, "features", "[N, D]")
  validation.check_labels(labels, num_classes)
  validation.check_same_length(features=features, labels=labels)
  _check_finite(features, "features")
  with jax.enable_x64(True):
    return _moderate_core(jnp.asarray(features, jnp.float32),
                          jnp.asarray(labels, jnp.int32),
                          num_classes=num_classes)


# ----------------------------------------------------------------------------
# CCS.
# ----------------------------------------------------------------------------


def _ccs_allocate(sizes: np.ndarray, quotas: np.ndarray) -> np.ndarray:
  """CCS Algorithm 1 budget split, for all groups at once.

  Strata are visited from the sparsest up (ties: lower stratum first); each
  non-empty one takes `min(size, remaining // remaining non-empty strata)`.
  This never leaves budget over when `quota <= sum(sizes)`: once a stratum
  is not exhausted, the later (larger) strata can each absorb the even share,
  which grows by at most one per step.

  Args:
    sizes: int `[G, K]` stratum sizes.
    quotas: int `[G]`, each <= the row sum.

  Returns:
    int `[G, K]` takes, each row summing to its quota.
  """
  order = np.argsort(sizes, axis=1, kind="stable")
  sorted_sizes = np.take_along_axis(sizes, order, axis=1)
  remaining = quotas.astype(np.int64).copy()
  strata_left = (sorted_sizes > 0).sum(axis=1)
  takes = np.zeros_like(sorted_sizes)
  for t in range(sizes.shape[1]):
    size = sorted_sizes[:, t]
    nonempty = size > 0
    share = remaining // np.maximum(strata_left, 1)
    takes[:, t] = np.where(nonempty, np.minimum(size, share), 0)
    remaining -= takes[:, t]
    strata_left -= nonempty
  if np.any(remaining):
    raise AssertionError(f"CCS allocation left {remaining} unassigned.")
  out = np.zeros_like(takes)
  np.put_along_axis(out, order, takes, axis=1)
  return out


def ccs_select(scores: Array,
               labels: Array,
               ratio: float,
               *,
               num_classes: int,
               class_balanced: bool = True,
               beta: float = 0.1,
               num_strata: int = 50,
               seed: int = 0) -> Array:
  """Coverage-centric core-set selection (Zheng et al. 2023, Algorithm 1).

  1. Mislabel guard: drop the hardest `floor(beta * n)` examples (highest
     `scores`; ties dropped in id order), per class when `class_balanced`
     (n = class size), else globally. If that leaves fewer examples than the
     quota, fewer are dropped (`n - quota`), i.e. beta is reduced just enough
     for the quota to be met (e.g. ratio 0.95 with beta 0.1).
  2. Split the remaining scores' range `[min, max]` into `num_strata`
     equal-width strata `[lo + i w, lo + (i + 1) w)`, the maximum in the last
     one (all in the first if the range is empty).
  3. Fill the quota from the sparsest non-empty stratum up: each takes
     `min(its size, remaining // remaining non-empty strata)` (`_ccs_allocate`),
     sampled uniformly without replacement.
  With `class_balanced`, steps 1-3 run within each class on its quota from
  `selection.class_quotas`; otherwise once over all N with
  `selection.budget(ratio, N)`. Vectorised over classes and examples; the
  only Python loop is over the K strata.

  Args:
    scores: float `[N]` difficulty scores, higher = harder (e.g. EL2N,
      forgetting, AUM negated).
    labels: int `[N]` in `[0, num_classes)`.
    ratio: fraction to keep, in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas (default) or one global budget.
    beta: hard fraction to drop, in [0, 1).
    num_strata: K >= 1.
    seed: int >= 0 for the within-stratum sampling.

  Returns:
    bool `[N]` mask with exactly the per-class quotas (or the global budget).

  Raises:
    ValueError: on bad shapes, NaN/inf scores, bad ratio, beta or num_strata.
  """
  _check_ndim(scores, 1, "scores", "[N]")
  _check_ratio_labels(labels, ratio, num_classes, scores=scores)
  _check_finite(scores, "scores")
  _check_number(beta, "beta", 0.0, 1.0, hi_open=True)
  validation.check_positive_int(num_strata, "num_strata")
  _check_seed(seed)
  s = np.asarray(scores, np.float64)
  group, quotas, num_groups = _quotas(np.asarray(labels, np.int64),
                                      num_classes, ratio, class_balanced)
  n = s.shape[0]
  ids = np.arange(n)
  sizes = np.bincount(group, minlength=num_groups)
  starts = np.cumsum(sizes) - sizes

  # 1) Rank within group from hardest; drop the first n_drop of each group.
  n_drop = np.minimum(np.floor(beta * sizes + _EPS).astype(np.int64),
                      sizes - quotas)
  order = np.lexsort((ids, -s, group))
  rank = np.empty(n, np.int64)
  rank[order] = ids - starts[group[order]]
  kept = rank >= n_drop[group]

  # 2) Equal-width strata over each group's kept range.
  lo = np.full(num_groups, np.inf)
  hi = np.full(num_groups, -np.inf)
  np.minimum.at(lo, group[kept], s[kept])
  np.maximum.at(hi, group[kept], s[kept])
  span = np.where(hi > lo, hi - lo, 1.0)[group]
  stratum = np.floor((s - lo[group]) * num_strata / span)
  stratum = np.clip(np.nan_to_num(stratum), 0, num_strata - 1).astype(np.int64)
  cell = group * num_strata + stratum
  cell_sizes = np.bincount(cell[kept], minlength=num_groups * num_strata
                           ).reshape(num_groups, num_strata)

  # 3) Budget per stratum, then a uniform sample: the `take` smallest random
  # keys of each (group, stratum) cell.
  takes = _ccs_allocate(cell_sizes, quotas).reshape(-1)
  keys = np.random.default_rng(seed).permutation(n)
  kept_ids = ids[kept]
  kept_cell = cell[kept]
  by_cell = kept_ids[np.lexsort((keys[kept_ids], kept_cell))]
  flat_sizes = cell_sizes.reshape(-1)
  cell_starts = np.cumsum(flat_sizes) - flat_sizes
  pos = np.arange(by_cell.size) - cell_starts[cell[by_cell]]
  mask = np.zeros(n, bool)
  mask[by_cell[pos < takes[cell[by_cell]]]] = True
  return jnp.asarray(mask)


# ----------------------------------------------------------------------------
# D2-pruning.
# ----------------------------------------------------------------------------


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
  _check_ndim(features, 2, "features", "[N, D]")
  n = np.shape(features)[0]
  validation.check_positive_int(k, "k")
  if k >= n:
    raise ValueError(f"k={k} is not allowed: it must be < N={n} (self is "
                     "excluded).")
  validation.check_positive_int(chunk_size, "chunk_size")
  _check_finite(features, "features")
  if labels is None:
    labels = jnp.zeros(n, jnp.int32)
  else:
    _check_ndim(labels, 1, "labels", "[N]")
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
  _check_ndim(difficulty, 1, "difficulty", "[N]")
  _check_finite(difficulty, "difficulty")
  _check_graph(graph, np.shape(difficulty)[0])
  _check_number(gamma_forward, "gamma_forward", 0.0, np.inf, hi_open=True)
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
  _check_ndim(scores, 1, "scores", "[N]")
  _check_finite(scores, "scores")
  n = np.shape(scores)[0]
  _check_graph(graph, n)
  _check_number(gamma_reverse, "gamma_reverse", 0.0, np.inf, hi_open=True)
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
  _check_ndim(difficulty, 1, "difficulty", "[N]")
  _check_ratio_labels(labels, ratio, num_classes, difficulty=difficulty)
  _check_finite(difficulty, "difficulty")
  _check_number(gamma_forward, "gamma_forward", 0.0, np.inf, hi_open=True)
  _check_number(gamma_reverse, "gamma_reverse", 0.0, np.inf, hi_open=True)
  n = np.shape(difficulty)[0]
  if graph is None:
    if features is None:
      raise ValueError("features=None is not allowed without a precomputed "
                       "graph.")
    validation.check_same_length(features=features, difficulty=difficulty)
    graph = knn_graph(features, k, chunk_size,
                      labels if class_balanced else None)
  _check_graph(graph, n)
  groups, quotas, _ = _quotas(np.asarray(labels, np.int64), num_classes,
                              ratio, class_balanced)
  forward = d2_forward_scores(difficulty, graph, gamma_forward=gamma_forward)
  order = d2_greedy_order(forward, groups, quotas, graph,
                          gamma_reverse=gamma_reverse)
  picked = order[:int(quotas.sum())]
  return jnp.zeros(n, jnp.bool_).at[picked].set(True)


# ----------------------------------------------------------------------------
# Registry.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
  """A peer method: what it returns and which inputs the runner must supply.

  Attributes:
    name: registry key.
    kind: "score" (`fn` returns `[N]` for `select_mask`) or "select" (`fn`
      returns a bool `[N]` mask itself).
    needs: subset of {"trajectory", "features", "grad_norms"}.
    fn: the function in this module.
    summary: one line.
  """
  name: str
  kind: str
  needs: frozenset[str]
  fn: Callable[..., Array]
  summary: str


SCORE_METHODS: dict[str, Method] = {
    m.name: m for m in (
        Method("random", "score", frozenset(), random_scores,
               "uniform scores; class-stratified under quotas"),
        Method("el2n", "score", frozenset({"trajectory"}), el2n_scores,
               "mean EL2N over warm-up epochs; keep highest"),
        Method("grand", "score", frozenset({"grad_norms"}), grand_scores,
               "per-example gradient norm at end of warm-up; keep highest"),
        Method("forgetting", "score", frozenset({"trajectory"}),
               forgetting_scores,
               "correct->incorrect transitions; never learned first"),
        Method("ccs", "select", frozenset({"trajectory"}), ccs_select,
               "drop hardest beta, stratified fill from the sparsest stratum"
               " (difficulty from the trajectory)"),
        Method("moderate", "score", frozenset({"features"}), moderate_scores,
               "closest to the class's median distance to its median"),
        Method("dyn_unc", "score", frozenset({"trajectory"}), dyn_unc_scores,
               "mean sliding-window std of p_true; keep highest"),
        Method("d2", "select", frozenset({"features", "trajectory"}),
               d2_select,
               "kNN message passing on difficulty, greedy reverse passing"),
    )
}


def method_names() -> tuple[str, ...]:
  """The registered peer methods, in registry order."""
  return tuple(SCORE_METHODS)


def get_method(name: str) -> Method:
  """Looks up a method by name; ValueError listing the allowed names."""
  if name not in SCORE_METHODS:
    raise ValueError(f"method={name!r} is not allowed: it must be one of "
                     f"{', '.join(SCORE_METHODS)}.")
  return SCORE_METHODS[name]
