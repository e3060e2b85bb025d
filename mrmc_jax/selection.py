"""Per-class quotas and the jitted top-k selector.

`select_mask` keeps the highest-scored examples, either within per-class
quotas (each class keeps about `ratio` of its own examples) or globally (the
paper's top-k). It is jitted with static shapes and can be called inside the
user's own `jax.jit`: with a static ratio, or with traced quotas so that a new
ratio does not recompile. `select_mask_host` is the checked host wrapper
(one-line errors on bad input, candidate sets).

Ties: with `tie_seed` (an int; every method passes its run's seed) equal
scores are ordered by a seeded random permutation of the ids, the same for a
given seed and N; with `tie_seed=None` they go to the lower id (the earlier
behaviour, kept for callers that need a fixed order). Either way the packed
sort key stays unique, so the sort is stable by construction. Random ties
matter for integer scores: forgetting counts are ~50% zeros, and lowest-id
ties would take most of them from the first ids of the file.

The budget is `floor(ratio * N)`, computed as `floor(ratio * N + 1e-9)` so a
decimal ratio such as 0.29 is not undercut by its binary rounding
(0.29 * 100 = 28.999999999999996 in float64).
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

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
    ValueError: on a ratio outside (0, 1] or labels outside [0, C).
  """
  validation.check_ratio(ratio)
  validation.check_labels(labels, num_classes)
  return checked_class_quotas(np.asarray(labels), num_classes, ratio,
                              capacity)


def checked_class_quotas(labels: np.ndarray, num_classes: int,
                         ratio: float,
                         capacity: Optional[np.ndarray]) -> np.ndarray:
  """`class_quotas` of a ratio and host labels the caller has checked."""
  sizes = np.bincount(labels, minlength=num_classes).astype(np.int64)
  total = checked_budget(ratio, int(sizes.sum()))
  quotas = _largest_remainder(total, sizes)
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
  key = (high.astype(jnp.uint64) << 32) | low.astype(jnp.uint64)
  return (jnp.sort(key) & jnp.uint64(0xFFFFFFFF)).astype(jnp.int32)


def tie_ranks(num_examples: int, tie_seed: Optional[Array]) -> Array:
  """The tie-break key of each id: unique int32 `[N]` in `[0, N)`.

  `tie_seed=None`: the id itself (ties to the lower id). Otherwise the
  position of each id in `jax.random.permutation(key(tie_seed), N)`, a
  seeded random order; `tie_seed` may be traced.
  """
  idx = jnp.arange(num_examples, dtype=jnp.int32)
  if tie_seed is None:
    return idx
  perm = jax.random.permutation(jax.random.key(tie_seed), num_examples)
  return jnp.zeros(num_examples, jnp.int32).at[perm].set(idx)


@functools.partial(jax.jit, static_argnames=("num_classes", "class_balanced"))
def _select_core(scores, labels, quotas, total, eligible, priority, tie_seed,
                 *, num_classes, class_balanced):
  n = scores.shape[0]
  idx = jnp.arange(n, dtype=jnp.int32)
  # 1) Global rank by descending score, ties by the tie key (a seeded random
  # rank, or the id). -0.0 becomes 0.0 so that the two zeros tie (their bit
  # patterns differ). The low 32 bits carry the tie key, unique, and map
  # back to the id through its inverse.
  neg = jnp.where(scores == 0, 0.0, -scores.astype(jnp.float32))
  tie = tie_ranks(n, tie_seed)
  id_of_tie = jnp.zeros(n, jnp.int32).at[tie].set(idx)
  order = id_of_tie[_argsort_packed(sortable_u32(neg), tie)]
  rank = jnp.zeros(n, jnp.int32).at[order].set(idx)
  # 2) Regroup: priority before the rest before ineligible; and, when
  # class-balanced, by class first. The rank keeps score order and ties.
  group = jnp.where(eligible, jnp.where(priority, 0, 1), 2).astype(jnp.uint32)
  high = group
  if class_balanced:
    high = (labels.astype(jnp.uint32) << 2) | group
  sorted_rank = _argsort_packed(high, rank)
  order = order[sorted_rank]
  if class_balanced:
    labels = labels.astype(jnp.int32)
    sizes = jnp.bincount(labels, length=num_classes)
    starts = jnp.cumsum(sizes) - sizes
    sorted_labels = labels[order]
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
  sizes = jnp.bincount(labels.astype(jnp.int32), length=num_classes
                       ).astype(jnp.int64)
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
  return (base + extra).astype(jnp.int32)


@functools.partial(jax.jit,
                   static_argnames=("ratio", "num_classes", "class_balanced"))
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
  recompile. Ties follow `tie_ranks(N, tie_seed)`. Two single-key sorts
  of uint64 keys
  (64-bit types are enabled inside this function only): one ranks by score,
  the second groups by class and priority while keeping that rank.

  No input is checked here (values may be traced): `select_mask_host` checks
  its input on the host first, and handles candidate sets whose classes have
  fewer eligible examples than their quota.

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
  """
  n = scores.shape[0]
  if (ratio is None) == (quotas is None and total is None):
    raise ValueError("select_mask needs either a static ratio or traced "
                     "quotas/total, not both and not neither.")
  eligible = jnp.ones(n, jnp.bool_) if eligible is None else eligible
  priority = jnp.zeros(n, jnp.bool_) if priority is None else priority
  with jax.enable_x64(True):
    if ratio is not None:
      total = budget(ratio, n)
      quotas = (_quotas_in_jit(labels, num_classes, total)
                if class_balanced else jnp.zeros(num_classes, jnp.int32))
    elif quotas is None:
      quotas = jnp.zeros(num_classes, jnp.int32)
    if total is None:
      total = jnp.sum(quotas)
    return _select_core(scores, labels, quotas, total,
                        eligible.astype(jnp.bool_), priority.astype(jnp.bool_),
                        tie_seed, num_classes=num_classes,
                        class_balanced=class_balanced)


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
    ValueError: on bad ratio, labels, shapes or NaN scores.
  """
  validation.check_ratio(ratio)
  validation.check_scores(scores)
  validation.check_labels(labels, num_classes)
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
  return select_mask(
      jnp.asarray(scores, jnp.float32), jnp.asarray(labels, jnp.int32),
      num_classes=num_classes, class_balanced=class_balanced,
      quotas=jnp.asarray(quotas, jnp.int32),
      total=jnp.int32(checked_budget(ratio, n)),
      eligible=eligible, priority=priority,
      tie_seed=None if tie_seed is None else jnp.int32(tie_seed))
