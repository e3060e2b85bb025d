"""Boundary: distance to the decision boundary (Yang et al., ICML 2024).

"Mind the Boundary: Coreset Selection via Reconstructing the Decision
Boundary" (S. Yang, Z. Cao, S. Guo, R. Zhang, P. Luo, S. Zhang, L. Nie;
PMLR 235:55948-55960) selects the training examples that reconstruct the
decision boundary of a model trained on all data. The MRMC paper compares
with it as "Boundary" / "Boundary(CCS)". No code by the authors was found;
the paper's abstract (PMLR, OpenReview hWng0GXeE4) and a third-party
reproduction of its selection (a single PyTorch script, "BoundarySet" and
"BoundarySet-CCS") were the sources. What follows is that reproduction's
procedure; the step rule, the cap and the sampling are assumptions where
the paper's own text could not be checked.

Distance (`boundary_distance`): in eval mode, from the clean input
`x_0 = x`, take sign-gradient ascent steps on the cross-entropy of the
label, `x_{k+1} = x_k + alpha * sign(grad_x CE(f(x_k), y))`; the distance is
the first `k` in `0..K` with `argmax f(x_k) != y` (0: misclassified as
is), or `K` if the prediction never flips within `K` steps. The runner
computes it once at the end of warm-up (the `boundary` artefact, `[N]`)
with `STEP_SIZE` and `MAX_STEPS`, in the units of the model's input
(`(pixel / 255 - mean) / std`). They are constants, not options, and are
stored beside the distances (`boundary_settings`), so distances recorded
with other settings are refused, never read. The reproduction's example
uses alpha 0.002 and K = 10 for a CIFAR-10 ResNet-18; 0.05 was chosen here
because on the Fashion-MNIST MLP warm-up (R = 5, seed 0) it spreads the
distances over the whole range (per k = 0..10: 4967, 9908, 14232, 12587,
8625, 5192, 2757, 894, 298, 214, 326 of 60,000). Cost: `K` forward-backward
passes over the training set in eval mode (about `K` epochs without the
optimizer update).

Selection (`boundary_select`), by `boundary_mode`:
  "ccs" (default; the MRMC paper's "Boundary(CCS)", the reproduction's
    BoundarySet-CCS): each distance value `0..K` is one stratum, and the
    quota is filled by CCS's budget split (`ccs._ccs_allocate`: from the
    sparsest stratum up, each takes `min(size, remaining // strata
    left)`, each stratum once, as CCS's Algorithm 1), uniformly at random
    within a stratum. The reproduction's loop differs: it revisits the
    sparsest stratum not yet exhausted, so with sizes (4, 2, 6) and a
    budget of 6 it takes (4, 2, 0) where CCS takes (2, 2, 2); "Boundary(CCS)"
    names CCS, whose split is kept. No hardest fraction is dropped first
    (CCS's beta): the reproduction drops none.
  "nearest" (BoundarySet): the smallest distances, closest to the boundary.
Both keep the per-class quotas with `class_balanced` (the reproduction
selects per class) or the global budget, so the core-set has exactly
`floor(ratio * N)` examples. The random order within a stratum and the ties
of "nearest" are the selector's keyed hash of the id (`selection.tie_keys`
with the run's seed).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import ccs
from mrmc_jax.methods import common
from mrmc_jax.methods import decision_distance

Array = jax.Array

MODES = ("ccs", "nearest")
# The distance and its settings (the warm-up artefact's own module).
STEP_SIZE = decision_distance.STEP_SIZE
MAX_STEPS = decision_distance.MAX_STEPS
boundary_distance = decision_distance.boundary_distance
settings = decision_distance.settings
check_settings = decision_distance.check_settings


def check_distance(distance: Any, max_steps: int) -> np.ndarray:
  """The `[N]` distances as int64, or a one-line ValueError."""
  common.check_ndim(distance, 1, "boundary distance", "[N]")
  common.check_finite(distance, "boundary distance")
  d = np.asarray(distance, np.float64)
  bad = (d != np.round(d)) | (d < 0) | (d > max_steps)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"boundary distance[{i}]={float(d[i])!r} is not "
                     f"allowed: distances are step counts, integers in "
                     f"[0, {max_steps}].")
  return d.astype(np.int64)


def boundary_select(distance: Any,
                    labels: Any,
                    ratio: float,
                    *,
                    num_classes: int,
                    class_balanced: bool = True,
                    mode: str = "ccs",
                    max_steps: int = MAX_STEPS,
                    seed: int = 0) -> np.ndarray:
  """Selects by distance to the boundary (module docstring).

  Args:
    distance: `[N]` step counts in `[0, max_steps]` (`boundary_distance`).
    labels: int `[N]` in `[0, num_classes)`.
    ratio: fraction to keep, in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas, or one global budget.
    mode: "ccs" (stratified by distance) or "nearest" (smallest first).
    max_steps: K, the cap of the distances (K + 1 strata).
    seed: int >= 0, the key of the hash order within a stratum and of the
      ties.

  Returns:
    bool `[N]` mask with exactly the per-class quotas (or the budget).

  Raises:
    ValueError: (one line) on bad shapes, distances that are not integers
      in `[0, max_steps]`, a bad ratio, mode or seed.
  """
  if mode not in MODES:
    raise ValueError(f"boundary_mode={mode!r} is not allowed: use one of "
                     f"{', '.join(MODES)}.")
  validation.check_int(max_steps, "max_steps", minimum=1)
  d = check_distance(distance, max_steps)
  common.check_ratio_labels(labels, ratio, num_classes, distance=d)
  validation.check_seed(seed)
  labels = np.asarray(labels, np.int64)
  if mode == "nearest":
    return common.select_top(-d.astype(np.float32), labels, ratio,
                             num_classes=num_classes,
                             class_balanced=class_balanced, seed=seed)[1]
  group, quotas, num_groups = common.group_quotas(labels, num_classes, ratio,
                                                  class_balanced)
  strata = max_steps + 1
  cell = group * strata + d
  sizes = np.bincount(cell, minlength=num_groups * strata)
  takes = ccs._ccs_allocate(sizes.reshape(num_groups, strata),  # pylint: disable=protected-access
                            quotas).reshape(-1)
  n = d.shape[0]
  keys = np.asarray(selection.tie_keys(jnp.arange(n, dtype=jnp.int32), seed))
  order = np.lexsort((keys, cell))
  starts = np.cumsum(sizes) - sizes
  pos = np.empty(n, np.int64)
  pos[order] = np.arange(n) - starts[cell[order]]
  return pos < takes[cell]


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  check_settings(art)
  distance = check_distance(art["boundary"], MAX_STEPS)
  mask = boundary_select(distance, labels, ratio, num_classes=num_classes,
                         class_balanced=opts.class_balanced,
                         mode=opts.boundary_mode, seed=opts.seed)
  # The scores are the distances (low = close to the boundary).
  return distance.astype(np.float32), np.asarray(mask)


OPTIONS = common.declare(
    common.Option("mode", str, "ccs", "boundary: CCS's stratified "
                  "fill over the distances (Boundary(CCS)) or the nearest "
                  "to the boundary (BoundarySet)", choices=MODES,
                  absent="ccs", legacy="boundary_mode"),
    scope="boundary")

METHOD = common.Method(
    "boundary", frozenset({"boundary"}), common.COMMON + OPTIONS, _select,
    "distance to the decision boundary in sign-gradient steps at the end "
    "of warm-up, CCS-stratified (Yang et al. 2024; a reproduction)")
