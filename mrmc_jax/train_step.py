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
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrmc_jax import losses
from mrmc_jax import validation

Array = jax.Array
PyTree = Any
Batch = dict[str, Array]
# apply_fn(variables, images, *, train, mask) -> (logits [B, C],
#                                                 new batch_stats or None)
ApplyFn = Callable[..., tuple[Array, Optional[PyTree]]]
# loss_fn(logits [B, C], labels [B]) -> per-example loss [B] (unreduced).
LossFn = Callable[[Array, Array], Array]


class BatchStatsTrainState(train_state.TrainState):
  """flax's own `TrainState` plus BatchNorm statistics (flax's recipe).

  Attributes (besides flax's `step`, `apply_fn`, `params`, `tx`,
  `opt_state`):
    batch_stats: BatchNorm running statistics; `{}` for models without them.
  """
  batch_stats: PyTree

  @property
  def variables(self) -> dict[str, PyTree]:
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v


def create_train_state(variables: dict[str, PyTree],
                       tx: optax.GradientTransformation
                       ) -> BatchStatsTrainState:
  """Builds flax's `TrainState` (with `batch_stats`) from model variables.

  Args:
    variables: `{"params": ..., ["batch_stats": ...]}` from `model.init`.
    tx: the optax optimiser; its state is initialised here.

  Returns:
    A `BatchStatsTrainState` with `step` an int32 0, `apply_fn=None` and
    `tx=None`: pass the apply function and `tx` to `make_train_step`. (A
    `tx` kept in the state is static pytree data, so a new optimiser object
    would mean a new jit signature; use flax's `TrainState.create` when you
    want it there.)

  Raises:
    ValueError: `variables` is not a dict with `params`.
  """
  if not hasattr(variables, "keys") or "params" not in variables:
    raise ValueError(
        f"variables has type {type(variables).__name__}"
        + (f" with keys {sorted(variables.keys())}"
           if hasattr(variables, "keys") else "")
        + "; expected the dict of model.init(...) with a 'params' entry.")
  params = variables["params"]
  return BatchStatsTrainState(
      step=jnp.zeros((), jnp.int32),
      apply_fn=None,
      params=params,
      tx=None,
      opt_state=tx.init(params),
      batch_stats=variables.get("batch_stats", {}))


def module_apply_fn(model: nn.Module,
                    rng_collections: Sequence[str] = ("dropout",)) -> ApplyFn:
  """Adapts a Linen classifier to the `apply_fn` protocol of this module.

  The model is called as `model.apply(variables, x, train=train[, mask=mask])`;
  `mask` is passed only if the model's `__call__` accepts it (so BatchNorm can
  leave padding rows out of its batch statistics). In training mode with a
  `batch_stats` collection the updated statistics are returned. With an
  `rng`, each collection in `rng_collections` gets its own key folded from it
  (Dropout's `"dropout"` by default; add e.g. `"drop_path"`).

  Args:
    model: a Linen module whose `__call__(x, train, ...)` returns logits.
    rng_collections: the PRNG collections the model draws from in training.

  Returns:
    `apply_fn(variables, images, *, train, mask=None, rng=None,
    return_features=False) -> (outputs, new_stats)`, where outputs are
    `logits` or, with `return_features`, `(logits, features)`.
  """
  accepts_mask = "mask" in inspect.signature(model.__call__).parameters
  rng_collections = tuple(rng_collections)

  def apply_fn(variables, images, *, train, mask=None, rng=None,
               return_features=False):
    kwargs = {"train": train}
    if return_features:
      kwargs["return_features"] = True
    if accepts_mask and mask is not None:
      kwargs["mask"] = mask
    if rng is not None:
      kwargs["rngs"] = {c: jax.random.fold_in(rng, i)
                        for i, c in enumerate(rng_collections)}
    if train and "batch_stats" in variables:
      logits, updates = model.apply(
          variables, images, mutable=["batch_stats"], **kwargs)
      return logits, updates["batch_stats"]
    return model.apply(variables, images, **kwargs), None

  return apply_fn


def _variables(state: Any) -> dict[str, PyTree]:
  """`{"params", ["batch_stats"]}` of any state with those attributes."""
  variables = {"params": state.params}
  batch_stats = getattr(state, "batch_stats", None)
  if batch_stats:
    variables["batch_stats"] = batch_stats
  return variables


def _optimizer(state: Any, tx: Optional[optax.GradientTransformation]
               ) -> optax.GradientTransformation:
  own = getattr(state, "tx", None)
  if tx is None and own is None:
    raise ValueError("make_train_step got tx=None and the state has no `tx` "
                     "field: pass the optax optimiser as tx.")
  if tx is not None and own is not None and own is not tx:
    raise ValueError("make_train_step got a tx and the state carries another "
                     "one in its `tx` field: pass tx=None to use the state's.")
  return own if tx is None else tx


