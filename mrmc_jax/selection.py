"""Per-class quotas and the jitted top-k selector.

`select_mask` keeps the highest-scored examples, either within per-class
quotas (each class keeps about `ratio` of its own examples) or globally (the
paper's top-k). It is jitted with static shapes and can be called inside the
user's own `jax.jit`: with a static ratio, or with traced quotas so that a new
ratio does not recompile. It checks shapes and dtypes at trace time and
values when concrete. `select_mask_host` is the host wrapper (quotas on the
host, candidate sets). Both sort all N scores on one device; for scores
split by rows over many hosts, `sharded_selection.sharded_select` gives the
same mask without gathering them.

Ties: with `tie_seed` (an int; every method passes its run's seed) equal
scores are ordered by a keyed hash of the id, `tie_keys(id, seed)`: a
bijection of 32-bit ids (murmur3's finaliser, two rounds with keys from the
seed), so the order depends only on (seed, id) and costs O(N) elementwise
work, with no permutation. With `tie_seed=None` ties go to the lower id (the
earlier behaviour, kept for callers that need a fixed order). Either way the
tie key is unique and rides in the low 32 bits of the uint64 sort key, so
the sort is stable by construction and the key maps back to the id. Random
ties
matter for integer scores: forgetting counts are ~50% zeros, and lowest-id
ties would take most of them from the first ids of the file.

The budget is `floor(ratio * N)`, computed as `floor(ratio * N + 1e-9)` so a
decimal ratio such as 0.29 is not undercut by its binary rounding
(0.29 * 100 = 28.999999999999996 in float64).
"""

import functools
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import checking
from mrmc_jax import validation

Array = jax.Array

_EPS = 1e-9


def budget(ratio: float, num_examples: int) -> int:
  """Returns the core-set size `floor(ratio * num_examples)`."""
  validation.check_ratio(ratio)
  return checked_budget(ratio, num_examples)


def checked_budget(ratio: float, num_examples: int) -> int:
  """`budget` of a ratio the caller has checked (no check here)."""
  return int(np.floor(float(ratio) * num_examples + _EPS))


def check_nonzero_budget(ratio: float, num_examples: int) -> None:
  """Refuses a (checked) ratio that selects no example of N > 0."""
  if num_examples and not checked_budget(ratio, num_examples):
    raise ValueError(
        f"ratio={ratio!r} selects floor({ratio!r} * N) = 0 of "
        f"N={num_examples} examples; it must select at least one (ratio >= "
        f"1/{num_examples}).")


def warn_selection(mask: Any, scores: Any, labels: Any, num_classes: int,
                   class_balanced: bool, fn: str = "select_mask",
                   minus_inf: bool = True) -> None:
  """Warns about a concrete selection that looks silently wrong.

  Two cases: with `minus_inf`, selected rows whose score is -inf (the rows
  `mrmc_scores` leaves out, taken only because their class had no other
  row left), and a global top-k (`class_balanced=False`) that selected no
  example of a class present in `labels`. One host transfer of the mask;
  callers use it only outside `jax.jit`.
  """
  m = np.asarray(mask, bool)
  s = np.asarray(scores)
  bad = int(np.count_nonzero(np.isneginf(s[m]))) if minus_inf else 0
  if bad:
    warnings.warn(
        f"{fn}: {bad} selected rows score -inf (rows mrmc_scores left out: "
        "not recorded in every epoch, or non-finite losses); their classes "
        "had too few other rows for their quotas.", stacklevel=3)
  if not class_balanced:
    y = np.asarray(labels)
    ok = (y >= 0) & (y < num_classes)
    present = np.bincount(y[ok], minlength=num_classes) > 0
    picked = np.bincount(y[ok & m], minlength=num_classes) > 0
    empty = np.flatnonzero(present & ~picked)
    if empty.size:
      warnings.warn(
          f"{fn}: the global top-k (class_balanced=False) selected no "
          f"example of {empty.size} of the {int(present.sum())} classes "
          f"present (first {empty[:5].tolist()}); class_balanced=True keeps "
          "every class.", stacklevel=3)


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
  """Splits the int `total` proportionally to int `weights` (exact ints).

  Each entry gets `floor(total * w / sum(w))`; the leftover goes one each to
  the largest remainders, ties to the lower index.
  """
  w_sum = int(weights.sum())
  if w_sum == 0 or total == 0:
    return np.zeros_like(weights)
  prod = total * weights  # int64: exact for ImageNet-size counts.
  base = prod // w_sum
  rem = prod % w_sum
  leftover = total - int(base.sum())
  order = np.lexsort((np.arange(len(weights)), -rem))
  base[order[:leftover]] += 1
  return base


