"""Score methods: per-example scores, then `selection.select_mask`.

Each function returns float32 `[N]`, higher = keep; the row's `select`
then applies the per-class quotas (or the global budget) with ties in a
random order seeded by the run's seed (`common.select_top`).

| method     | needs      | paper                | the row follows                  |
|------------|------------|----------------------|----------------------------------|
| random     | -          | uniform              | -                                |
| el2n       | trajectory | Paul et al. 2021     | mansheej/data_diet               |
| grand      | grad_norms | Paul et al. 2021     | mansheej/data_diet               |
| forgetting | trajectory | Toneva et al. 2019   | mansheej/data_diet               |
| dyn_unc    | trajectory | He et al. 2023       | behaapyy/dual-pruning `dynunc`   |

The four peers keep the top over all N like their reference code
(data_diet's `subset_train_idxs_by_scores(keep_max_scores)`, dual-pruning's
`mask[-n:]`); `<method>.per_class=True` keeps each class's quota (the
library's earlier default). EL2N scores one checkpoint like data_diet (the
last warm-up epoch, `el2n_epochs=1`), GraNd all parameters like data_diet's
`get_grad_norm_fn` (DeepCore's GraNd: the last layer only; not
reproduced), forgetting puts the never-learned first like data_diet
(`forget_scores[never_correct] = inf`). Each function documents where it
follows, or departs from, its paper.
"""

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import validation
from mrmc_jax.methods import common

Array = jax.Array


def random_scores(num_examples: int, seed: int) -> Array:
  """Uniform random scores; with class quotas this is stratified random.

  Args:
    num_examples: N.
    seed: int >= 0, the `jax.random.key` seed.

  Returns:
    float32 `[N]` i.i.d. uniform in [0, 1).
  """
  validation.check_int(num_examples, "num_examples")
  validation.check_seed(seed)
  return jax.random.uniform(jax.random.key(seed), (num_examples,),
                            jnp.float32)


def el2n_scores(el2n_traj: Array,
                epochs: Optional[Sequence[int]] = None) -> Array:
  """EL2N: mean of the per-epoch EL2N over the chosen epochs; keep highest.

  Paul et al. (2021) average `||softmax(f(x)) - onehot(y)||_2` over several
  seeds at one early epoch; with one warm-up run we average over the chosen
  warm-up epochs of the trajectory instead (default: all R recorded epochs).

  Args:
    el2n_traj: float `[N, R]`, `trajectory["el2n"]`.
    epochs: optional epoch columns in `[0, R)` (non-empty); default all.

  Returns:
    float32 `[N]` mean EL2N.

  Raises:
    ValueError: on a bad shape, NaN, or epochs outside [0, R).
  """
  common.check_ndim(el2n_traj, 2, "el2n_traj", "[N, R]")
  r = np.shape(el2n_traj)[1]
  if epochs is None:
    epochs = range(r)
  epochs = [int(e) for e in epochs]
  if not epochs or min(epochs) < 0 or max(epochs) >= r:
    raise ValueError(f"epochs={epochs!r} is not allowed: it must be a "
                     f"non-empty list of epoch columns in [0, {r}).")
  common.check_finite(el2n_traj, "el2n_traj")
  cols = jnp.asarray(el2n_traj, jnp.float32)[:, jnp.asarray(epochs)]
  return jnp.mean(cols, axis=1)


def grand_scores(grad_norms: Array) -> Array:
  """GraNd: the per-example gradient norm, validated; keep highest.

  The norms come from `losses.per_example_grad_norms` (eval-mode model, loss
  gradient w.r.t. the parameters) at the end of warm-up. Paul et al. (2021)
  average them over several initialisations at an early epoch; we use the
  single warm-up checkpoint.

  Args:
    grad_norms: float `[N]`, >= 0.

  Returns:
    float32 `[N]`, the same values.

  Raises:
    ValueError: on a bad shape, NaN/inf or negative norms.
  """
  common.check_ndim(grad_norms, 1, "grad_norms", "[N]")
  common.check_finite(grad_norms, "grad_norms")
  if validation.is_concrete(grad_norms) and np.any(np.asarray(grad_norms) < 0):
    raise ValueError("grad_norms holds negative values; norms must be >= 0.")
  return jnp.asarray(grad_norms, jnp.float32)


