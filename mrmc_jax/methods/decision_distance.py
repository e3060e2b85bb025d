"""Distance to the decision boundary: the `boundary` warm-up artefact.

The warm-up records it at its end when a method needs it (the runner's
artefact code, like `uncertainty`); `methods.boundary` selects from it (its
docstring gives the rule, the constants and their source).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import losses
from mrmc_jax import validation
from mrmc_jax.methods import common

Array = jax.Array

# alpha, in model-input units (the pipeline's normalised pixels), and K.
STEP_SIZE = 0.05
MAX_STEPS = 10


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
