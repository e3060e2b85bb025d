"""Flax NNX train and evaluation steps with per-example statistics.

The NNX counterpart of `train_step.make_train_step`: your `nnx.Module`
(Dropout, BatchNorm and all) and your `nnx.Optimizer`, one forward pass for
the gradient and the `[B]` statistics. Two forms of one step:

* in place, NNX style: `nnx_train_step(model, optimizer, batch)` updates the
  model and the optimizer and returns the statistics. Call it inside
  `nnx.jit` (or any NNX-transformed function).
* pure, JAX style: `graphdef, state = nnx.split((model, optimizer))`, then
  `make_nnx_train_step(graphdef)` returns `step(state, batch) -> (state,
  stats)`, the protocol of `make_train_step`. It composes with `jax.jit`
  (state donated), `trajectory.make_recording_step` and sharded meshes
  (`sharding.replicate(state, mesh)`); write the state back into the objects
  with `nnx.update((model, optimizer), state)`.

The model is merged and split inside the traced function (never closed over
from outside it), which is what NNX's functional API requires; no deprecated
NNX API is used. The batch is the dict of `train_step` (`image`, `label`,
`id`, `mask`). Padding rows carry zero loss weight; `mask` is passed to the
model's `__call__` when it accepts one (so `nnx.BatchNorm(...)(x,
mask=mask)` leaves padding out of its statistics). Dropout draws from the
model's own `nnx.Rngs` streams, whose keys and counters are part of the
state, so a run is reproducible from its seeds.
"""

import inspect
from typing import Any, Callable, Optional

from flax import nnx
import jax
import jax.numpy as jnp

from mrmc_jax import losses
from mrmc_jax import train_step

Array = jax.Array
Batch = dict[str, Array]
# loss_fn(logits [B, C], labels [B]) -> per-example loss [B] (unreduced).
LossFn = Callable[[Array, Array], Array]


def _mode(model: nnx.Module, *, train: bool) -> nnx.Module:
  """A view of `model` in train or eval mode (Dropout, BatchNorm).

  The view shares the model's variables, so updates through it (BatchNorm
  statistics, RNG counters, parameters) land in the model.
  """
  return nnx.view(model, deterministic=not train, use_running_average=not train,
                  raise_if_not_found=False)


def _logits(model: nnx.Module, batch: Batch) -> Array:
  accepts_mask = "mask" in inspect.signature(type(model).__call__).parameters
  kwargs = {"mask": batch["mask"]} if accepts_mask else {}
  return model(batch["image"], **kwargs)


def _check_pair(obj: Any) -> tuple[nnx.Module, nnx.Optimizer]:
  if (not isinstance(obj, tuple) or len(obj) != 2
      or not isinstance(obj[0], nnx.Module)
      or not isinstance(obj[1], nnx.Optimizer)):
    raise ValueError(
        f"graphdef describes {type(obj).__name__}, not the pair "
        "(nnx.Module, nnx.Optimizer): split both together, "
        "`graphdef, state = nnx.split((model, optimizer))`.")
  return obj


