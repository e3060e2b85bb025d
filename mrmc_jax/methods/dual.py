"""DUAL (Cho et al., ICML 2025): difficulty x uncertainty, Beta sampling.

Score (`dual_scores`): over sliding windows of J consecutive epochs of the
true-class probability p, the window's standard deviation times its mean
difficulty `1 - mean(p)`, averaged over windows. Selection
(`dual_select`): sampling without replacement with probability
proportional to `BetaPdf(p1; a, b) * score`, where p1 is the true-class
probability after the first epoch and the Beta shape moves toward easy
examples (p1 near 1) as the kept ratio shrinks. Both follow the reference
code (behaapyy/dual-pruning, `exp_cifar/importance_evaluation.py:dual`
and `exp_cifar/data_subset.py:beta_sampling`); the departures are listed
in each function.
"""

import functools

import jax
import jax.numpy as jnp
import jax.scipy.stats
import numpy as np

from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import scores as scores_lib

Array = jax.Array

# The reference's Beta concentration: a + b = 16.
_CONCENTRATION = 16.0
# p1 is clipped to [eps, 1 - eps] before the Beta density (see dual_select).
_P_EPS = 1e-6
# The reference anchors the Beta shape on its 10 highest-scored examples.
_NUM_ANCHORS = 10


@functools.partial(jax.jit, static_argnames=("window",))
def _dual_core(p_true, window):
  mean, std = scores_lib.window_mean_std(p_true, window)
  return jnp.mean(std * (1.0 - mean), axis=1)


def dual_scores(p_true: Array, window: int = 10) -> Array:
  """DUAL score: mean over windows of `std(p) * (1 - mean(p))`.

  The reference (`dual`) takes the windows `i = 0 .. T - J` of the first
  T = 30 epochs (of 200) with J = 10, and `torch.std` (divide by J - 1)
  times 10. Here T is the warm-up length R and the standard deviation
  divides by J: both only scale every score by the same constant, which
  changes neither the ranking nor the sampling probabilities. If R < J
  there is one window of all R epochs (the reference would have none).

  Args:
    p_true: float `[N, R]`, `trajectory["p_true"]`, R >= 2.
    window: J >= 2.

  Returns:
    float32 `[N]` scores >= 0, higher = more important.

  Raises:
    ValueError: on a bad shape, R < 2, NaN or window < 2.
  """
  common.check_p_true_windows(p_true, window, "DUAL")
  return _dual_core(jnp.asarray(p_true), window=int(window))


def beta_shape(ratio: float, anchor_mean: float, c_d: float
               ) -> tuple[float, float]:
  """The reference's Beta parameters for a kept fraction `ratio`.

  `b = 15 * (1 - anchor_mean) * (1 - (1 - ratio) ** c_d)`, `a = 16 - b`,
  with `anchor_mean` the mean first-epoch true-class probability of the
  highest-scored examples. As the ratio shrinks b falls and the density
  moves toward p1 = 1 (easy examples).

  Args:
    ratio: kept fraction in (0, 1].
    anchor_mean: in [0, 1].
    c_d: exponent > 0 (the reference's CIFAR default is 4).

  Returns:
    `(a, b)`, both > 0.
  """
  validation.check_ratio(ratio)
  common.check_number(anchor_mean, "anchor_mean", 0.0, 1.0)
  common.check_number(c_d, "c_d", 0.0, np.inf, lo_open=True, hi_open=True)
  prune = 1.0 - float(ratio)
  b = 15.0 * (1.0 - float(anchor_mean)) * (1.0 - prune ** float(c_d))
  # b = 0 (ratio 1 or anchor_mean 1) would make the density degenerate; a
  # floor keeps it a proper Beta leaning fully toward p1 = 1.
  b = max(b, 1e-3)
  return _CONCENTRATION - b, b


def dual_select(scores: Array, p_first: Array, labels: Array, ratio: float, *,
                num_classes: int, class_balanced: bool = True,
                c_d: float = 4.0, seed: int = 0) -> np.ndarray:
  """DUAL's Beta sampling: `P(i) ~ BetaPdf(p1_i; a, b) * score_i`.

  Follows `beta_sampling` of the reference: the anchor is the mean p1 of
  the 10 highest-scored examples, `(a, b) = beta_shape(ratio, anchor, c_d)`,
  and `floor(ratio * N)` examples are drawn without replacement with
  probability proportional to the density times the score (Gumbel-top-k,
  `common.sample_by_weight`, the same law as the reference's
  `np.random.choice(p=..., replace=False)`). Departures:
  - The reference samples globally; with `class_balanced` (our default)
    each class draws its quota from its own examples.
  - The reference's shipped command passes the sorted-index file as the
    score, so it multiplies the density by each example's position in that
    file; we multiply by the DUAL score, as the paper and the variable
    names say.
  - p1 is clipped to [1e-6, 1 - 1e-6]: with b < 1 the density is infinite at
    p1 = 1, which float32 probabilities reach.

  Args:
    scores: float `[N]` DUAL scores (`dual_scores`), >= 0.
    p_first: float `[N]` true-class probability after the first epoch.
    labels: int `[N]`.
    ratio: kept fraction in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas (default) or one global budget.
    c_d: the Beta shape's exponent (`beta_shape`).
    seed: int >= 0 for the sampling.

  Returns:
    bool `[N]` mask with exactly the per-class quotas (or the budget).

  Raises:
    ValueError: on bad shapes, NaN, negative scores, ratio or c_d.
  """
  common.check_ndim(scores, 1, "scores", "[N]")
  common.check_ratio_labels(labels, ratio, num_classes, scores=scores,
                            p_first=p_first)
  common.check_finite(scores, "scores")
  common.check_finite(p_first, "p_first")
  validation.check_seed(seed)
  s = np.asarray(scores, np.float64)
  if (s < 0).any():
    raise ValueError("scores holds negative values; DUAL scores are >= 0.")
  p1 = np.clip(np.asarray(p_first, np.float64), _P_EPS, 1.0 - _P_EPS)
  top = np.argsort(-s, kind="stable")[:_NUM_ANCHORS]
  a, b = beta_shape(ratio, float(np.clip(p1[top].mean(), 0.0, 1.0)), c_d)
  log_pdf = np.asarray(jax.scipy.stats.beta.logpdf(
      jnp.asarray(p1, jnp.float32), a, b), np.float64)
  with np.errstate(divide="ignore"):
    log_w = log_pdf + np.log(s)
  _, mask = common.sample_by_weight(
      log_w, np.asarray(labels), ratio, num_classes=num_classes,
      class_balanced=class_balanced, seed=seed)
  return mask


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  p = common.trajectory_view(art, opts)["p_true"]
  scores = np.asarray(dual_scores(p, window=min(opts.dual_window,
                                                p.shape[1])))
  mask = dual_select(scores, p[:, 0], labels, ratio, num_classes=num_classes,
                     class_balanced=opts.class_balanced, c_d=opts.dual_c_d,
                     seed=opts.seed)
  return scores.astype(np.float32), mask


OPTIONS = common.declare(
    common.Option("dual_window", int, 10, "DUAL: sliding-window length in "
                  "epochs (capped at R)", low=2),
    common.Option("dual_c_d", float, 4.0, "DUAL: Beta sampling "
                  "concentration", low=0.0, low_open=True),
)

METHOD = common.Method(
    "dual", frozenset({"trajectory"}),
    ("class_balanced", "seed", "dual_window", "dual_c_d")
    + common.TRAJECTORY_OPTIONS, _select,
    "std x (1 - mean) of p_true over windows; ratio-dependent Beta sampling")
