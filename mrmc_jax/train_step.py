"""Pure train and evaluation steps that return per-example statistics.

The statistics come from the same forward pass that produces the gradient,
so recording them costs one softmax over the logits and no second pass.

A batch is a dict of arrays with a static leading size `B`:
  `image`: float `[B, ...]` model inputs.
  `label`: int32 `[B]` class indices.
  `id`: int32 `[B]` global example ids (0..N-1).
  `mask`: bool `[B]`, False for padding rows.
Padding rows carry zero weight in the loss (so no gradient), are excluded
from BatchNorm batch statistics when the model accepts a `mask`, and come back
with zeroed statistics and `mask=False`, which the trajectory buffer skips.
"""

import inspect
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mrmc_jax import losses

Array = jax.Array
PyTree = Any
Batch = dict[str, Array]
# apply_fn(variables, images, *, train, mask) -> (logits [B, C],
#                                                 new batch_stats or None)
ApplyFn = Callable[..., tuple[Array, Optional[PyTree]]]


class TrainState(flax.struct.PyTreeNode):
  """The whole training state as one pytree (donatable, checkpointable).

  Attributes:
    step: int32 scalar, the number of updates applied.
    params: the trainable parameters.
    batch_stats: BatchNorm running statistics; `{}` for models without them.
    opt_state: the optax optimiser state.
  """
  step: Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState

  @property
  def variables(self) -> dict[str, PyTree]:
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v


def create_train_state(variables: dict[str, PyTree],
                       tx: optax.GradientTransformation) -> TrainState:
  """Builds a `TrainState` from initialised model variables."""
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params))


def module_apply_fn(model: nn.Module) -> ApplyFn:
  """Adapts a Linen classifier to the `apply_fn` protocol of this module.

  The model is called as `model.apply(variables, x, train=train[, mask=mask])`;
  `mask` is passed only if the model's `__call__` accepts it (so BatchNorm can
  leave padding rows out of its batch statistics). In training mode with a
  `batch_stats` collection the updated statistics are returned.

  Args:
    model: a Linen module whose `__call__(x, train, ...)` returns logits.

  Returns:
    `apply_fn(variables, images, *, train, mask=None, return_features=False)
    -> (outputs, new_stats)`, where outputs are `logits` or, with
    `return_features`, `(logits, features)`.
  """
  accepts_mask = "mask" in inspect.signature(model.__call__).parameters

  def apply_fn(variables, images, *, train, mask=None, return_features=False):
    kwargs = {"train": train}
    if return_features:
      kwargs["return_features"] = True
    if accepts_mask and mask is not None:
      kwargs["mask"] = mask
    if train and "batch_stats" in variables:
      logits, updates = model.apply(
          variables, images, mutable=["batch_stats"], **kwargs)
      return logits, updates["batch_stats"]
    return model.apply(variables, images, **kwargs), None

  return apply_fn


def make_train_step(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    *,
    with_stats: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
  """Returns a pure `step(state, batch) -> (state, stats)`.

  Jit it with the state donated: `jax.jit(step, donate_argnums=0)`.

  Args:
    apply_fn: see `module_apply_fn`.
    tx: the optax optimiser (learning-rate schedule, weight decay included).
    with_stats: if True, `stats` holds the per-example statistics of the
      training forward pass; if False only the scalar metrics (a plain step,
      the reference for measuring what the statistics cost).

  Returns:
    `step(state, batch)`. `stats` always holds the scalars `train_loss` and
    `train_accuracy` (means over valid rows); with `with_stats` also `[B]`
    arrays `id`, `mask`, `loss`, `correct`, `p_true`, `el2n` (see
    `losses.per_example_stats`).
  """

  def step(state: TrainState, batch: Batch):
    mask = batch["mask"]

    def loss_fn(params):
      variables = {"params": params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
      logits, new_stats = apply_fn(
          variables, batch["image"], train=True, mask=mask)
      per_ex = losses.per_example_loss(logits, batch["label"], mask)
      return losses.masked_mean(per_ex, mask), (logits, new_stats)

    grads, (logits, new_bs) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=new_bs if new_bs is not None else state.batch_stats,
        opt_state=opt_state)
    logits = jax.lax.stop_gradient(logits)
    per_ex = losses.per_example_stats(logits, batch["label"], mask)
    out = {
        "train_loss": losses.masked_mean(per_ex["loss"], mask),
        "train_accuracy": losses.masked_mean(
            per_ex["correct"].astype(jnp.float32), mask),
    }
    if with_stats:
      out.update(per_ex)
      out["id"] = batch["id"]
      out["mask"] = mask
    return new_state, out

  return step


def make_eval_step(
    apply_fn: ApplyFn,
    *,
    with_features: bool = False,
) -> Callable[[dict[str, PyTree], Batch], dict[str, Array]]:
  """Returns a pure `eval_step(variables, batch) -> stats` (eval mode).

  Args:
    apply_fn: see `module_apply_fn`. With `with_features`, it must accept
      `return_features=True` and then return `((logits, features), None)`.
    with_features: also return the penultimate `features [B, D]`.

  Returns:
    A function returning the `[B]` statistics of `losses.per_example_stats`
    plus `id` and `mask` (and `features`); padding rows are zeroed.
  """

  def eval_step(variables, batch):
    mask = batch["mask"]
    if with_features:
      (logits, feats), _ = apply_fn(
          variables, batch["image"], train=False, mask=mask,
          return_features=True)
    else:
      logits, _ = apply_fn(variables, batch["image"], train=False, mask=mask)
    out = losses.per_example_stats(logits, batch["label"], mask)
    out["id"] = batch["id"]
    out["mask"] = mask
    if with_features:
      out["features"] = jnp.where(mask[:, None], feats.astype(jnp.float32), 0)
    return out

  return eval_step
