"""Per-example losses, statistics and gradient norms.

All functions here return unreduced per-example values of shape `[B]` and
honour a padding `mask` (`bool[B]`, False for padding rows): padded rows get a
zero loss, zero statistics and no gradient.

A real row whose label is outside `[0, C)` is refused when the labels are
concrete; under `jax.jit` (values traced) `per_example_stats` flags it in
`bad_label` and gives it NaN statistics, never a finite loss; the train
steps leave it out of the loss and of recording and count it.
"""

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from mrmc_jax import checking
from mrmc_jax import validation

Array = jax.Array
PyTree = Any


def per_example_loss(logits: Array,
                     labels: Array,
                     mask: Optional[Array] = None) -> Array:
  """Unreduced softmax cross-entropy with integer labels.

  Args:
    logits: float `[B, C]` unnormalised log-probabilities.
    labels: int `[B]` class indices in `[0, C)`.
    mask: optional bool `[B]`; rows where it is False get loss 0.

  Returns:
    float32 `[B]` per-example cross-entropy.
  """
  validation.check_array(logits, "logits", "float [B, C]")
  validation.check_array(labels, "labels", "int [B]")
  logits = logits.astype(jnp.float32)
  return optax.losses.softmax_cross_entropy_with_integer_labels(
      logits, labels, where=None if mask is None else mask[:, None])


def masked_mean(values: Array, mask: Optional[Array]) -> Array:
  """Mean of `values [B]` over rows where `mask [B]` is True (0 if none);
  the other rows may hold anything, NaN included."""
  if mask is None:
    return jnp.mean(values)
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  return total / jnp.maximum(jnp.sum(mask.astype(values.dtype)), 1.0)


def bad_labels(labels: Array, num_classes: int,
               mask: Optional[Array] = None) -> Array:
  """bool `[B]`: real rows (`mask`) whose label is outside `[0, C)`."""
  bad = (labels < 0) | (labels >= num_classes)
  return bad if mask is None else bad & mask


def check_logits_labels(logits: Any, labels: Any, mask: Any = None,
                        loss: Any = None, *, labels_name: str = "labels",
                        loss_name: str = "loss") -> None:
  """Trace-time shape and dtype checks of one batch's outputs (and values
  when concrete); see `per_example_stats`.

  Raises:
    ValueError: naming the argument, its shape and the expected one.
  """
  validation.check_array(logits, "logits", "float [B, C]")
  validation.check_array(labels, labels_name, "int [B]")
  validation.check_rank(logits, "logits", 2,
                        "[B, C] (one row of class scores per example)")
  validation.check_float_dtype(logits, "logits")
  b, c = logits.shape
  validation.check_leading(labels, labels_name, b,
                           "int [B] class indices (one per row of logits)")
  validation.check_integer_dtype(labels, labels_name)
  if mask is not None:
    validation.check_leading(mask, "mask", b, "bool [B]")
    validation.check_mask_dtype(mask)
  if loss is not None:
    validation.check_leading(
        loss, loss_name, b,
        "float [B], the unreduced per-example loss (not its mean)")
    validation.check_float_dtype(loss, loss_name)
  validation.check_index_range(labels, labels_name, c, mask=mask,
                               what="C, the logits' last dimension")


