"""MRMC-R: MRMC with the proxy-based diversity regulariser (Algorithm 1).

1. C' = the top `rho * |C|` examples by the MRMC score (same quotas rule).
2. A proxy output layer (linear softmax head) is trained with optax SGD on the
   penultimate features of C' only.
3. For every example, `phi_reg = exp(-proxy_loss)`: the proxy's probability
   of the true class, high when C' already covers the example.
4. `phi = phi_mrmc - gamma * phi_reg`; C = C' plus the top of D \\ C' by phi.

The proxy starts from zero weights (a convex problem, so the result does not
depend on an initialisation seed; only the batch order does). `rho = 1`
gives exactly the MRMC mask.

`score_scale` sets how `phi_mrmc` meets `gamma * phi_reg`: `"none"` is the
paper's sum as written, where `phi_reg` lies in (0, 1] but `phi_mrmc` is in
loss units; `"max"` divides `phi_mrmc` by its largest value first, so gamma
weighs two quantities on the same [0, 1] scale.
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax

from mrmc_jax import losses
from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import mrmc

Array = jax.Array

SCORE_SCALES = ("none", "max")


def _proxy_losses(features: Array, labels: Array, train_idx: np.ndarray,
                  num_classes: int, *, learning_rate: float, batch_size: int,
                  epochs: int, seed: int) -> Array:
  """Trains the proxy head on `train_idx` and returns its loss on all `[N]`."""
  features = jnp.asarray(features, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  n_real = int(train_idx.size)
  steps = -(-n_real // batch_size)
  tx = optax.sgd(learning_rate)
  params = {"w": jnp.zeros((features.shape[1], num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32)}
  train_idx = jnp.asarray(train_idx, jnp.int32)

  def batch_loss(p, idx, mask):
    logits = features[idx] @ p["w"] + p["b"]
    return losses.masked_mean(
        losses.per_example_loss(logits, labels[idx], mask), mask)

  def epoch(carry, e):
    p, opt = carry
    perm = jax.random.permutation(jax.random.fold_in(jax.random.key(seed), e),
                                  train_idx)
    pad = steps * batch_size - n_real
    idx = jnp.concatenate([perm, jnp.zeros(pad, jnp.int32)]).reshape(
        steps, batch_size)
    mask = (jnp.arange(steps * batch_size) < n_real).reshape(steps, batch_size)

    def step(carry, xs):
      p, opt = carry
      g = jax.grad(batch_loss)(p, *xs)
      upd, opt = tx.update(g, opt, p)
      return (optax.apply_updates(p, upd), opt), None

    return jax.lax.scan(step, (p, opt), (idx, mask))[0], None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(
      epoch, c, jnp.arange(epochs)))((params, tx.init(params)))
  return losses.per_example_loss(features @ params["w"] + params["b"], labels)


def mrmc_r_select(scores: Array,
                  features: Array,
                  labels: Array,
                  ratio: float,
                  *,
                  num_classes: int,
                  rho: float = 0.3,
                  gamma: float = 2.0,
                  learning_rate: float = 0.01,
                  batch_size: int = 512,
                  epochs: int = 10,
                  seed: int = 0,
                  class_balanced: bool = True,
                  score_scale: str = "none") -> tuple[Array, dict[str, Array]]:
  """Selects the MRMC-R core-set.

  Args:
    scores: float `[N]` MRMC scores (`phi_mrmc`).
    features: float `[N, D]` penultimate-layer features.
    labels: int `[N]` in `[0, num_classes)`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    rho: fraction of the core-set taken by MRMC alone (C'), in (0, 1].
    gamma: weight of the regulariser, >= 0.
    learning_rate, batch_size, epochs: proxy training (SGD) settings; the
      paper's are 0.01, 512, 10.
    seed: seeds the proxy's batch order.
    class_balanced: per-class quotas for both stages, or global top-k.
    score_scale: `"none"` (the paper's formula) or `"max"`; see the module
      docstring.

  Returns:
    `(mask, info)`: bool `[N]` mask, and a dict with `stage1` (bool `[N]`,
    C'), `phi_reg` and `phi` (float `[N]`).

  Raises:
    ValueError: on bad ratio, rho, gamma, shapes or labels, before any work.
  """
  validation.check_ratio(ratio)
  validation.check_ratio(rho, "rho")
  if not np.isfinite(gamma) or gamma < 0:
    raise ValueError(f"gamma={gamma!r} is not allowed: it must be a finite "
                     "number >= 0.")
  if score_scale not in SCORE_SCALES:
    raise ValueError(f"score_scale={score_scale!r} is not allowed: use one "
                     f"of {SCORE_SCALES}.")
  validation.check_int(batch_size, "batch_size")
  validation.check_int(epochs, "epochs", minimum=0)
  validation.check_scores(scores)
  if np.ndim(features) != 2:
    raise ValueError(f"features has shape {np.shape(features)}; expected "
                     "[N, D].")
  validation.check_same_length(scores=scores, features=features, labels=labels)
  validation.check_labels(labels, num_classes)

  n = np.shape(scores)[0]
  # |C'| = floor(rho * |C|). Selecting at ratio |C'| / N gives exactly that
  # budget, split over classes like the final one; with rho = 1 it is the
  # MRMC selection itself.
  k_stage1 = selection.checked_budget(rho,
                                      selection.checked_budget(ratio, n))
  if k_stage1 > 0:
    stage1 = selection.select_mask_host(
        scores, labels, k_stage1 / n, num_classes=num_classes,
        class_balanced=class_balanced, tie_seed=seed)
  else:
    stage1 = jnp.zeros(n, jnp.bool_)
  train_idx = np.flatnonzero(np.asarray(stage1))
  if train_idx.size:
    proxy_loss = _proxy_losses(
        features, labels, train_idx, num_classes, learning_rate=learning_rate,
        batch_size=batch_size, epochs=epochs, seed=seed)
  else:
    proxy_loss = jnp.full((n,), jnp.log(float(num_classes)), jnp.float32)
  phi_reg = jnp.exp(-proxy_loss)
  phi_mrmc = jnp.asarray(scores, jnp.float32)
  if score_scale == "max":
    phi_mrmc = phi_mrmc / jnp.maximum(jnp.max(jnp.abs(phi_mrmc)), 1e-12)
  phi = phi_mrmc - gamma * phi_reg
  mask = selection.select_mask_host(phi, labels, ratio, num_classes=num_classes,
                               class_balanced=class_balanced,
                               priority=stage1, tie_seed=seed)
  return mask, {"stage1": stage1, "phi_reg": phi_reg, "phi": phi}


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  mask, info = mrmc_r_select(
      mrmc.mrmc_from_artefacts(art, opts), art["features"], labels, ratio,
      num_classes=num_classes, rho=opts.rho, gamma=opts.gamma,
      learning_rate=opts.proxy_learning_rate,
      batch_size=opts.proxy_batch_size, epochs=opts.proxy_epochs,
      seed=opts.seed, class_balanced=opts.class_balanced,
      score_scale=opts.score_scale)
  # The scores are the final ranking phi, not the MRMC input.
  return np.asarray(info["phi"], np.float32), np.asarray(mask)


OPTIONS = common.declare(
    common.Option("rho", float, 0.3, "MRMC-R: fraction of the core-set "
                  "taken by MRMC alone", low=0.0, high=1.0, low_open=True,
                  legacy="rho", paper=0.3),
    common.Option("gamma", float, 2.0, "MRMC-R: weight of the regulariser",
                  low=0.0, legacy="gamma", paper=2.0),
    common.Option("score_scale", str, "none", "MRMC-R: none (the paper's "
                  "formula) or max (MRMC scores scaled to max 1)",
                  choices=SCORE_SCALES, legacy="score_scale", paper="none"),
    common.Option("proxy_learning_rate", float, 0.01, "MRMC-R: proxy "
                  "head's SGD learning rate", low=0.0, low_open=True,
                  legacy="proxy_learning_rate"),
    common.Option("proxy_batch_size", int, 512, "MRMC-R: proxy head's "
                  "batch size", low=1, legacy="proxy_batch_size"),
    common.Option("proxy_epochs", int, 10, "MRMC-R: proxy head's epochs",
                  low=0, legacy="proxy_epochs"),
    scope="mrmc_r")

METHOD = common.Method(
    "mrmc_r", frozenset({"trajectory", "features"}),
    common.COMMON + mrmc.MRMC_OPTIONS + OPTIONS,
    _select, "MRMC plus a proxy-head diversity regulariser (Algorithm 1)",
    role="proposed", curves=mrmc.fitted_curves)
