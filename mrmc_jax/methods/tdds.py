"""TDDS (Zhang et al., CVPR 2024): Temporal Dual-Depth Scoring.

Ported from the authors' code (zhangxin-xd/Dataset-Pruning-TDDS,
`importance_evaluation.py:generate`; selection in `data_subset.py`). From
the per-epoch softmax outputs `p_t` of the training pass:
- first depth, each epoch's contribution: the KL-like step
  `d_t = sum_c |p_{t+1,c} (log(p_{t+1,c} + 1e-8) - log(p_{t,c} + 1e-8))|`
  (the absolute value inside the sum, as upstream);
- second depth, over the windows k = 0 .. T - J of J epochs (J - 1 steps
  each): the norm of the steps' deviations from their window mean,
  `||d - mean(d)||_2` (`sqrt(J - 1)` times the population std of the
  window, `scores.window_mean_std`, shared with DUAL and Dyn-Unc), weighted
  by the exponential moving average `decay * (1 - decay)**(T - J - k)`
  (the last window weighs most) and summed.
Upstream keeps the highest scores globally (`data_mask[int(prune_rate *
N):]` of the ascending argsort), and so does the row
(`tdds.per_class=False`); `tdds(per_class=True)` keeps
per-class quotas.

The approximation: upstream records every example's full C-class logits
at every epoch; the warm-up here records the true-class probability
`p_true` `[N, R]` (a `[N, R, C]` record would cost C times the trajectory,
1000x on ImageNet). The registry row therefore scores the two-outcome
output `(p_true, 1 - p_true)`: exactly upstream's score for C = 2; for
C > 2 the steps see the movement of the true class against all others
lumped, not among the wrong classes. Measured on the training-pass
outputs of an MLP (SGD 0.05, momentum 0.9, batch 64) on MNIST-5k, the two
forms rank alike (Spearman 0.996 over 10 epochs, window 10; 0.999 over 15)
and upstream's global selections overlap with Jaccard 0.97 / 0.96 / 0.93 /
0.82 at ratios 0.7 / 0.5 / 0.3 / 0.1 (10 epochs; 0.99 / 0.98 / 0.97 /
0.93 over 15). `tdds_scores` itself takes the full `[N, T, C]` outputs, so
recorded logits give upstream's score unchanged.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import scores as scores_lib

Array = jax.Array
# Upstream's epsilon inside the logarithms.
_LOG_EPS = 1e-8


@functools.partial(jax.jit, static_argnames=("window",))
def _tdds_core(probs, window, decay):
  p = probs.astype(jnp.float32)
  log_p = jnp.log(p + _LOG_EPS)
  steps = jnp.abs(p[:, 1:] * (log_p[:, 1:] - log_p[:, :-1])).sum(axis=2)
  t = p.shape[1]
  # Windows of J epochs are windows of J - 1 steps; T - J + 1 of them.
  _, std = scores_lib.window_mean_std(steps, window - 1)
  norm = std * jnp.sqrt(jnp.float32(window - 1))
  k = jnp.arange(t - window + 1, dtype=jnp.float32)
  weight = decay * (1.0 - decay) ** (t - window - k)
  return jnp.sum(norm * weight, axis=1)


def tdds_scores(probs: Array, window: int = 10, decay: float = 0.9) -> Array:
  """TDDS score from per-epoch output probabilities; keep highest.

  Args:
    probs: float `[N, T, C]`, softmax outputs of the training pass at each
      of T >= 2 epochs, rows in id order (upstream reorders its shuffled
      `Output.npy` by `Index.npy` first).
    window: J >= 2 epochs per window (upstream default 10); capped at T.
    decay: the moving average's factor in (0, 1) (upstream 0.9).

  Returns:
    float32 `[N]` scores >= 0.

  Raises:
    ValueError: on a bad shape, T < 2, NaN, window < 2 or decay.
  """
  common.check_ndim(probs, 3, "probs", "[N, T, C]")
  if np.shape(probs)[1] < 2:
    raise ValueError(f"probs has shape {np.shape(probs)}; TDDS needs at "
                     "least 2 epochs (T >= 2).")
  validation.check_int(window, "window", minimum=2)
  common.check_number(decay, "decay", 0.0, 1.0, lo_open=True, hi_open=True)
  common.check_finite(probs, "probs")
  return _tdds_core(jnp.asarray(probs), window=min(int(window),
                                                   np.shape(probs)[1]),
                    decay=float(decay))


def two_outcome_probs(p_true: Array) -> Array:
  """`[N, R]` true-class probabilities as `[N, R, 2]` outputs (p, 1 - p)."""
  common.check_ndim(p_true, 2, "p_true", "[N, R]")
  p = jnp.asarray(p_true, jnp.float32)
  return jnp.stack([p, 1.0 - p], axis=-1)


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  p = common.trajectory_view(art, opts)["p_true"]
  common.check_p_true_windows(p, opts.tdds_window, "TDDS")
  scores = tdds_scores(two_outcome_probs(p), window=opts.tdds_window,
                       decay=opts.tdds_decay)
  return common.select_top(scores, labels, ratio, num_classes=num_classes,
                           class_balanced=opts.tdds_class_balanced,
                           seed=opts.seed)


# Added after a release: at their defaults they are left out of identities
# and stamps (`runner.fields`), so older workdirs resume.
OPTIONS = common.declare(
    common.Option("window", int, 10, "TDDS: epochs per window "
                  "(capped at R)", low=2, absent=10, legacy="tdds_window"),
    common.Option("decay", float, 0.9, "TDDS: moving-average decay; "
                  "window k of the last weighs decay * (1 - decay)**k",
                  low=0.0, low_open=True, high=1.0, high_open=True,
                  absent=0.9, legacy="tdds_decay"),
    # The variant of the authors' rule (added in 0.3.0).
    common.Option("per_class", bool, False, "TDDS: each class's "
                  "quota (True) or the top over all N (False, the authors' "
                  "selection)", absent=True, legacy="tdds_class_balanced"),
    scope="tdds")

METHOD = common.Method(
    "tdds", frozenset({"trajectory"}),
    common.SEED + OPTIONS + common.TRAJECTORY_OPTIONS, _select,
    "variability of the epoch-to-epoch output KL over windows, recent "
    "windows weighted most (two-outcome output from p_true); keep highest")