@functools.partial(jax.jit, static_argnames=("never_learned_first",))
def _forgetting_core(correct, never_learned_first):
  correct = correct.astype(jnp.bool_)
  events = jnp.sum(correct[:, :-1] & ~correct[:, 1:], axis=1)
  if not never_learned_first:
    return events.astype(jnp.float32)
  learned = jnp.any(correct, axis=1)
  # Never-learned examples rank above every learned one (Toneva et al. treat
  # them as forgotten infinitely often); max + 1 keeps the score finite.
  return jnp.where(learned, events, jnp.max(events) + 1).astype(jnp.float32)


def forgetting_scores(correct: Array, never_learned_first: bool = True
                      ) -> Array:
  """Forgetting events (Toneva et al. 2019); keep the most forgotten.

  A forgetting event is a correct -> incorrect transition between
  consecutive recorded epochs (the paper counts over minibatch presentations;
  the trajectory holds one presentation per epoch). Examples that are never
  correct get `max(events) + 1`, so they rank as the most forgotten and are
  kept first; with `never_learned_first=False` they keep their count, 0
  (as D2-pruning's `generate_importance_score.py` counts them). Counts are
  integers, so ties are common; `select_mask` breaks them in a seeded
  random order.

  Args:
    correct: bool `[N, R]`, `trajectory["correct"]`.
    never_learned_first: rank never-correct examples first (default).

  Returns:
    float32 `[N]` forgetting counts.

  Raises:
    ValueError: on a bad shape or non-boolean values.
  """
  common.check_bool_matrix(correct, "correct")
  return _forgetting_core(jnp.asarray(correct),
                          never_learned_first=bool(never_learned_first))


def window_mean_std(p_true: Array, window: int) -> tuple[Array, Array]:
  """Mean and population std of every sliding window of `min(window, R)`.

  Column j of the shifted slice p[:, o:o + nw] is epoch j + o, so summing
  over offsets o gives every window at once with O(N * R) memory; the
  two-pass variance avoids the cancellation of E[p^2] - E[p]^2.

  Args:
    p_true: float `[N, R]`.
    window: the window length (static); R if shorter.

  Returns:
    float32 `(mean, std)`, each `[N, R - w + 1]`.
  """
  r = p_true.shape[1]
  w = min(window, r)
  nw = r - w + 1
  p = p_true.astype(jnp.float32)
  mean = sum(p[:, o:o + nw] for o in range(w)) / w
  var = sum((p[:, o:o + nw] - mean) ** 2 for o in range(w)) / w
  return mean, jnp.sqrt(var)


@functools.partial(jax.jit, static_argnames=("window",))
def _dyn_unc_core(p_true, window):
  return jnp.mean(window_mean_std(p_true, window)[1], axis=1)


def dyn_unc_scores(p_true: Array, window: int = 10) -> Array:
  """Dynamic Uncertainty (He et al. 2023); keep highest.

  For each of the `R - window + 1` sliding windows of consecutive epochs,
  the population standard deviation (divide by `window`, as in the paper's
  formula) of the true-class probability; the score is the mean over
  windows. If `R < window` there is a single window of all R epochs. The
  paper's J = 10 is the default window.

  Args:
    p_true: float `[N, R]`, `trajectory["p_true"]`, R >= 2.
    window: window length, >= 2.

  Returns:
    float32 `[N]` dynamic uncertainty.

  Raises:
    ValueError: on a bad shape, R < 2, NaN or window < 2.
  """
  common.check_p_true_windows(p_true, window, "Dyn-Unc")
  return _dyn_unc_core(jnp.asarray(p_true), window=int(window))


# ----------------------------------------------------------------------------
# Registry rows.
# ----------------------------------------------------------------------------


def _select_random(art, labels, ratio, *, num_classes, opts, cache):
  del art, cache  # Unused.
  return common.select_top(random_scores(labels.shape[0], opts.seed), labels,
                           ratio, num_classes=num_classes,
                           class_balanced=opts.class_balanced,
                           seed=opts.seed)


