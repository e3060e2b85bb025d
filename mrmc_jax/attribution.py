"""Loss-reduction attribution between probe examples (paper eqs. 5-9).

The paper's attribution of the loss reduction of example i to training on
example j is

  a_{j,i} = eta * sum_t <grad l_i(theta_{t-1}), grad l_j(theta_{t-1})>
                  * 1[z_j in B_t],

and MRMC rests on two assumptions about it: (a) the matrix is about the same
whether the model trains on a core-set or on all data (stability), and (b) it
is about symmetric, a_{j,i} ~= a_{i,j}, so that an example's own loss
reduction measures its contribution to the others. This module measures both
on a probe set of m examples.

Accumulator (pure, jit-able; `init_attribution`, `accumulate`,
`make_attributed_train_step`). `A[j, i]`, float32 `[m, m]`, is the
contribution of probe j to probe i. On every training step t it adds

  A[j, i] += eta_t / (|B_t| * (1 - beta)) * <g_i, g_j>   for probes j in B_t,

with g_i = grad l_i(theta_{t-1}) the per-example gradient of probe i at the
parameters before the update, eta_t the learning rate the optimiser uses for
that update (read from the same optax schedule), |B_t| the number of valid
(non-padding) rows of the batch and beta the SGD momentum (0 for plain SGD).
What this is, exactly, and what it approximates:

* Plain SGD on the batch-mean loss (beta = 0): the update is
  -eta_t / |B_t| * sum_{j in B_t} g_j, so eta_t / |B_t| * <g_i, g_j> is the
  first-order reduction of l_i due to j's share of the update. Exact to first
  order; the closed-form test checks it to float32 precision. The paper's
  formula has no 1 / |B| (its eta absorbs it); the factor is the same on
  every full batch and only reweights the padded last batch of an epoch.
* SGD with (heavy-ball or Nesterov) momentum beta: the momentum is a linear
  filter, so j's share g_j / |B_t| injected at step t moves the parameters by
  eta_{t+k} beta^k g_j / |B_t| at every later step t + k, in total
  ~= eta_t / (1 - beta) * g_j / |B_t| (Nesterov sums to the same). We credit
  that whole long-run effect at step t and evaluate it against g_i at
  theta_{t-1}, which approximates (1) g_i drifting over the ~1 / (1 - beta)
  steps of the momentum's memory, (2) eta changing over them (negligible for
  a cosine over thousands of steps) and (3) the tail of the last ~10 updates,
  which training ends before applying. The exact alternative (a per-probe
  momentum trace of shape [m, params] and m probe gradients on EVERY step)
  would put gradient work on steps without probes. 1 / (1 - beta) scales
  every entry alike, so it cancels in every normalised metric below.
* Weight decay is part of the update but no example's share of it, so it is
  left out. Adam is not covered (its per-coordinate preconditioning is not a
  scalar step size); the measurement runner refuses it.
* Probe gradients are taken in evaluation mode (BatchNorm running statistics)
  on the unaugmented image, one example at a time: a per-example gradient in
  training-mode BatchNorm would normalise an example by itself. The u_j used
  for a probe j in the batch is this same gradient, not j's row of the batch
  gradient. For models without BatchNorm or dropout trained without
  augmentation (the MLP on Fashion-MNIST measured in docs/results) the two
  coincide exactly.

Cost: on a step whose batch holds at least one probe, m per-example
gradients (memory m * num_params) and their m x m Gram matrix; on any other
step nothing, because the gradient work sits in the true branch of a
`jax.lax.cond` on "any probe in the batch" (the test counts executions of
that branch with a host callback). Each probe is visited once per epoch, so
at most m steps per epoch pay.

Metrics (host numpy; formulas also in `FORMULAS`, written into report.json):

* normalise: A_hat = A / ||A||_F, which removes the overall scale (a
  core-set run takes fewer, differently scheduled steps);
* relative error of B against A: sum_ij |B_hat_ij - A_hat_ij| /
  sum_ij |A_hat_ij|, i.e. mean absolute difference over mean magnitude;
* stability error: that, core-set matrix against the full-data matrix;
* order noise floor: that, a second full-data run from the same
  initialisation but another data order against the first; a stability
  error near this floor means the core-set changes the matrix no more than
  reshuffling the data does;
* symmetry error: that, A_hat^T against A_hat.
Each comes in two variants: over all entries, and over the off-diagonal
entries only (the diagonal zeroed BEFORE normalising); and, since the paper
does not give its formula, also with the Frobenius norm in place of the sum
of absolute values (`||B_hat - A_hat||_F / ||A_hat||_F`), which weighs
entries by their square and so is dominated by the diagonal. The diagonal
a_jj = sum eta ||g_j||^2 is positive and usually far larger than the
off-diagonal terms, so with it the normalisation is set by the diagonal,
symmetry is flattered (a diagonal is trivially symmetric but fills the
denominator) and stability mostly compares gradient norms; the off-diagonal
variant measures the cross terms the MRMC argument is about.
An elementwise relative error |b_ij - a_ij| / |a_ij| is not used: the
off-diagonal entries take both signs and many are near zero (nearly
orthogonal gradients), so the ratio explodes on those entries, its mean is
set by the smallest |a_ij|, and adding an epsilon makes the number depend on
an arbitrary constant. The ratio of means is finite whenever A != 0 and is
invariant to rescaling both matrices.

MRMC criterion check: over the probes, the Spearman correlation of each
probe's contribution to the others c_j = sum_{i != j} A[j, i] with (1) its
MRMC score, fitted (`scoring.mrmc_scores`) to its per-epoch training-pass
losses recorded in the same run, (2) its self-attribution A[j, j], and (3)
the reduction it received from the other probes r_j = sum_{i != j} A[i, j]
(which equals c_j for a symmetric matrix).

`run_attribution(config, workdir)` is the measurement behind
`experiments/attribution.py` (full data and core-sets, matrices, heatmaps,
report.json); it is the only function here that reads a config.
"""

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.stats

