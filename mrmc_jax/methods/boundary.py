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

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import losses
from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import ccs
from mrmc_jax.methods import common

Array = jax.Array

# alpha, in model-input units (the pipeline's normalised pixels), and K.
STEP_SIZE = 0.05
MAX_STEPS = 10
MODES = ("ccs", "nearest")


def boundary_distance(apply_fn: Callable[[Any, Array], Array],
                      variables: Any,
                      images: Array,
                      labels: Array,
                      *,
                      step_size: float = STEP_SIZE,
                      max_steps: int = MAX_STEPS) -> Array:
  """Sign-gradient steps until the prediction leaves the label, capped.

  Args:
    apply_fn: pure `apply_fn(variables, x [B, ...]) -> logits [B, C]`, in
      evaluation mode (so the examples of a batch do not interact and the
      gradient of the summed loss is each example's own).
    variables: the model variables.
    images: float `[B, ...]` model inputs.
    labels: int `[B]`.
    step_size: alpha > 0, in input units.
    max_steps: K >= 1.

  Returns:
    int32 `[B]` in `[0, K]`: the first k with `argmax f(x_k) != y`, else K.

  Raises:
    ValueError: on bad shapes, a step size that is not a positive finite
      number, or K < 1.
  """
  validation.check_array(images, "images", "[B, ...]")
  common.check_ndim(labels, 1, "labels", "int [B]")
  common.check_number(step_size, "step_size", 0.0, float("inf"),
                      lo_open=True, hi_open=True)
  validation.check_int(max_steps, "max_steps", minimum=1)
  labels = jnp.asarray(labels)

  def loss_and_flip(x):
    logits = apply_fn(variables, x)
    loss = jnp.sum(losses.per_example_loss(logits, labels))
    return loss, jnp.argmax(logits, axis=-1) != labels

  grad_fn = jax.grad(loss_and_flip, has_aux=True)

  def body(k, carry):
    x, dist = carry
    g, flipped = grad_fn(x)
    # The first flip at x_k sets the distance k (K: not flipped yet).
    dist = jnp.where(flipped & (dist == max_steps), k, dist)
    return x + step_size * jnp.sign(g).astype(x.dtype), dist

  x, dist = jax.lax.fori_loop(
      0, max_steps, body,
      (jnp.asarray(images), jnp.full(labels.shape, max_steps, jnp.int32)))
  del x  # x_K: a flip there or never, both read K.
  return dist


def settings() -> np.ndarray:
  """float32 `[2]`: `(STEP_SIZE, MAX_STEPS)`, stored with the distances."""
  return np.array([STEP_SIZE, MAX_STEPS], np.float32)


def check_settings(art: dict[str, Any]) -> None:
  """Refuses distances recorded with other settings (one line)."""
  got = art.get("boundary_settings")
  if got is None or np.shape(got) != (2,) or not np.array_equal(
      np.asarray(got, np.float32), settings()):
    raise ValueError(
        f"the warm-up's boundary distances were recorded with (step size, "
        f"steps) = {None if got is None else np.asarray(got).tolist()}, not "
        f"{settings().tolist()}: delete warmup/artefacts.npz (the warm-up "
        "resumes from its last checkpoint and records them again).")


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
    common.Option("boundary_mode", str, "ccs", "boundary: CCS's stratified "
                  "fill over the distances (Boundary(CCS)) or the nearest "
                  "to the boundary (BoundarySet)", choices=MODES,
                  absent="ccs"),
)

METHOD = common.Method(
    "boundary", frozenset({"boundary"}),
    ("class_balanced", "boundary_mode", "seed"), _select,
    "distance to the decision boundary in sign-gradient steps at the end "
    "of warm-up, CCS-stratified (Yang et al. 2024; a reproduction)")
