"""Moderate-DS (Xia et al. 2023): keep the examples of moderate difficulty.

The row follows the authors' code (tmllab/2023_ICLR_Moderate-DS, commit
7f64d31, `selection.py:get_distance, get_prune_idx`): each example's
distance to its class's median feature, sorted over all N, and the middle
band of that one ranking kept (`moderate_pooled_scores`;
`moderate.per_class=False`, the default). `moderate(per_class=True)`
keeps, per class quota, the examples closest
to the class's median distance (`moderate_scores`, the library's earlier
default).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import common

Array = jax.Array


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
  return -jnp.abs(dist - med_dist[labels]).astype(jnp.float32), dist


def moderate_scores(features: Array, labels: Array, *,
                    num_classes: int) -> Array:
  """Moderate-DS (Xia et al. 2023): closeness to the median distance.

  Per class c: the Euclidean distance `d_i` of each feature to the class's
  coordinate-wise median feature, then the score `-|d_i - median_c(d)|`.
  Keeping the highest scores under a per-class quota keeps the band of
  distances around the class's median distance. The paper keeps a band of
  ranks `[0.5 - r/2, 0.5 + r/2]` of the sorted distances; ours is a band of
  distance values, the same band when the distances are symmetric about
  their median. The registry row with `class_balanced=False` uses
  `moderate_pooled_scores` instead, the reference's pooled band.

  Args:
    features: float `[N, D]` (e.g. penultimate-layer features).
    labels: int `[N]` in `[0, num_classes)`.
    num_classes: C.

  Returns:
    float32 `[N]` scores <= 0.

  Raises:
    ValueError: on bad shapes, NaN/inf features or bad labels.
  """
  common.check_ndim(features, 2, "features", "[N, D]")
  validation.check_labels(labels, num_classes)
  validation.check_same_length(features=features, labels=labels)
  common.check_finite(features, "features")
  with jax.enable_x64(True):
    return _moderate_core(jnp.asarray(features, jnp.float32),
                          jnp.asarray(labels, jnp.int32),
                          num_classes=num_classes)[0]


def moderate_pooled_scores(features: Array, labels: Array, *,
                           num_classes: int, seed: int = 0) -> np.ndarray:
  """The reference's Moderate-DS without class quotas: one pooled band.

  As `get_prune_idx` in the reference (tmllab/Moderate-DS, and its copy in
  D2-pruning's `Coreset.moderate_selection`): each example's distance to
  its own class's median feature, then all classes pooled and sorted; the
  kept examples are the middle band of that one ranking. The score is
  `-|pos - (N - 1) / 2|` with pos the pooled ascending rank (ties in a
  seeded random order), so the global top-k is that middle band.

  Args:
    features: float `[N, D]`.
    labels: int `[N]` in `[0, num_classes)`.
    num_classes: C.
    seed: int >= 0 (ties).

  Returns:
    float32 `[N]` scores <= 0.
  """
  common.check_ndim(features, 2, "features", "[N, D]")
  validation.check_labels(labels, num_classes)
  validation.check_same_length(features=features, labels=labels)
  common.check_finite(features, "features")
  with jax.enable_x64(True):
    dist = _moderate_core(jnp.asarray(features, jnp.float32),
                          jnp.asarray(labels, jnp.int32),
                          num_classes=num_classes)[1]
  n = np.shape(features)[0]
  pos = common.within_group_position(np.asarray(dist), np.zeros(n, np.int64),
                                     seed)
  return (-np.abs(pos - (n - 1) / 2.0)).astype(np.float32)


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  cb = opts.moderate_class_balanced
  if cb:
    scores = moderate_scores(art["features"], labels, num_classes=num_classes)
  else:
    scores = moderate_pooled_scores(art["features"], labels,
                                    num_classes=num_classes, seed=opts.seed)
  return common.select_top(
      scores, labels, ratio, num_classes=num_classes, class_balanced=cb,
      seed=opts.seed)


OPTIONS = common.declare(
    common.Option("per_class", bool, False, "Moderate: per "
                  "class quota, closest to the class's median distance "
                  "(True), or the middle band of all N (False, the authors' "
                  "get_prune_idx)", absent=True,
                  legacy="moderate_class_balanced"),
    scope="moderate")

METHOD = common.Method(
    "moderate", frozenset({"features"}), common.SEED + OPTIONS,
    _select,
    "closest to the class's median distance to its median")