def check_state(state: Any, fn: str = "make_train_step's step") -> None:
  """Refuses a state without `params`, `opt_state` and `replace` (a dict)."""
  missing = [a for a in ("params", "opt_state", "replace")
             if not hasattr(state, a)]
  if missing:
    raise ValueError(
        f"{fn} got a state of type {type(state).__name__}; expected "
        "flax's TrainState (e.g. create_train_state(variables, tx)) or any "
        "pytree with the attributes params, opt_state and replace (it lacks "
        f"{', '.join(missing)}).")


def check_batch(batch: Any, *, need_id: bool = True,
                fn: str = "make_train_step's step") -> None:
  """Trace-time checks of a batch's keys, shapes and dtypes.

  The `[B]` arrays `label`, `mask` (and `id`) must share the leading size
  of `image`; labels and ids are integers, the mask is bool. Values
  (label and id ranges) are checked later, where C and N are known.

  Raises:
    ValueError: a missing key (naming the keys the batch has), or an
      array whose shape or dtype is not the expected one.
  """
  if not hasattr(batch, "keys"):
    raise ValueError(f"{fn} got a batch of type {type(batch).__name__}; "
                     "expected a dict with 'image', 'label', 'id', 'mask'.")
  needed = ("image", "label", "mask") + (("id",) if need_id else ())
  missing = [k for k in needed if k not in batch]
  if missing:
    raise ValueError(
        f"{fn}: the batch has keys {sorted(batch.keys())} but needs "
        f"{list(needed)}; missing {missing} (rename your pipeline's keys, "
        "e.g. {'image': x, 'label': y, 'id': ids, 'mask': valid}).")
  if not np.ndim(batch["image"]):
    raise ValueError(f"batch['image'] has shape {np.shape(batch['image'])}; "
                     "expected [B, ...].")
  b = np.shape(batch["image"])[0]
  validation.check_leading(batch["label"], "batch['label']", b,
                           "int [B] class indices")
  validation.check_integer_dtype(batch["label"], "batch['label']")
  validation.check_leading(batch["mask"], "batch['mask']", b, "bool [B]")
  validation.check_mask_dtype(batch["mask"], "batch['mask']")
  if need_id:
    validation.check_leading(batch["id"], "batch['id']", b,
                             "int [B] global example ids")
    validation.check_integer_dtype(batch["id"], "batch['id']")