from mrmc_jax import losses
from mrmc_jax import train_step

Array = jax.Array
PyTree = Any
Batch = dict[str, Array]
# loss_fn(params, image, label) -> scalar loss of ONE example (no batch axis).
ExampleLossFn = Callable[[PyTree, Array, Array], Array]


# --------------------------------------------------------------------------
# The accumulator.


class AttributionState(flax.struct.PyTreeNode):
  """What the accumulator carries from step to step (a donatable pytree).

  Attributes:
    matrix: float32 `[m, m]`; `matrix[j, i]` is the accumulated contribution
      of probe j to the loss reduction of probe i.
    visits: int32 `[m]`, the number of steps whose batch held probe j.
    losses: float32 `[m, E]`; `losses[j, k]` is probe j's training-pass loss
      at its k-th visit (its loss in epoch k, since an epoch visits every
      example once); NaN where not visited yet.
    probe_steps: int32 scalar, steps that ran the gradient branch.
    steps: int32 scalar, all steps seen.
  """
  matrix: Array
  visits: Array
  losses: Array
  probe_steps: Array
  steps: Array


def init_attribution(num_probes: int, num_epochs: int) -> AttributionState:
  """An empty accumulator for `num_probes` probes over `num_epochs` epochs."""
  if num_probes < 1 or num_epochs < 1:
    raise ValueError(f"num_probes={num_probes} and num_epochs={num_epochs} "
                     "are not allowed: both must be >= 1.")
  return AttributionState(
      matrix=jnp.zeros((num_probes, num_probes), jnp.float32),
      visits=jnp.zeros((num_probes,), jnp.int32),
      losses=jnp.full((num_probes, num_epochs), jnp.nan, jnp.float32),
      probe_steps=jnp.zeros((), jnp.int32),
      steps=jnp.zeros((), jnp.int32))


def probe_membership(batch_ids: Array, batch_mask: Array,
                     probe_ids: Array) -> Array:
  """Which probes are (valid rows) in a batch.

  Args:
    batch_ids: int `[B]` global ids of the batch rows.
    batch_mask: bool `[B]`, False on padding rows (whose id must not count).
    probe_ids: int `[m]` global ids of the probes.

  Returns:
    bool `[m]`: probe j is a valid row of the batch.
  """
  return jnp.any(_matches(batch_ids, batch_mask, probe_ids), axis=1)


def gather_probe_values(batch_ids: Array, batch_mask: Array, probe_ids: Array,
                        values: Array) -> Array:
  """Picks each probe's row of a per-example batch statistic.

  Args:
    batch_ids: int `[B]`.
    batch_mask: bool `[B]`.
    probe_ids: int `[m]`.
    values: float `[B]`, e.g. the training-pass losses.

  Returns:
    float32 `[m]`: the value of probe j's row, 0 if j is not in the batch
    (ids are unique within a batch, so at most one row matches).
  """
  match = _matches(batch_ids, batch_mask, probe_ids)
  return jnp.sum(jnp.where(match, values[None].astype(jnp.float32), 0.0),
                 axis=1)


def _matches(batch_ids, batch_mask, probe_ids):
  # [m, B]; O(m * B) compares, negligible next to a training step.
  return ((probe_ids[:, None].astype(jnp.int32)
           == batch_ids[None, :].astype(jnp.int32)) & batch_mask[None, :])


def per_example_grads(loss_fn: ExampleLossFn, params: PyTree, images: Array,
                      labels: Array) -> PyTree:
  """Gradients of every example's own loss, via `vmap(grad)`.

  Args:
    loss_fn: `loss_fn(params, image, label) -> scalar` for one example.
    params: the parameters to differentiate.
    images: `[m, ...]` inputs.
    labels: `[m]` targets.

  Returns:
    A pytree like `params` whose leaves have a leading axis of size m.
  """
  return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0, 0))(
      params, images, labels)


def gradient_gram(grads: PyTree) -> Array:
  """The `[m, m]` matrix of inner products <g_i, g_j> over all parameters.

  Computed in float32 at full matmul precision (TPUs default to bf16 passes),
  leaf by leaf, so no `[m, num_params]` concatenation is materialised.
  """
  gram = None
  for g in jax.tree_util.tree_leaves(grads):
    g = jnp.reshape(g, (g.shape[0], -1)).astype(jnp.float32)
    term = jnp.einsum("ip,jp->ij", g, g,
                      precision=jax.lax.Precision.HIGHEST)
    gram = term if gram is None else gram + term
  return gram


