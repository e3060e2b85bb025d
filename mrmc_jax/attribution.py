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

The measurement behind `experiments/attribution.py` (full data and
core-sets, matrices, heatmaps, report.json) is `runner.attribution`; this
module holds the jitted accumulator and the metrics only.
"""

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
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
) -> Callable[[train_step.BatchStatsTrainState, AttributionState, Batch],
              tuple[train_step.BatchStatsTrainState, AttributionState,
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