def class_quotas(labels: np.ndarray,
                 num_classes: int,
                 ratio: float,
                 capacity: Optional[np.ndarray] = None) -> np.ndarray:
  """Per-class quotas that sum to exactly `floor(ratio * N)`.

  Class c gets `floor(ratio * N) * n_c / N` examples, rounded by largest
  remainder (ties to the lower class id), so each class keeps about `ratio`
  of its own `n_c` examples and never more than it has. With `capacity`
  (e.g. the number of eligible candidates per class) a class never gets more
  than its capacity; the budget it cannot use moves to the classes that still
  have room, again proportionally to class size. If all classes together
  have less capacity than the budget, every class is filled to capacity.

  Args:
    labels: int `[N]` class labels in `[0, num_classes)`.
    num_classes: the number of classes C.
    ratio: the selection ratio in (0, 1].
    capacity: optional int `[C]`, at most the class sizes.

  Returns:
    int64 `[C]` quotas.

  Raises:
    ValueError: on a ratio outside (0, 1] or one that selects no example,
      or labels outside [0, C).
  """
  validation.check_ratio(ratio)
  validation.check_labels(labels, num_classes)
  check_nonzero_budget(ratio, int(np.shape(labels)[0]))
  return checked_class_quotas(np.asarray(labels), num_classes, ratio,
                              capacity)


def checked_class_quotas(labels: np.ndarray, num_classes: int,
                         ratio: float,
                         capacity: Optional[np.ndarray]) -> np.ndarray:
  """`class_quotas` of a ratio and host labels the caller has checked."""
  sizes = np.bincount(labels, minlength=num_classes).astype(np.int64)
  total = checked_budget(ratio, int(sizes.sum()))
  quotas = quotas_from_sizes(sizes, ratio)
  if capacity is None:
    return quotas
  capacity = np.minimum(np.asarray(capacity, np.int64), sizes)
  if capacity.shape != (num_classes,):
    raise ValueError(f"capacity has shape {capacity.shape}; expected "
                     f"({num_classes},).")
  total = min(total, int(capacity.sum()))
  quotas = np.minimum(quotas, capacity)
  # Each round either places the whole leftover or fills at least one class,
  # so this ends after at most C rounds.
  while (leftover := total - int(quotas.sum())) > 0:
    room = capacity - quotas
    extra = _largest_remainder(leftover, np.where(room > 0, sizes, 0))
    quotas = quotas + np.minimum(extra, room)
  return quotas


def quotas_from_sizes(sizes: np.ndarray, ratio: float) -> np.ndarray:
  """`class_quotas` (no capacity) from the class sizes int `[C]`.

  For labels that lie elsewhere (split over hosts: their counts are
  summed across hosts first); the ratio is checked by the caller.
  """
  sizes = np.asarray(sizes, np.int64)
  return _largest_remainder(checked_budget(ratio, int(sizes.sum())), sizes)