def per_example_stats(logits: Array,
                      labels: Array,
                      mask: Optional[Array] = None,
                      loss: Optional[Array] = None) -> dict[str, Array]:
  """Loss statistics of one forward pass, per example.

  Usable inside any user step: pass the logits of the training forward pass
  (and, if the user trains on another loss, that per-example loss) and
  record the result with `trajectory.record`.

  Shapes and dtypes are checked at trace time, label values when concrete
  (outside `jax.jit`); under `jax.jit` the label range and finite logits
  and losses are checked by the checked mode (`checking.checked`). Under
  plain `jax.jit` a real row whose label is outside `[0, C)` is flagged in
  `bad_label` and gets NaN `loss`, `p_true`, `el2n` and margins (never a
  finite loss) and `correct=False`; `trajectory.record` drops flagged rows.

  Args:
    logits: float `[B, C]`.
    labels: int `[B]` in `[0, C)` on real rows.
    mask: optional bool `[B]`; padding rows get zeros everywhere.
    loss: optional float `[B]` per-example loss the caller computed (e.g.
      label-smoothed cross-entropy); default: cross-entropy of `logits`.
      An already-reduced (scalar) loss is refused.

  Returns:
    A dict of `[B]` arrays:
      `loss`: float32, `loss` if given, else cross-entropy.
      `correct`: bool, argmax equals the label.
      `p_true`: float32 softmax probability of the true class.
      `el2n`: float32 `||softmax(logits) - onehot(label)||_2` (EL2N score).
      `margin`: float32 logit margin `z_y - max_{k != y} z_k` (Pleiss et al.
        2020; its mean over epochs is the AUM).
      `p_margin`: float32 probability margin `p_y - max_{k != y} p_k` (the
        `accumulated_margin` of CCS's code). Both are 0 with one class.
      `bad_label`: bool, a real row whose label is outside `[0, C)`
      (possible only under `jax.jit`; `bad_labels`).

  Raises:
    ValueError: 1-D logits, `[B, 1]` or float labels, a mask or loss not
      `[B]` (e.g. a scalar loss), or (concrete) a label outside `[0, C)`.
  """
  check_logits_labels(logits, labels, mask, loss)
  checking.check_index_range(labels, "label", logits.shape[-1], mask=mask)
  checking.check_finite(logits, "logits", mask=mask)
  if loss is not None:
    checking.check_finite(loss, "loss", mask=mask)
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits)
  p = jnp.exp(log_p)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if loss is None:
    loss = -jnp.sum(onehot * log_p, axis=-1)
  p_true = jnp.sum(onehot * p, axis=-1)
  if num_classes > 1:
    is_true = onehot > 0
    margin = (jnp.sum(onehot * logits, axis=-1)
              - jnp.max(jnp.where(is_true, -jnp.inf, logits), axis=-1))
    p_margin = p_true - jnp.max(jnp.where(is_true, 0.0, p), axis=-1)
  else:
    margin = p_margin = jnp.zeros_like(p_true)
  stats = {
      "loss": jnp.asarray(loss, jnp.float32),
      "correct": jnp.argmax(logits, axis=-1) == labels,
      "p_true": p_true,
      "el2n": jnp.linalg.norm(p - onehot, axis=-1),
      "margin": margin,
      "p_margin": p_margin,
  }
  if mask is not None:
    stats = {k: jnp.where(mask, v, jnp.zeros_like(v)) for k, v in stats.items()}
  bad = bad_labels(labels, num_classes, mask)
  # NaN for every float statistic, False for the bool ones.
  stats = {k: jnp.where(bad, jnp.asarray(
      jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) else 0, v.dtype), v)
           for k, v in stats.items()}
  stats["bad_label"] = bad
  return stats


def make_per_example_loss_fn(
    apply_fn: Callable[[PyTree, Array], Array]
) -> Callable[..., Array]:
  """Turns a pure `apply_fn(variables, x) -> logits` into a per-example loss.

  The returned function applies the model to one example at a time under
  `jax.vmap`, so it can be differentiated per example (`jax.vmap(jax.grad)`).
  For models with BatchNorm pass an `apply_fn` in evaluation mode (running
  statistics), otherwise each example would be normalised by itself.

  Args:
    apply_fn: `apply_fn(variables, x)` with `x` of shape `[B, ...]` returning
      logits `[B, C]`.

  Returns:
    `loss_fn(variables, images [B, ...], labels [B], mask=None) -> [B]`.
  """

  def single(variables, x, y):
    logits = apply_fn(variables, x[None])
    return per_example_loss(logits, y[None])[0]

  def loss_fn(variables, images, labels, mask=None):
    losses = jax.vmap(single, in_axes=(None, 0, 0))(variables, images, labels)
    return losses if mask is None else jnp.where(mask, losses, 0.0)

  return loss_fn


def per_example_grad_norms(apply_fn: Callable[[PyTree, Array], Array],
                           variables: Mapping[str, PyTree],
                           images: Array,
                           labels: Array,
                           mask: Optional[Array] = None,
                           *,
                           wrt: str = "params") -> Array:
  """L2 norms of per-example loss gradients (GraNd), via `vmap(grad)`.

  Memory grows as `B * num_params`: choose the batch size accordingly.

  Args:
    apply_fn: pure `apply_fn(variables, x [B, ...]) -> logits [B, C]`, in
      evaluation mode for BatchNorm models.
    variables: the model variables; gradients are taken w.r.t.
      `variables[wrt]` only.
    images: `[B, ...]` inputs.
    labels: int `[B]`.
    mask: optional bool `[B]`; padded rows get norm 0.
    wrt: the collection to differentiate.

  Returns:
    float32 `[B]` gradient norms.
  """
  validation.check_array(images, "images", "[B, ...]")
  validation.check_array(labels, "labels", "int [B]")
  if not hasattr(variables, "keys") or wrt not in variables:
    raise ValueError(f"variables has type {type(variables).__name__}; "
                     f"expected a dict with a {wrt!r} entry (wrt={wrt!r}).")
  variables = dict(variables)
  rest = {k: v for k, v in variables.items() if k != wrt}

  def single(params, x, y):
    logits = apply_fn({**rest, wrt: params}, x[None])
    return per_example_loss(logits, y[None])[0]

  grads = jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(
      variables[wrt], images, labels)
  sq = sum(jnp.sum(jnp.reshape(g, (g.shape[0], -1)).astype(jnp.float32)**2,
                   axis=1) for g in jax.tree_util.tree_leaves(grads))
  norms = jnp.sqrt(sq)
  return norms if mask is None else jnp.where(mask, norms, 0.0)