def _el2n_rows(art, opts, num_classes):
  del num_classes  # Unused.
  el2n = common.trajectory_view(art, opts)["el2n"]
  epochs = (None if opts.el2n_epochs is None else
            list(range(el2n.shape[1] - opts.el2n_epochs, el2n.shape[1])))
  s = np.asarray(el2n_scores(el2n, epochs), np.float32)
  return s, s, bool(opts.el2n_class_balanced)


def _select_grand(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  return common.select_top(grand_scores(art["grad_norms"]), labels, ratio,
                           num_classes=num_classes,
                           class_balanced=opts.grand_class_balanced,
                           seed=opts.seed)


def _forgetting_rows(art, opts, num_classes):
  del num_classes  # Unused.
  correct = common.trajectory_view(art, opts)["correct"]
  s = np.asarray(forgetting_scores(correct), np.float32)
  return s, s, bool(opts.forgetting_class_balanced)


def _dyn_unc_rows(art, opts, num_classes):
  del num_classes  # Unused.
  p = common.trajectory_view(art, opts)["p_true"]
  s = np.asarray(dyn_unc_scores(p, window=min(opts.dyn_unc_window,
                                              p.shape[1])), np.float32)
  return s, s, bool(opts.dyn_unc_class_balanced)


_TRAJ = frozenset({"trajectory"})
def _global_by_reference(method: str, reference: str) -> common.Option:
  """`<method>.per_class`: False (over all N, as `reference` selects),
  absent True (the per-class quotas of the releases before it)."""
  return common.Option(
      "per_class", bool, False, f"{method}: keep each "
      f"class's quota (True) or the top over all N (False, {reference})",
      absent=True, legacy=f"{method}_class_balanced")


# Not "epochs": that is the trajectory's option, which EL2N reads too.
EL2N_OPTIONS = common.declare(
    common.Option("last_epochs", int, 1, "EL2N: the last k epochs of the "
                  "trajectory window (None: all; 1: one checkpoint, "
                  "data_diet's)", low=1, optional=True,
                  legacy="el2n_epochs"),
    _global_by_reference("el2n", "data_diet"),
    scope="el2n")
DYN_UNC_OPTIONS = common.declare(
    common.Option("window", int, 10, "Dyn-Unc: sliding-window "
                  "length in epochs (capped at R)", low=2,
                  legacy="dyn_unc_window"),
    _global_by_reference("dyn_unc", "dual-pruning's dynunc"),
    scope="dyn_unc")
GRAND_OPTIONS = common.declare(_global_by_reference("grand", "data_diet"),
                               scope="grand")
FORGETTING_OPTIONS = common.declare(
    _global_by_reference("forgetting", "data_diet, Toneva et al."),
    scope="forgetting")
OPTIONS = EL2N_OPTIONS + DYN_UNC_OPTIONS + GRAND_OPTIONS + FORGETTING_OPTIONS

RANDOM = common.Method(
    "random", frozenset(), common.COMMON, _select_random,
    "uniform scores; class-stratified under quotas", role="baseline")
EL2N = common.Method(
    "el2n", _TRAJ, common.SEED + common.TRAJECTORY_OPTIONS + EL2N_OPTIONS,
    common.select_by_row_keys(_el2n_rows),
    "EL2N of the last warm-up epoch; keep highest", row_keys=_el2n_rows)
GRAND = common.Method(
    "grand", frozenset({"grad_norms"}), common.SEED + GRAND_OPTIONS,
    _select_grand,
    "per-example gradient norm at end of warm-up; keep highest")
FORGETTING = common.Method(
    "forgetting", _TRAJ,
    common.SEED + common.TRAJECTORY_OPTIONS + FORGETTING_OPTIONS,
    common.select_by_row_keys(_forgetting_rows),
    "correct->incorrect transitions; never learned first",
    row_keys=_forgetting_rows)
DYN_UNC = common.Method(
    "dyn_unc", _TRAJ,
    common.SEED + common.TRAJECTORY_OPTIONS + DYN_UNC_OPTIONS,
    common.select_by_row_keys(_dyn_unc_rows),
    "mean sliding-window std of p_true; keep highest", row_keys=_dyn_unc_rows)