def sortable_u32(x: Array) -> Array:
  """Maps float32 to uint32 so that unsigned order equals float order."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(1 << 31))


def _argsort_packed(high: Array, low: Array) -> Array:
  """Ascending order of the uint64 keys `high << 32 | low`, low unique < 2^32.

  XLA's CPU sort is about five times faster on one primitive operand than
  with an index payload, so the payload rides in the low 32 bits of a single
  uint64 key. Unique keys make the order stable by construction.
  """
  return _sorted_low(high, low).astype(jnp.int32)


def _sorted_low(high: Array, low: Array) -> Array:
  """The low 32 bits (uint32) of the sorted keys `high << 32 | low`."""
  key = (high.astype(jnp.uint64) << 32) | low.astype(jnp.uint64)
  return (jnp.sort(key) & jnp.uint64(0xFFFFFFFF)).astype(jnp.uint32)


# murmur3's 32-bit finaliser and its inverse: a bijection of uint32 with
# full avalanche (every input bit flips each output bit with probability
# about 1/2). The inverse undoes each step: the xor-shifts by >= 16 are
# their own inverse, x ^ x >> 13 is undone by x ^ x >> 13 ^ x >> 26, and the
# odd multipliers have inverses mod 2^32.
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35
_M1_INV, _M2_INV = pow(_M1, -1, 2**32), pow(_M2, -1, 2**32)


def _fmix32(h: Array) -> Array:
  h = h ^ (h >> 16)
  h = h * jnp.uint32(_M1)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(_M2)
  return h ^ (h >> 16)


def _fmix32_inv(h: Array) -> Array:
  h = h ^ (h >> 16)
  h = h * jnp.uint32(_M2_INV)
  h = h ^ (h >> 13) ^ (h >> 26)
  h = h * jnp.uint32(_M1_INV)
  return h ^ (h >> 16)


def _tie_round_keys(tie_seed: Array) -> tuple[Array, Array]:
  """Two 32-bit round keys from the seed (distinct seeds, distinct keys)."""
  k1 = _fmix32(jnp.asarray(tie_seed).astype(jnp.uint32) ^ jnp.uint32(0x243F6A88))
  k2 = _fmix32(k1 ^ jnp.uint32(0x85A308D3))
  return k1, k2


def tie_keys(ids: Array, tie_seed: Optional[Array]) -> Array:
  """The tie-break key of each id: uint32, unique for unique ids.

  `tie_seed=None`: the id itself (ties to the lower id). Otherwise a keyed
  bijection of the 32-bit id, `fmix32(fmix32(id ^ k1) + k2)` with round
  keys from the seed (murmur3's finaliser): a seeded pseudo-random order
  that costs O(N) elementwise work, no permutation and no sort, and that
  depends only on `(tie_seed, id)`, not on N. `tie_seed` may be traced.
  `tie_ids` inverts it.
  """
  ids = jnp.asarray(ids).astype(jnp.uint32)
  if tie_seed is None:
    return ids
  k1, k2 = _tie_round_keys(tie_seed)
  return _fmix32(_fmix32(ids ^ k1) + k2)


def tie_ids(keys: Array, tie_seed: Optional[Array]) -> Array:
  """The ids of tie keys: the inverse of `tie_keys`, int32."""
  keys = jnp.asarray(keys).astype(jnp.uint32)
  if tie_seed is None:
    return keys.astype(jnp.int32)
  k1, k2 = _tie_round_keys(tie_seed)
  return ((_fmix32_inv(_fmix32_inv(keys) - k2)) ^ k1).astype(jnp.int32)


def tie_ranks(num_examples: int, tie_seed: Optional[Array]) -> Array:
  """The rank of each id in the tie order: a permutation int32 `[N]`.

  For inspection and tests (the selector sorts by `tie_keys` directly).
  `tie_seed=None`: the id itself (ties to the lower id).
  """
  idx = jnp.arange(num_examples, dtype=jnp.int32)
  if tie_seed is None:
    return idx
  order = jnp.argsort(tie_keys(idx, tie_seed))
  return jnp.zeros(num_examples, jnp.int32).at[order].set(idx)


@functools.partial(jax.jit, static_argnames=("num_classes", "class_balanced"))
def _select_core(scores, labels, quotas, total, eligible, priority, tie_seed,
                 *, num_classes, class_balanced):
  n = scores.shape[0]
  idx = jnp.arange(n, dtype=jnp.int32)
  # 1) Global rank by descending score, ties by the tie key (a seeded
  # keyed hash of the id, or the id). -0.0 becomes 0.0 so that the two
  # zeros tie (their bit patterns differ). The low 32 bits carry the tie
  # key, unique, and map back to the id through its inverse.
  # NaN (possible only when traced) ranks last, with -inf.
  neg = jnp.where(scores == 0, 0.0, -scores.astype(jnp.float32))
  neg = jnp.where(jnp.isnan(neg), jnp.inf, neg)
  order = tie_ids(_sorted_low(sortable_u32(neg), tie_keys(idx, tie_seed)),
                  tie_seed)
  # 2) Regroup: priority before the rest before ineligible; and, when
  # class-balanced, by class first. The group key is gathered into score
  # order, and the low 32 bits carry the position in that order, so the
  # sort keeps score order and ties (gathers, no inverse-permutation
  # scatter).
  group = jnp.where(eligible, jnp.where(priority, 0, 1), 2).astype(jnp.uint32)
  high = group
  if class_balanced:
    high = (labels.astype(jnp.uint32) << 2) | group
  key = jnp.sort((high[order].astype(jnp.uint64) << 32)
                 | idx.astype(jnp.uint64))
  order = order[(key & jnp.uint64(0xFFFFFFFF)).astype(jnp.int32)]
  if class_balanced:
    # Labels ascend in the sorted keys: each class's first position by a
    # binary search instead of a bincount over N.
    sorted_labels = (key >> 34).astype(jnp.int32)
    starts = jnp.searchsorted(sorted_labels,
                              jnp.arange(num_classes, dtype=jnp.int32))
    take = idx - starts[sorted_labels] < quotas.astype(jnp.int32)[sorted_labels]
  else:
    take = idx < jnp.minimum(total, jnp.sum(eligible))
  return jnp.zeros(n, jnp.bool_).at[order].set(take)


def _quotas_in_jit(labels: Array, num_classes: int, total: int) -> Array:
  """`class_quotas` (no capacity) as traced int64 ops; needs x64 enabled.

  The same largest-remainder rule as the host version: class c gets
  `floor(total * n_c / N)`, and the leftover goes one each to the largest
  remainders, ties to the lower class id.
  """
  # Labels equal to num_classes (ineligible rows) are counted apart.
  sizes = jnp.bincount(labels.astype(jnp.int32), length=num_classes + 1
                       )[:num_classes].astype(jnp.int64)
  n = jnp.maximum(jnp.sum(sizes), 1)
  prod = jnp.int64(total) * sizes
  base = prod // n
  rem = prod % n
  leftover = total - jnp.sum(base)
  # Descending remainder, ties to the lower class id: one packed sort key.
  cls = jnp.arange(num_classes, dtype=jnp.int32)
  order = _argsort_packed(jnp.max(rem) - rem, cls)
  extra = jnp.zeros(num_classes, jnp.int64).at[order].set(
      (jnp.arange(num_classes) < leftover).astype(jnp.int64))
  # At most the class size: only binds when labels outside [0, C) left
  # fewer labelled rows than the budget.
  return jnp.minimum(base + extra, sizes).astype(jnp.int32)


def check_select_inputs(scores: Any, labels: Any, ratio: Any = None, *,
                        num_classes: Any, quotas: Any = None,
                        total: Any = None, eligible: Any = None,
                        priority: Any = None, tie_seed: Any = None,
                        class_balanced: bool = True) -> None:
  """`select_mask`'s checks: shapes and dtypes at trace time, values (label
  range, NaN scores, negative quotas) when concrete.

  Raises:
    ValueError: naming the argument, its shape or value, and what is allowed.
  """
  validation.check_static(num_classes, "num_classes")
  validation.check_static(class_balanced, "class_balanced")
  validation.check_static(ratio, "ratio", " (a float in (0, 1]), or pass "
                          "traced quotas= / total=, which never recompile")
  validation.check_array(scores, "scores", "float [N]")
  validation.check_array(labels, "labels", "int [N]")
  for name, x in (("quotas", quotas), ("eligible", eligible),
                  ("priority", priority)):
    if x is not None:
      validation.check_array(x, name)
  if (isinstance(num_classes, bool)
      or not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
    raise ValueError(f"num_classes={num_classes!r} is not allowed: it must "
                     "be a positive int.")
  validation.check_rank(scores, "scores", 1, "a 1-D [N] array")
  dtype = validation.dtype_of(scores)
  if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating)
                               or np.issubdtype(dtype, np.integer)):
    raise ValueError(f"scores has dtype {dtype}; expected a float dtype.")
  n = np.shape(scores)[0]
  if np.ndim(labels) == 1 and np.shape(labels)[0] != n:
    raise ValueError(
        f"scores has {n} rows and labels {np.shape(labels)[0]}; they must "
        "be equal (scores of a transposed [R, N] loss matrix have R rows: "
        "score the [N, R] trajectory).")
  validation.check_leading(labels, "labels", n, "int [N] like scores")
  validation.check_integer_dtype(labels, "labels")
  for name, x in (("eligible", eligible), ("priority", priority)):
    if x is not None:
      validation.check_leading(x, name, n, "bool [N] like scores")
  if quotas is not None:
    validation.check_leading(quotas, "quotas", num_classes,
                             "int [C], one quota per class")
    validation.check_integer_dtype(quotas, "quotas")
  for name, x in (("total", total), ("tie_seed", tie_seed)):
    if x is not None:
      if np.ndim(x) != 0:
        raise ValueError(f"{name} has shape {np.shape(x)}; expected an int "
                         "scalar.")
      validation.check_integer_dtype(x, name)
  if ratio is not None:
    validation.check_ratio(ratio)
    check_nonzero_budget(ratio, n)
  validation.check_index_range(labels, "labels", num_classes,
                               what="num_classes")
  if validation.is_concrete(scores):
    validation.check_scores(scores)
  if quotas is not None and validation.is_concrete(quotas):
    q = np.asarray(quotas)
    if (q < 0).any():
      raise ValueError(f"quotas[{int(np.argmax(q < 0))}] = {int(q.min())} is "
                       "not allowed: quotas must be >= 0.")
    if class_balanced and validation.is_concrete(labels, eligible):
      y = np.asarray(labels)
      ok = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
      have = np.bincount(y[ok], minlength=num_classes)[:num_classes]
      over = np.flatnonzero(q > have)
      if over.size:
        c = int(over[0])
        raise ValueError(
            f"quotas[{c}] = {int(q[c])} is more than the {int(have[c])} "
            f"eligible examples of class {c} ({over.size} classes over); "
            "each quota must be at most its class's eligible count "
            "(select_mask_host(candidates=) moves the excess to other "
            "classes).")


@functools.partial(jax.jit,
                   static_argnames=("ratio", "num_classes", "class_balanced"))
def _select_mask_jit(scores, labels, ratio, *, num_classes, class_balanced,
                     quotas, total, eligible, priority, tie_seed):
  """`select_mask` after its checks (see there)."""
  n = scores.shape[0]
  eligible = jnp.ones(n, jnp.bool_) if eligible is None else eligible
  priority = jnp.zeros(n, jnp.bool_) if priority is None else priority
  eligible = eligible.astype(jnp.bool_)
  if class_balanced:
    # Rows whose label is not a class (possible only when traced: concrete
    # labels are checked) are never selected and take no class's quota.
    in_range = (labels >= 0) & (labels < num_classes)
    eligible = eligible & in_range
    quota_labels = jnp.where(in_range, labels, num_classes)
    labels = jnp.where(in_range, labels, 0)
  with jax.enable_x64(True):
    if ratio is not None:
      total = budget(ratio, n)
      quotas = (_quotas_in_jit(quota_labels, num_classes, total)
                if class_balanced else jnp.zeros(num_classes, jnp.int32))
    elif quotas is None:
      quotas = jnp.zeros(num_classes, jnp.int32)
    if total is None:
      total = jnp.sum(quotas)
    return _select_core(scores, labels, quotas, total, eligible,
                        priority.astype(jnp.bool_), tie_seed,
                        num_classes=num_classes,
                        class_balanced=class_balanced)


def select_mask(scores: Array,
                labels: Array,
                ratio: Optional[float] = None,
                *,
                num_classes: int,
                class_balanced: bool = True,
                quotas: Optional[Array] = None,
                total: Optional[Array] = None,
                eligible: Optional[Array] = None,
                priority: Optional[Array] = None,
                tie_seed: Optional[Array] = None) -> Array:
  """Keeps the highest-scored examples; jitted, and callable inside `jax.jit`.

  The budget comes either from a static `ratio` (`floor(ratio * N)` in all,
  split over classes by `class_quotas`; each new ratio compiles once) or from
  traced `quotas [C]` (class-balanced) / `total` (global), which never
  recompile. Ties follow `tie_keys(id, tie_seed)`. Two single-key sorts
  of uint64 keys (64-bit types are enabled inside this function only): one
  ranks by score, the second groups by class and priority while keeping
  that rank.

  Checks: shapes and dtypes always (also inside your `jax.jit`: `[N, 1]`
  scores, float labels, quotas not `[C]` are refused at trace time), and
  so are lists in place of arrays, a ratio that selects no example and
  traced static arguments; values when the arrays are concrete (labels
  outside `[0, C)`, NaN scores, negative quotas or quotas above their
  class's eligible examples). Traced values are not checked, but never
  wrap: rows with a label outside `[0, C)` are not selected
  (class-balanced) and NaN scores rank last, with -inf; the checked mode
  (`checking.checked`) raises on both and on quotas above their class.
  On concrete inputs a `UserWarning` says when a selected row scores -inf
  (`mrmc_scores` marks the rows it leaves out so) and when a global top-k
  selected no example of some class. `select_mask_host` also handles
  candidate sets whose classes have fewer eligible examples than their
  quota.

  Pass large arrays (labels, scores) as arguments of your jitted
  function, not as closed-over constants: XLA constant-folds the selector
  over closed-over labels (1.28M labels: a 12 s first call on a CPU
  against 1.7 s as an argument; `benchmarks/selection_speed.py --closure`).

  Args:
    scores: float `[N]`, higher is kept first; must not hold NaN.
    labels: int `[N]` in `[0, num_classes)`, `N < 2^31`.
    ratio: static fraction in (0, 1]; or None with `quotas` / `total`.
    num_classes: C (static).
    class_balanced: per-class quotas (static; default) or one global top-k.
    quotas: int `[C]` per-class quotas (class-balanced, `ratio=None`); each
      must not exceed the eligible examples of its class.
    total: int scalar global budget (global top-k, `ratio=None`).
    eligible: optional bool `[N]`; only these may be selected.
    priority: optional bool `[N]`; taken before all others of their class (or
      globally), whatever the scores (MRMC-R keeps its first stage so).
    tie_seed: optional int scalar (may be traced): ties in a seeded random
      order; None: ties to the lower id.

  Returns:
    bool `[N]` mask.

  Raises:
    ValueError: see Checks above; `ratio` and `quotas`/`total` both or
      neither given.

  Warns:
    UserWarning: see Checks above (concrete inputs only).
  """
  if (ratio is None) == (quotas is None and total is None):
    raise ValueError("select_mask needs either a static ratio or traced "
                     "quotas/total, not both and not neither.")
  check_select_inputs(scores, labels, ratio, num_classes=num_classes,
                      quotas=quotas, total=total, eligible=eligible,
                      priority=priority, tie_seed=tie_seed,
                      class_balanced=class_balanced)
  if class_balanced:
    checking.check_index_range(labels, "label", num_classes)
    if quotas is not None:
      checking.check_quotas(quotas, labels, num_classes, eligible=eligible)
  checking.check_not_nan(scores, "score")
  mask = _select_mask_jit(
      scores, labels, ratio, num_classes=num_classes,
      class_balanced=class_balanced, quotas=quotas, total=total,
      eligible=eligible, priority=priority, tie_seed=tie_seed)
  if validation.is_concrete(scores, labels, quotas, total, eligible,
                            priority, tie_seed):
    warn_selection(mask, scores, labels, num_classes, class_balanced)
  return mask


def select_mask_host(scores: Array,
                     labels: Array,
                     ratio: float,
                     *,
                     num_classes: int,
                     class_balanced: bool = True,
                     candidates: Optional[Array] = None,
                     priority: Optional[Array] = None,
                     tie_seed: Optional[int] = None) -> Array:
  """Host convenience wrapper of `select_mask`: checks input, caps quotas.

  Keeps the top `floor(ratio * N)` examples by score; ties in a seeded
  random order (`tie_seed`), or to the lower id with `tie_seed=None`.
  With `class_balanced` each class keeps its quota from `class_quotas`
  (about `ratio` of the class); otherwise the top scores are taken
  globally. `candidates` restricts eligibility (two-stage selection): quotas
  are then capped at each class's candidate count and the remaining budget
  moves to other classes; if there are fewer candidates than the budget, all
  of them are selected. The quotas are computed on the host and passed as
  values, so a new ratio does not recompile.

  Args:
    scores: float `[N]`, higher is better; NaN is rejected, +-inf allowed.
    labels: int `[N]` in `[0, num_classes)`.
    ratio: fraction to keep, in (0, 1].
    num_classes: the number of classes C.
    class_balanced: per-class quotas (default) or the paper's global top-k.
    candidates: optional bool `[N]` of eligible examples.
    priority: optional bool `[N]`; these are taken before all others of their
      class, whatever the scores (MRMC-R keeps its first-stage picks so).
    tie_seed: optional int >= 0; None breaks ties to the lower id.

  Returns:
    bool `[N]` mask with exactly `floor(ratio * N)` True entries (fewer only
    if `candidates` has fewer).

  Raises:
    ValueError: on bad ratio (also one that selects no example), labels,
      shapes or NaN scores.

  Warns:
    UserWarning: a global top-k that selected no example of a class. (-inf
      scores are a last resort here, as in the methods, without a warning.)
  """
  validation.check_ratio(ratio)
  validation.check_scores(scores)
  validation.check_labels(labels, num_classes)
  check_nonzero_budget(ratio, int(np.shape(scores)[0]))
  arrays = {"scores": scores, "labels": labels}
  if candidates is not None:
    arrays["candidates"] = candidates
  if priority is not None:
    arrays["priority"] = priority
  validation.check_same_length(**arrays)
  if tie_seed is not None:
    validation.check_seed(tie_seed)
  n = np.shape(scores)[0]
  labels_np = np.asarray(labels)
  if candidates is None:
    eligible = jnp.ones(n, jnp.bool_)
    capacity = None
  else:
    eligible = jnp.asarray(candidates, jnp.bool_)
    capacity = np.bincount(labels_np[np.asarray(candidates, bool)],
                           minlength=num_classes)
  # Checked once above: the helpers below take checked values.
  quotas = checked_class_quotas(labels_np, num_classes, ratio, capacity)
  priority = (jnp.zeros(n, jnp.bool_) if priority is None
              else jnp.asarray(priority, jnp.bool_))
  mask = _select_mask_jit(
      jnp.asarray(scores, jnp.float32), jnp.asarray(labels, jnp.int32), None,
      num_classes=num_classes, class_balanced=class_balanced,
      quotas=jnp.asarray(quotas, jnp.int32),
      total=jnp.int32(checked_budget(ratio, n)),
      eligible=eligible, priority=priority,
      tie_seed=None if tie_seed is None else jnp.int32(tie_seed))
  # The methods rank their last-resort rows -inf on purpose (taken only
  # when a class runs short), so only the empty classes are warned here.
  warn_selection(mask, scores, labels_np, num_classes, class_balanced,
                 fn="select_mask_host", minus_inf=False)
  return mask