def nnx_train_step(model: nnx.Module,
                   optimizer: nnx.Optimizer,
                   batch: Batch,
                   *,
                   loss_fn: Optional[LossFn] = None,
                   with_stats: bool = True) -> dict[str, Array]:
  """One training update in place; returns the batch's statistics.

  Runs the model in train mode (Dropout on, BatchNorm on batch statistics,
  whatever mode it was left in), differentiates the masked mean loss with
  respect to `optimizer.wrt` (e.g. `nnx.Param`) and applies
  `optimizer.update(model, grads)`. Call it inside `nnx.jit`.

  Args:
    model: the `nnx.Module`; `model(images[, mask=mask]) -> logits [B, C]`.
    optimizer: its `nnx.Optimizer` (`nnx.Optimizer(model, tx, wrt=...)`).
    batch: `image [B, ...]`, int `label [B]`, int `id [B]`, bool `mask [B]`.
    loss_fn: per-example loss `(logits [B, C], labels [B]) -> [B]`,
      unreduced as optax's losses. Default: softmax cross-entropy.
    with_stats: also return the `[B]` statistics (else only the scalars).

  Returns:
    The scalars `train_loss`, `train_accuracy` (means over valid rows) and,
    with `with_stats`, `[B]` arrays `id`, `mask`, `loss`, `correct`,
    `p_true`, `el2n`, `margin`, `p_margin` (see
    `losses.per_example_stats`), ready for
    `trajectory.record`.
  """
  mask = batch["mask"]
  train_model = _mode(model, train=True)

  def objective(m):
    logits = _logits(m, batch)
    # As make_train_step: a label outside [0, C) leaves the loss.
    mask = batch["mask"] & ~losses.bad_labels(batch["label"],
                                              logits.shape[-1])
    if loss_fn is None:
      per_ex = losses.per_example_loss(logits, batch["label"], mask)
    else:
      per_ex = jnp.where(mask, loss_fn(logits, batch["label"]), 0.0)
    return losses.masked_mean(per_ex, mask), (logits, per_ex)

  grads, (logits, per_ex) = nnx.grad(
      objective, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)(
          train_model)
  optimizer.update(train_model, grads)
  return train_step.step_outputs(logits, per_ex, batch, mask,
                                 user_loss=loss_fn is not None,
                                 with_stats=with_stats)


def make_nnx_train_step(
    graphdef: nnx.GraphDef,
    *,
    loss_fn: Optional[LossFn] = None,
    with_stats: bool = True,
) -> Callable[..., tuple[nnx.State, dict[str, Array]]]:
  """Returns a pure `step(state, batch, rng=None) -> (state, stats)`.

  `graphdef, state = nnx.split((model, optimizer))` gives both arguments;
  jit the step with the state donated,
  `jax.jit(make_recording_step(step), donate_argnums=(0, 1))`, and write
  the trained state back with `nnx.update((model, optimizer), state)`.

  Args:
    graphdef: the graph definition of the pair `(model, optimizer)`.
    loss_fn: see `nnx_train_step`.
    with_stats: see `nnx_train_step`.

  Returns:
    `step(state, batch, rng=None)`; `state` is the `nnx.State` of the pair,
    `stats` as in `nnx_train_step`. `rng` exists for the protocol of
    `make_train_step` and must be None: NNX modules draw from their own
    `nnx.Rngs` (seed them, e.g. `nnx.Rngs(0, dropout=1)`).
  """

  def step(state, batch: Batch, rng: Optional[Array] = None):
    if rng is not None:
      raise ValueError(
          "rng is not allowed in an NNX step: the model draws Dropout masks "
          "from its own nnx.Rngs streams (part of the state); seed them when "
          "building the model, e.g. nnx.Rngs(0, dropout=1), and call the "
          "step without rng.")
    model, optimizer = _check_pair(nnx.merge(graphdef, state))
    stats = nnx_train_step(model, optimizer, batch, loss_fn=loss_fn,
                           with_stats=with_stats)
    return nnx.state((model, optimizer)), stats

  return step


def make_nnx_eval_step(
    graphdef: nnx.GraphDef) -> Callable[[nnx.State, Batch], dict[str, Array]]:
  """Returns a pure `eval_step(state, batch) -> stats` (eval mode).

  Args:
    graphdef: the graph definition of the model, or of the pair `(model,
      optimizer)` (then the state of `nnx.split((model, optimizer))` works
      as it is).

  Returns:
    A function returning the `[B]` statistics of `losses.per_example_stats`
    plus `id` and `mask`; padding rows are zeroed. Dropout is off and
    BatchNorm uses its running averages; nothing in the state changes.
  """

  def eval_step(state, batch):
    obj = nnx.merge(graphdef, state)
    model = obj[0] if isinstance(obj, tuple) else obj
    if not isinstance(model, nnx.Module):
      raise ValueError(f"graphdef describes {type(obj).__name__}: pass the "
                       "graphdef of an nnx.Module or of (model, optimizer).")
    logits = _logits(_mode(model, train=False), batch)
    out = losses.per_example_stats(logits, batch["label"], batch["mask"])
    out["id"] = batch["id"]
    out["mask"] = batch["mask"] & ~out["bad_label"]
    return out

  return eval_step