def accumulate(attr: AttributionState,
               loss_fn: ExampleLossFn,
               params: PyTree,
               probe_images: Array,
               probe_labels: Array,
               in_batch: Array,
               step_size: Array,
               probe_losses: Optional[Array] = None) -> AttributionState:
  """Adds one training step's attribution (pure, jit-able).

  `A[j, i] += step_size * <g_i, g_j>` for every probe j with `in_batch[j]`
  and every probe i, where g are the gradients of `loss_fn` at `params`,
  which must be the parameters BEFORE the step's update. The gradient work
  runs under `jax.lax.cond(any(in_batch))`: a step without probes costs a
  few compares.

  Args:
    attr: the accumulator.
    loss_fn: `loss_fn(params, image, label) -> scalar`, one example's loss.
    params: parameters before the update.
    probe_images: `[m, ...]` probe inputs.
    probe_labels: `[m]` probe targets.
    in_batch: bool `[m]`, probe j contributed to this step's update.
    step_size: float scalar, the weight of one example's gradient in the
      update: eta_t / |B_t| for plain SGD on a batch mean (see the module
      docstring for momentum).
    probe_losses: optional float `[m]`, the probes' training-pass losses of
      this step, stored at column `visits[j]` for the probes in the batch.

  Returns:
    The updated accumulator; `visits`, `probe_steps` and `steps` counted.
  """
  m = attr.matrix.shape[0]
  any_probe = jnp.any(in_batch)
  weight = jnp.asarray(step_size, jnp.float32) * in_batch.astype(jnp.float32)

  def with_probes(matrix):
    gram = gradient_gram(per_example_grads(loss_fn, params, probe_images,
                                           probe_labels))
    # Row j (the contributor) is scaled by its membership; every column i
    # (the receiver) gets it, probe i in the batch or not.
    return matrix + weight[:, None] * gram

  matrix = jax.lax.cond(any_probe, with_probes, lambda a: a, attr.matrix)
  stored = attr.losses
  if probe_losses is not None:
    # Probes not in the batch write out of range, which `drop` discards.
    col = jnp.where(in_batch, attr.visits, stored.shape[1])
    stored = stored.at[jnp.arange(m), col].set(
        probe_losses.astype(jnp.float32), mode="drop")
  return attr.replace(
      matrix=matrix,
      visits=attr.visits + in_batch.astype(jnp.int32),
      losses=stored,
      probe_steps=attr.probe_steps + any_probe.astype(jnp.int32),
      steps=attr.steps + 1)