def make_train_step(
    apply_fn: ApplyFn,
    tx: Optional[optax.GradientTransformation] = None,
    *,
    loss_fn: Optional[LossFn] = None,
    with_stats: bool = True,
) -> Callable[..., tuple[Any, dict[str, Array]]]:
  """Returns a pure `step(state, batch, rng=None) -> (state, stats)`.

  Jit it with the state donated: `jax.jit(step, donate_argnums=0)`. To record
  the statistics into a trajectory in the same jitted call (required when
  the batch is sharded over several devices), wrap it with
  `trajectory.make_recording_step`.

  The state is any pytree with `params` and `opt_state` fields and a
  `replace` method (flax's `flax.training.train_state.TrainState` and its
  subclasses, e.g. `BatchStatsTrainState`, or a pytree of your own).
  Optional fields: `batch_stats` (BatchNorm; updated when present and
  non-empty), `step` (incremented), `tx` (the optimiser, used when `tx` is
  None).

  Args:
    apply_fn: see `module_apply_fn`.
    tx: the optax optimiser (learning-rate schedule, weight decay included);
      None to use `state.tx`. Giving both, different, is an error.
    loss_fn: per-example loss `loss_fn(logits [B, C], labels [B]) -> [B]`,
      unreduced as optax's losses (e.g. label-smoothed cross-entropy). The
      step averages it over valid rows and records it as the `loss`
      statistic. Default: softmax cross-entropy with integer labels.
    with_stats: if True, `stats` holds the per-example statistics of the
      training forward pass; if False only the scalar metrics (a plain step,
      the reference for measuring what the statistics cost).

  Returns:
    `step(state, batch, rng=None)`. `rng` (optional key) drives Dropout and
    other stochastic layers; the step folds in `state.step`, so one key per
    run suffices. `stats` always holds the scalars `train_loss` and
    `train_accuracy` (means over valid rows) and `num_bad_labels`; with
    `with_stats` also `[B]` arrays `id`, `mask`, `loss`, `correct`,
    `p_true`, `el2n`, `margin`, `p_margin`, `bad_label` (see
    `losses.per_example_stats`). A real row whose label is outside `[0, C)` (only possible under
    `jax.jit`) is left out of the loss and gradient, gets `mask=False` (so
    `record` counts no visit for it and `check_visits` names its id) and
    is counted in `num_bad_labels`. The step raises `ValueError` when traced
    on a batch without the keys `image`, `label`, `mask` (and `id`), on
    `label`/`mask`/`id` not `[B]` (e.g. `[B, 1]`), float labels, 1-D
    logits or a `loss_fn` output that is not `[B]` (an already-reduced
    loss); called outside `jax.jit` also on labels outside `[0, C)`. Under
    `jax.jit` the label range and finite logits are checked by the
    checked mode (`checking.checked`).
  """

  def step(state, batch: Batch, rng: Optional[Array] = None):
    check_state(state)
    check_batch(batch, need_id=with_stats)
    optimizer = _optimizer(state, tx)
    padding = batch["mask"]
    variables = _variables(state)
    if rng is not None and hasattr(state, "step"):
      rng = jax.random.fold_in(rng, state.step)

    def objective(params):
      # rng is passed only when given, so apply_fns without one still work.
      logits, new_stats = apply_fn(
          {**variables, "params": params}, batch["image"], train=True,
          mask=padding, **({} if rng is None else {"rng": rng}))
      # A label outside [0, C) (only possible when traced) leaves the loss.
      mask = padding & ~losses.bad_labels(batch["label"], logits.shape[-1])
      if loss_fn is None:
        per_ex = losses.per_example_loss(logits, batch["label"], mask)
      else:
        per_ex = loss_fn(logits, batch["label"])
        losses.check_logits_labels(
            logits, batch["label"], mask, per_ex,
            labels_name="batch['label']", loss_name="loss_fn's output")
        per_ex = jnp.where(mask, per_ex, 0.0)
      return losses.masked_mean(per_ex, mask), (logits, per_ex, new_stats)

    grads, (logits, per_ex, new_bs) = jax.grad(objective, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    changes = {"params": optax.apply_updates(state.params, updates),
               "opt_state": opt_state}
    if hasattr(state, "step"):
      changes["step"] = state.step + 1
    if new_bs is not None and "batch_stats" in variables:
      changes["batch_stats"] = new_bs
    new_state = state.replace(**changes)
    return new_state, step_outputs(logits, per_ex, batch, padding,
                                   user_loss=loss_fn is not None,
                                   with_stats=with_stats)

  return step


def step_outputs(logits: jax.Array, per_ex: jax.Array, batch: dict,
                 mask: jax.Array, *, user_loss: bool,
                 with_stats: bool) -> dict[str, jax.Array]:
  """A train step's outputs from its forward pass (gradients stopped).

  Args:
    logits: float `[B, C]`.
    per_ex: float `[B]`, the per-example training loss.
    batch: the batch (its `label` `[B]` and `id` `[B]`).
    mask: bool `[B]`, True for real rows.
    user_loss: whether `per_ex` is a user's loss (then it is the recorded
      `loss`; otherwise the statistics' own cross-entropy is).
    with_stats: add the `[B]` statistics, `id` and `mask`.

  Returns:
    `train_loss` and `train_accuracy` (masked means over the rows with a
    label in `[0, C)`), `num_bad_labels` (int32, real rows whose label is
    outside `[0, C)`: left out of the loss, the means and recording), plus
    the `[B]` statistics with `with_stats`, whose `mask` is False on such
    rows.
  """
  stats = losses.per_example_stats(
      jax.lax.stop_gradient(logits), batch["label"], mask,
      loss=jax.lax.stop_gradient(per_ex) if user_loss else None)
  mask = mask & ~stats["bad_label"]
  out = {
      "train_loss": losses.masked_mean(stats["loss"], mask),
      "train_accuracy": losses.masked_mean(
          stats["correct"].astype(jnp.float32), mask),
      "num_bad_labels": jnp.sum(stats["bad_label"], dtype=jnp.int32),
  }
  if with_stats:
    out.update(stats)
    out["id"] = batch["id"]
    out["mask"] = mask
  return out


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
    check_batch(batch, fn="make_eval_step's eval_step")
    mask = batch["mask"]
    if with_features:
      (logits, feats), _ = apply_fn(
          variables, batch["image"], train=False, mask=mask,
          return_features=True)
    else:
      logits, _ = apply_fn(variables, batch["image"], train=False, mask=mask)
    out = losses.per_example_stats(logits, batch["label"], mask)
    out["id"] = batch["id"]
    out["mask"] = mask & ~out["bad_label"]
    if with_features:
      out["features"] = jnp.where(mask[:, None], feats.astype(jnp.float32), 0)
    return out

  return eval_step