def make_attributed_train_step(
    apply_fn: train_step.ApplyFn,
    tx: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    probe_ids: Any,
    probe_images: Any,
    probe_labels: Any,
    *,
    momentum: float = 0.0,
) -> Callable[[train_step.TrainState, AttributionState, Batch],
              tuple[train_step.TrainState, AttributionState,
                    dict[str, Array]]]:
  """A training step that also accumulates the probes' attribution.

  Jit it with both states donated:
  `jax.jit(step, donate_argnums=(0, 1))`.

  Args:
    apply_fn: see `train_step.module_apply_fn`.
    tx: the optimiser; the update is `train_step.make_train_step`'s.
    lr_schedule: the learning-rate schedule inside `tx`
      (`optim.make_schedule`); eta_t = `lr_schedule(state.step)`, which is
      optax's count for that update.
    probe_ids: int `[m]` global ids of the probes; each must be in the
      training set, or its row of the matrix stays 0.
    probe_images: float `[m, ...]` probe inputs, preprocessed like training
      batches (unaugmented); closed over as constants.
    probe_labels: int `[m]`.
    momentum: the SGD momentum beta inside `tx` (0 for plain SGD); every
      entry is scaled by 1 / (1 - beta), the long-run step of a momentum
      filter (module docstring).

  Returns:
    `step(state, attr, batch) -> (state, attr, stats)`, where `stats` holds
    the scalars `train_loss`, `train_accuracy` (means over valid rows) and
    `probes_in_batch` (int32).

  Raises:
    ValueError: momentum outside [0, 1), or probe arrays of unequal length.
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum={momentum!r} is not allowed: it must lie in "
                     "[0, 1).")
  probe_ids = jnp.asarray(probe_ids, jnp.int32)
  probe_images = jnp.asarray(probe_images, jnp.float32)
  probe_labels = jnp.asarray(probe_labels, jnp.int32)
  m = probe_ids.shape[0]
  if probe_images.shape[0] != m or probe_labels.shape != (m,):
    raise ValueError(f"probe_ids, probe_images and probe_labels must have "
                     f"the same leading size; got {m}, "
                     f"{probe_images.shape[0]}, {probe_labels.shape}.")
  train = train_step.make_train_step(apply_fn, tx, with_stats=True)
  batch_loss = losses.make_per_example_loss_fn(
      lambda variables, x: apply_fn(variables, x, train=False)[0])

  def step(state, attr, batch):
    mask = batch["mask"]
    in_batch = probe_membership(batch["id"], mask, probe_ids)
    num_valid = jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)
    step_size = lr_schedule(state.step) / (num_valid * (1.0 - momentum))
    rest = {"batch_stats": state.batch_stats} if state.batch_stats else {}

    def loss_fn(params, x, y):
      return batch_loss({"params": params, **rest}, x[None], y[None])[0]

    new_state, stats = train(state, batch)
    probe_losses = gather_probe_values(batch["id"], mask, probe_ids,
                                       stats["loss"])
    attr = accumulate(attr, loss_fn, state.params, probe_images, probe_labels,
                      in_batch, step_size, probe_losses)
    return new_state, attr, {
        "train_loss": stats["train_loss"],
        "train_accuracy": stats["train_accuracy"],
        "probes_in_batch": jnp.sum(in_batch.astype(jnp.int32)),
    }

  return step


# --------------------------------------------------------------------------
# Probes.


def choose_probes(labels: np.ndarray, m: int, seed: int,
                  candidates: Optional[np.ndarray] = None) -> np.ndarray:
  """Picks m probe ids, stratified by class, seeded.

  Classes share the m probes as evenly as the candidates allow (a class with
  too few candidates gives its share to the others, in a seeded class
  order); within a class the probes are a seeded random draw. For core-set
  runs pass as `candidates` the ids present in EVERY training set compared
  (the intersection of the core-sets), so every matrix is over the same
  probes and each probe is trained on in each setting.

  Args:
    labels: int `[N]`, the label of every global id.
    m: number of probes, >= 1.
    seed: non-negative int.
    candidates: optional int `[K]` ids to choose from; default all N.

  Returns:
    int64 `[m]` distinct ids, ordered by (label, id), the order of the
    heatmaps' axes.

  Raises:
    ValueError: m < 1, or fewer than m distinct candidates.
  """
  labels = np.asarray(labels)
  cand = (np.arange(labels.shape[0], dtype=np.int64) if candidates is None
          else np.unique(np.asarray(candidates, np.int64)))
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
    raise ValueError(f"m={m!r} is not allowed: it must be an int >= 1.")
  if m > cand.size:
    raise ValueError(f"m={m} probes are not available: only {cand.size} "
                     "candidate examples.")
  # A stream of its own ("probe" in hex), apart from the other uses of seed.
  rng = np.random.default_rng([int(seed), 0x70726F6265])
  classes = np.unique(labels[cand])
  pools = {c: rng.permutation(cand[labels[cand] == c]) for c in classes}
  quota = {c: 0 for c in classes}
  order = rng.permutation(classes)
  left = m
  while left:
    # Round robin over the classes that still have candidates.
    for c in order:
      if left and quota[c] < pools[c].size:
        quota[c] += 1
        left -= 1
  picked = np.concatenate([pools[c][:quota[c]] for c in classes])
  return picked[np.lexsort((picked, labels[picked]))].astype(np.int64)


# --------------------------------------------------------------------------
# Metrics (host numpy).

FORMULAS = {
    "attribution": (
        "A[j, i] = sum_t eta_t / (|B_t| * (1 - momentum)) * "
        "<grad l_i(theta_{t-1}), grad l_j(theta_{t-1})> * 1[z_j in B_t] "
        "(row j contributes to column i; |B_t| = valid rows of the batch)"),
    "normalise": "A_hat = A / ||A||_F (Frobenius norm)",
    "relative_error": ("err(B, A) = sum_{i,j} |B_hat_ij - A_hat_ij| / "
                       "sum_{i,j} |A_hat_ij| (keys all_entries, "
                       "off_diagonal)"),
    "frobenius_relative_error": (
        "||B_hat - A_hat||_F / ||A_hat||_F (keys frobenius_*); weighs "
        "entries by their square, so the diagonal dominates"),
    "stability_error": "err(A_coreset, A_full)",
    "order_noise_floor": ("err(A_full_order<k>, A_full): full data, same "
                          "initialisation, another data order"),
    "symmetry_error": "err(A^T, A) = sum |A_hat - A_hat^T| / sum |A_hat|",
    "off_diagonal": ("the same with the diagonal of A set to 0 before "
                     "normalising (sums over i != j)"),
    "contribution": "c_j = sum_{i != j} A[j, i]",
    "received": "r_j = sum_{i != j} A[i, j]",
    "mrmc_score": ("phi_j = q_j * (1 - w_j^-R) (selection.score) fitted to "
                   "probe j's per-epoch training-pass losses of the same run"),
    "spearman": ("scipy.stats.spearmanr over the m probes: c vs phi, c vs "
                 "diag(A), c vs r"),
}

# Paper, relative errors on 50 CIFAR-100 examples over 10 epochs.
PAPER = {
    "setup": "50 CIFAR-100 examples, ResNet-18, 10 epochs (ICML 2025)",
    "stability_error": {"coreset_0.3": 0.27, "coreset_0.5": 0.26,
                        "coreset_0.7": 0.22},
    "symmetry_error": {"coreset_0.3": 0.16, "coreset_0.5": 0.19,
                       "coreset_0.7": 0.22, "full": 0.24},
}


def _prepared(matrix, include_diagonal: bool) -> np.ndarray:
  a = np.asarray(matrix, np.float64)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"expected a square [m, m] matrix, got {a.shape}")
  if not include_diagonal:
    a = a.copy()
    np.fill_diagonal(a, 0.0)
  return a


def normalise(matrix: Any, *, include_diagonal: bool = True) -> np.ndarray:
  """`A / ||A||_F` (float64 `[m, m]`); the diagonal zeroed first if asked.

  Raises:
    ValueError: A is not square, or is all zeros (nothing to normalise).
  """
  a = _prepared(matrix, include_diagonal)
  norm = np.linalg.norm(a)
  if not np.isfinite(norm) or norm == 0:
    raise ValueError("cannot normalise an all-zero or non-finite matrix.")
  return a / norm


NORMS = ("l1", "frobenius")


def relative_error(b: Any, a: Any, *, include_diagonal: bool = True,
                   norm: str = "l1") -> float:
  """Relative error of B against A after Frobenius normalisation.

  Args:
    b: `[m, m]` the matrix compared.
    a: `[m, m]` the reference.
    include_diagonal: False compares only the off-diagonal entries (both
      diagonals zeroed before normalising).
    norm: "l1", the headline: `sum |B_hat - A_hat| / sum |A_hat|` (mean
      absolute difference over mean magnitude, every entry counts alike);
      "frobenius": `||B_hat - A_hat||_F / ||A_hat||_F`, which weighs entries
      by their square, so large entries (the diagonal) dominate it. The
      paper does not say which it used; both are reported.

  Returns:
    The error, in [0, 2]; 0 iff B is a positive multiple of A.

  Raises:
    ValueError: an unknown `norm`, or as `normalise`.
  """
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r} is not allowed: use one of {NORMS}.")
  a_hat = normalise(a, include_diagonal=include_diagonal)
  b_hat = normalise(b, include_diagonal=include_diagonal)
  if norm == "frobenius":
    return float(np.linalg.norm(b_hat - a_hat))  # ||A_hat||_F = 1
  return float(np.sum(np.abs(b_hat - a_hat)) / np.sum(np.abs(a_hat)))


def stability_error(coreset_matrix: Any, full_matrix: Any, *,
                    include_diagonal: bool = True, norm: str = "l1") -> float:
  """Relative error of a core-set run's matrix against the full-data one."""
  return relative_error(coreset_matrix, full_matrix,
                        include_diagonal=include_diagonal, norm=norm)


def symmetry_error(matrix: Any, *, include_diagonal: bool = True,
                   norm: str = "l1") -> float:
  """Relative error of `A^T` against `A` (0 iff A is symmetric)."""
  a = np.asarray(matrix)
  return relative_error(a.T, a, include_diagonal=include_diagonal, norm=norm)


def contributions(matrix: Any) -> np.ndarray:
  """c_j = sum_{i != j} A[j, i]: what probe j gave the other probes `[m]`."""
  a = _prepared(matrix, include_diagonal=False)
  return a.sum(axis=1)


def received(matrix: Any) -> np.ndarray:
  """r_j = sum_{i != j} A[i, j]: what probe j got from the others `[m]`."""
  a = _prepared(matrix, include_diagonal=False)
  return a.sum(axis=0)


def spearman(x: Any, y: Any) -> dict[str, Optional[float]]:
  """Spearman's rho and its p-value; None where undefined (constant input)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  ok = np.isfinite(x) & np.isfinite(y)
  if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
    return {"rho": None, "p": None, "n": int(ok.sum())}
  res = scipy.stats.spearmanr(x[ok], y[ok])
  return {"rho": _finite(res.statistic), "p": _finite(res.pvalue),
          "n": int(ok.sum())}


def _finite(x) -> Optional[float]:
  x = float(x)
  return x if np.isfinite(x) else None


def matrix_summary(matrix: Any) -> dict[str, float]:
  """Descriptive numbers of one matrix, for reading the errors."""
  a = np.asarray(matrix, np.float64)
  off = a[~np.eye(a.shape[0], dtype=bool)]
  return {
      "frobenius_norm": float(np.linalg.norm(a)),
      # Share of ||A||_F^2 on the diagonal: near 1 means the all-entries
      # metrics mostly compare self-attributions.
      "diagonal_energy_share": float(np.sum(np.diag(a)**2)
                                     / max(np.sum(a**2), 1e-300)),
      "off_diagonal_negative_fraction": float(np.mean(off < 0)),
  }


def probe_criterion(matrix: Any, mrmc_score: Optional[np.ndarray]
                    ) -> dict[str, Any]:
  """The MRMC criterion check of one setting (module docstring)."""
  a = np.asarray(matrix, np.float64)
  c = contributions(a)
  out = {
      "self_attribution_vs_contribution": spearman(np.diag(a), c),
      "received_vs_contribution": spearman(received(a), c),
      "mrmc_score_vs_contribution": (
          spearman(mrmc_score, c) if mrmc_score is not None else
          {"rho": None, "p": None, "n": 0}),
  }
  return out


def plot_heatmaps(matrices: Mapping[str, np.ndarray], probe_labels: np.ndarray,
                  out_dir: str, titles: Optional[Mapping[str, str]] = None
                  ) -> None:
  """One heatmap per setting plus `all.png`, on ONE colour scale.

  Each matrix is Frobenius-normalised; the symmetric colour range is the
  99th percentile of |off-diagonal entries| over all settings, so the
  cross terms are visible and the (larger) diagonal saturates. Probes are
  in the given order (by class); lines mark class boundaries.
  """
  # pylint: disable=g-import-not-at-top,protected-access
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from mrmc_jax import plots

  titles = titles or {}
  hats = {k: normalise(v) for k, v in matrices.items()}
  off = np.concatenate([h[~np.eye(h.shape[0], dtype=bool)]
                        for h in hats.values()])
  vmax = float(np.percentile(np.abs(off), 99)) if off.size else 1.0
  vmax = vmax if vmax > 0 else 1.0
  labels = np.asarray(probe_labels)
  bounds = np.flatnonzero(np.diff(labels)) + 0.5
  starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1])
  ends = np.concatenate([starts[1:], [labels.size]])
  centres = (starts + ends - 1) / 2

  def draw(ax, name, hat, ylabel=True):
    im = ax.imshow(hat, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                   interpolation="nearest")
    for b in bounds:
      ax.axhline(b, color="k", lw=0.4)
      ax.axvline(b, color="k", lw=0.4)
    ax.set_xticks(centres, [str(c) for c in labels[starts]], fontsize=7)
    ax.set_yticks(centres, [str(c) for c in labels[starts]], fontsize=7)
    ax.set_title(titles.get(name, name), fontsize=9)
    ax.set_xlabel("i (receiver), class")
    if ylabel:
      ax.set_ylabel("j (contributor), class")
    return im

  cbar = "A / ||A||_F (same scale in all panels; clipped)"
  for name, hat in hats.items():
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    im = draw(ax, name, hat)
    fig.colorbar(im, ax=ax, label=cbar)
    plots._save(fig, os.path.join(out_dir, f"{name}.png"))
  fig, axes = plt.subplots(1, len(hats), figsize=(4.2 * len(hats) + 1, 4.6),
                           squeeze=False, layout="constrained")
  for k, (ax, (name, hat)) in enumerate(zip(axes[0], hats.items())):
    im = draw(ax, name, hat, ylabel=k == 0)
  fig.colorbar(im, ax=list(axes[0]), label=cbar, shrink=0.8)
  plots._save(fig, os.path.join(out_dir, "all.png"))


# --------------------------------------------------------------------------
# The measurement (reads the config).


def parse_ratios(value: Any) -> list[float]:
  """`"0.3,0.5,0.7"` (or a sequence) -> checked floats in (0, 1]."""
  from mrmc_jax import validation  # pylint: disable=g-import-not-at-top
  items = ([v.strip() for v in value.split(",") if v.strip()]
           if isinstance(value, str) else list(value))
  try:
    ratios = [float(v) for v in items]
  except (TypeError, ValueError):
    raise ValueError(f"attribution.ratios={value!r} is not allowed: use "
                     "comma-separated numbers in (0, 1].") from None
  if not ratios or len(set(ratios)) != len(ratios):
    raise ValueError(f"attribution.ratios={value!r} is not allowed: name at "
                     "least one ratio, each once.")
  for r in ratios:
    validation.check_ratio(r, "attribution.ratios entry")
  return ratios


def setting_names(ratios: Sequence[float], reference_runs: int = 0
                  ) -> list[str]:
  """`full`, `coreset_<ratio>` in the given order, then `full_order<k>`."""
  return (["full"] + [f"coreset_{r:g}" for r in ratios]
          + [f"full_order{k}" for k in range(1, reference_runs + 1)])


def validate_config(config) -> None:
  """Raises `ValueError` (one line) on a bad field, before any work."""
  from mrmc_jax import experiment  # pylint: disable=g-import-not-at-top
  from mrmc_jax import methods  # pylint: disable=g-import-not-at-top
  from mrmc_jax import validation  # pylint: disable=g-import-not-at-top
  att = config.attribution
  validation.check_positive_int(att.num_probes, "attribution.num_probes",
                                minimum=2)
  validation.check_positive_int(att.epochs, "attribution.epochs")
  validation.check_positive_int(att.seed, "attribution.seed", minimum=0)
  validation.check_positive_int(att.reference_runs,
                                "attribution.reference_runs", minimum=0)
  parse_ratios(att.ratios)
  if config.train.optimizer != "sgd":
    raise ValueError(f"train.optimizer={config.train.optimizer!r} is not "
                     "allowed for the attribution: use sgd (the step size "
                     "of one example's gradient is defined for SGD with "
                     "momentum only).")
  methods.check_method(att.method)
  # The shared checks, with the method under study as the selection method
  # (so its warm-up needs are checked).
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.selection.method = att.method
  experiment.validate_config(copy)


def run_attribution(config, workdir: str) -> dict[str, Any]:
  """Measures stability and symmetry of the attribution; writes the report.

  Stages (each resumable; rerunning with the same workdir redoes nothing
  finished):
  1. One warm-up on all data if `attribution.method` needs it
     (`experiment.run_warmup`, in `warmup/` and `checkpoints/warmup`).
  2. A core-set per ratio in `attribution.ratios` from that warm-up
     (`experiment.select_coreset`, in `coresets/ratio_<r>/coreset/`).
  3. Probes: `attribution.num_probes` ids stratified by class among the
     examples present in every core-set (`probes.json`).
  4. Settings `full`, `coreset_<r>` and `attribution.reference_runs`
     reference runs `full_order<k>` (full data, data order seeded by
     `seed + k`): a fresh model (the same initialisation for all) trained
     `attribution.epochs` epochs on its training set with the attributed
     step, the optimiser and cosine schedule of `config.train` over the
     setting's own step count (as `train.budget="epochs"`). Orbax
     checkpoints of (state, accumulator) after every epoch in
     `checkpoints/<setting>`, removed when the setting finishes; then
     `trajectories/<setting>.npy` (probe losses `[m, E]`),
     `summaries/<setting>.json` and, last, `matrices/<setting>.npy`,
     whose presence marks the setting finished.
  5. `heatmaps/<setting>.png`, `heatmaps/all.png` and `report.json`.

  Args:
    config: a config like `configs/attribution.py`.
    workdir: the output folder (claimed like `experiment`'s).

  Returns:
    The report dict (as written to report.json).
  """
  from mrmc_jax import experiment  # pylint: disable=g-import-not-at-top
  from mrmc_jax import methods  # pylint: disable=g-import-not-at-top
  from mrmc_jax import workdir as wd  # pylint: disable=g-import-not-at-top

  validate_config(config)
  config_json = json.loads(config.to_json_best_effort())
  # How a job is launched is not part of what it computes (as in
  # experiment.train_and_evaluate).
  config_json.pop("distributed", None)
  wd.claim(workdir, config_json)
  att = config.attribution
  ratios = parse_ratios(att.ratios)
  ctx = experiment.make_context(config, workdir)
  labels = ctx.data.train.labels
  opts = experiment.selection_options(config)
  need = methods.needs([att.method], opts)
  art = experiment.run_warmup(ctx, need) if need else {}
  masks, cache = {}, {}
  for r in ratios:
    cctx = dataclasses.replace(
        ctx, workdir=os.path.join(workdir, "coresets", f"ratio_{r:g}"))
    _, masks[r], _ = experiment.select_coreset(cctx, att.method, art, r, opts,
                                               cache=cache, plot=False)
  everywhere = np.logical_and.reduce(list(masks.values()))
  probes = choose_probes(labels, att.num_probes, att.seed,
                         np.flatnonzero(everywhere))
  probe_labels = labels[probes].astype(np.int32)
  probes_path = os.path.join(workdir, "probes.json")
  if os.path.exists(probes_path):
    stored = wd.read_json(probes_path)["ids"]
    if stored != probes.tolist():
      raise RuntimeError(f"{probes_path} holds other probes than this run "
                         "chose; the workdir is inconsistent.")
  elif wd.is_writer():
    wd.write_json(probes_path, {
        "ids": probes.tolist(), "labels": probe_labels.tolist(),
        "num_candidates": int(everywhere.sum()),
        "candidates": "examples in every core-set of attribution.ratios"})
  probe_images = _probe_images(ctx, probes)

  # (name, training ids or None for all, seed of the data order).
  settings = [("full", None, config.seed)]
  names = setting_names(ratios, att.reference_runs)
  for r, name in zip(ratios, names[1:]):
    settings.append((name, np.flatnonzero(masks[r]), config.seed))
  for k in range(1, att.reference_runs + 1):
    settings.append((f"full_order{k}", None, config.seed + k))
  results, compiled = {}, {}
  eval_fn = jax.jit(train_step.make_eval_step(ctx.apply_fn))
  for name, ids, order_seed in settings:
    results[name] = _run_setting(ctx, name, ids, probes, probe_images,
                                 probe_labels, att.epochs, order_seed,
                                 compiled, eval_fn)
  report = _report(config, ctx, probes, probe_labels, everywhere, results,
                   ratios, methods.resolve(att.method, opts)[1])
  if wd.is_writer():
    sym = report["symmetry_error"]
    titles = {k: (f"{k}\nsymmetry error {sym[k]['all_entries']:.2f} "
                  f"(off-diagonal {sym[k]['off_diagonal']:.2f})")
              for k in results}
    plot_heatmaps({k: v["matrix"] for k, v in results.items()}, probe_labels,
                  os.path.join(workdir, "heatmaps"), titles)
    wd.write_json(os.path.join(workdir, "report.json"), report)
    print(format_report(report), flush=True)
  return report


def _probe_images(ctx, probes: np.ndarray) -> np.ndarray:
  """The probes' inputs as the pipeline preprocesses them (no augmentation)."""
  from mrmc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  # One batch of exactly m rows, ascending ids; every process builds all of
  # it, since the probes are constants of the step.
  ds = input_pipeline.eval_dataset(ctx.data.train, batch_size=len(probes),
                                   mean=ctx.data.mean, std=ctx.data.std,
                                   ids=probes)
  batch = next(ds.as_numpy_iterator())
  pos = np.searchsorted(batch["id"], probes)
  return batch["image"][pos]


def _run_setting(ctx, name: str, ids: Optional[np.ndarray],
                 probes: np.ndarray, probe_images: np.ndarray,
                 probe_labels: np.ndarray, epochs: int, order_seed: int,
                 compiled: dict[Any, Any], eval_fn) -> dict[str, Any]:
  """Trains one setting with the attributed step (or reads it back).

  The initialisation always comes from `ctx.config.seed`; the data order of
  the epochs from `order_seed` (a reference run differs from `full` in that
  alone).
  """
  # The runner's checkpoint and progress helpers are reused, not copied.
  # pylint: disable=g-import-not-at-top,protected-access
  from mrmc_jax import experiment
  from mrmc_jax import input_pipeline
  from mrmc_jax import metrics_io
  from mrmc_jax import optim
  from mrmc_jax import sharding
  from mrmc_jax import workdir as wd
  import orbax.checkpoint as ocp

  paths = {k: os.path.join(ctx.workdir, k, f"{name}.{ext}") for k, ext in (
      ("matrices", "npy"), ("trajectories", "npy"), ("summaries", "json"))}
  if os.path.exists(paths["matrices"]):
    return {"matrix": np.load(paths["matrices"]),
            "losses": np.load(paths["trajectories"]),
            "summary": wd.read_json(paths["summaries"])}
  tr = ctx.config.train
  n = ctx.data.train.num_examples if ids is None else len(ids)
  spe = input_pipeline.num_batches(n, tr.batch_size)
  total_steps = epochs * spe
  if total_steps not in compiled:
    # Settings of equal length (full data and its reference runs) share the
    # compiled step: the schedule is a closure, so a new one recompiles.
    tx = ctx.make_tx(total_steps, spe)
    # The schedule inside tx (Context.make_tx passes these same fields).
    schedule = optim.make_schedule(**ctx.schedule_options(total_steps, spe))
    compiled[total_steps] = (tx, jax.jit(make_attributed_train_step(
        ctx.apply_fn, tx, schedule, probes, probe_images, probe_labels,
        momentum=float(tr.momentum or 0.0)), donate_argnums=(0, 1)))
  tx, step = compiled[total_steps]
  data_ctx = ctx
  if order_seed != ctx.config.seed:
    cfg = ml_collections.ConfigDict(ctx.config.to_dict())
    cfg.seed = order_seed
    data_ctx = dataclasses.replace(ctx, config=cfg)

  # seed_offset=1 as experiment.train_coreset: every setting starts from the
  # same initialisation, so the matrices differ only by the training set.
  # Kept on the host after the first setting (the step donates its input);
  # the SGD state at step 0 does not depend on the schedule.
  if "initial_state" not in compiled:
    compiled["initial_state"] = sharding.to_host(
        ctx.init_state(tx, seed_offset=1))
  state = sharding.replicate(compiled["initial_state"], ctx.mesh)
  attr = sharding.replicate(init_attribution(len(probes), epochs), ctx.mesh)
  ckpt_dir = os.path.join(ctx.workdir, "checkpoints", name)
  mngr = experiment._checkpoint_manager(ckpt_dir)
  start, tree = experiment._restore(mngr, {
      "state": state, "attr": attr, "seconds": np.zeros((), np.float64)})
  state, attr, seconds = tree["state"], tree["attr"], float(tree["seconds"])
  writer = metrics_io.create_writer(ctx.workdir, f"attribution_{name}")
  progress = experiment._Progress(total_steps, f"attribution {name}", writer,
                                  initial=start * spe)
  for epoch in range(start, epochs):
    t0 = time.perf_counter()
    acc = jnp.zeros(3)
    for batch in data_ctx.train_batches(epoch, ids=ids):
      state, attr, m = step(state, attr, batch)
      acc = acc + jnp.stack([m["train_loss"], m["train_accuracy"], 1.0])
      progress.update()
    # One host sync per epoch: every probe must be trained on once per
    # epoch, or its row (and its loss trajectory) would be incomplete.
    visits = sharding.to_host(attr.visits)
    if not np.all(visits == epoch + 1):
      raise RuntimeError(
          f"setting {name}, epoch {epoch + 1}: probes visited "
          f"{sorted(set(visits.tolist()))} times, expected {epoch + 1}; "
          "a probe is missing from this training set.")
    loss, accuracy, count = (float(x) for x in np.asarray(acc))
    seconds += time.perf_counter() - t0
    writer.write_scalars(epoch + 1, {
        "train_loss": loss / max(count, 1),
        "train_accuracy": accuracy / max(count, 1),
        "probe_steps": float(sharding.to_host(attr.probe_steps)),
        "epoch_seconds": time.perf_counter() - t0})
    mngr.save(epoch + 1, args=ocp.args.StandardSave(
        {"state": state, "attr": attr, "seconds": np.float64(seconds)}))
    mngr.wait_until_finished()
    experiment._epoch_done(f"attribution_{name}", epoch + 1)
  progress.close()
  writer.flush()
  test = {}
  if ctx.data.test is not None:
    test = experiment.evaluate(ctx, eval_fn, state.variables, ctx.data.test)
  host = sharding.to_host(attr)
  summary = {
      "num_examples": int(n), "steps": int(host.steps),
      "probe_steps": int(host.probe_steps), "epochs": int(epochs),
      "order_seed": int(order_seed),
      "seconds": seconds, "test_accuracy": test.get("accuracy"),
      "test_loss": test.get("loss")}
  if wd.is_writer():
    wd.write_npy(paths["trajectories"], host.losses)
    wd.write_json(paths["summaries"], summary)
    # The matrix goes last: its presence marks the setting as finished.
    wd.write_npy(paths["matrices"], host.matrix)
  mngr.close()
  shutil.rmtree(ckpt_dir, ignore_errors=True)
  return {"matrix": np.asarray(host.matrix), "losses": np.asarray(host.losses),
          "summary": summary}


def _both_variants(metric, *matrices) -> dict[str, float]:
  return {
      "all_entries": metric(*matrices, include_diagonal=True),
      "off_diagonal": metric(*matrices, include_diagonal=False),
      "frobenius_all_entries": metric(*matrices, include_diagonal=True,
                                      norm="frobenius"),
      "frobenius_off_diagonal": metric(*matrices, include_diagonal=False,
                                       norm="frobenius"),
  }


def _report(config, ctx, probes, probe_labels, everywhere, results, ratios,
            opts) -> dict[str, Any]:
  from mrmc_jax import scoring  # pylint: disable=g-import-not-at-top
  att = config.attribution
  full = results["full"]["matrix"]
  stability, floor, symmetry, criterion, summaries = {}, {}, {}, {}, {}
  for name, res in results.items():
    a = res["matrix"]
    symmetry[name] = _both_variants(symmetry_error, a)
    if name.startswith("coreset_"):
      stability[name] = _both_variants(stability_error, a, full)
    elif name != "full":
      floor[name] = _both_variants(stability_error, a, full)
    traj = res["losses"]
    phi = None
    if traj.shape[1] >= 2:
      phi = np.asarray(scoring.mrmc_scores(
          traj, np.isfinite(traj), score=opts.score,
          max_initial_ratio=opts.max_initial_ratio,
          epoch_offset=opts.epoch_offset))
    criterion[name] = probe_criterion(a, phi)
    summaries[name] = {**res["summary"], **matrix_summary(a)}
  side = []
  for name in stability:
    side.append({"quantity": "stability_error", "setting": name,
                 **stability[name],
                 "paper": PAPER["stability_error"].get(name)})
  for name in floor:
    side.append({"quantity": "order_noise_floor", "setting": name,
                 **floor[name], "paper": None})
  for name in results:
    side.append({"quantity": "symmetry_error", "setting": name,
                 **symmetry[name], "paper": PAPER["symmetry_error"].get(name)})
  return {
      "dataset": config.dataset.name, "model": config.model.name,
      "method": att.method, "ratios": ratios, "epochs": att.epochs,
      "num_probes": len(probes), "probe_seed": att.seed, "seed": config.seed,
      "probe_ids": probes.tolist(), "probe_labels": probe_labels.tolist(),
      "num_probe_candidates": int(everywhere.sum()),
      "probe_candidates": "examples in every core-set of the ratios",
      "optimizer": {"name": config.train.optimizer,
                    "learning_rate": config.train.learning_rate,
                    "momentum": config.train.momentum,
                    "schedule": config.train.schedule,
                    "batch_size": config.train.batch_size},
      "formulas": FORMULAS,
      "settings": summaries,
      "stability_error": stability,
      "order_noise_floor": floor,
      "symmetry_error": symmetry,
      "spearman": criterion,
      "paper": PAPER,
      "side_by_side": side,
  }


def format_report(report: Mapping[str, Any]) -> str:
  """The side-by-side table as text."""
  lines = ["relative errors (l1 headline; Frobenius alternative):",
           f"{'quantity':<17} {'setting':<13} {'all':>7} {'off-diag':>9} "
           f"{'fro all':>8} {'fro off':>8} {'paper':>6}"]
  for row in report["side_by_side"]:
    paper = "-" if row["paper"] is None else f"{row['paper']:.2f}"
    lines.append(f"{row['quantity']:<17} {row['setting']:<13} "
                 f"{row['all_entries']:>7.3f} {row['off_diagonal']:>9.3f} "
                 f"{row['frobenius_all_entries']:>8.3f} "
                 f"{row['frobenius_off_diagonal']:>8.3f} {paper:>6}")
  lines.append("Spearman rho with the contribution to other probes "
               "(mrmc score / self A_jj / received):")
  for name, c in report["spearman"].items():
    vals = [c[k]["rho"] for k in ("mrmc_score_vs_contribution",
                                  "self_attribution_vs_contribution",
                                  "received_vs_contribution")]
    lines.append(f"  {name:<13} " + "  ".join(
        "   n/a" if v is None else f"{v:+.3f}" for v in vals))
  return "\n".join(lines)
