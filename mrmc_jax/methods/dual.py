"""DUAL (Cho et al., ICML 2025): difficulty x uncertainty, Beta sampling.

Score (`dual_scores`): over sliding windows of J consecutive epochs of the
true-class probability p, the window's standard deviation times its mean
difficulty `1 - mean(p)`, averaged over windows. Selection
(`dual_select`): sampling without replacement with probability
proportional to `BetaPdf(m; a, b) * score`, where m is the mean
true-class probability over the same epochs as the score and the Beta
shape moves toward easy examples (m near 1) as the kept ratio shrinks.

Both follow the reference code (behaapyy/dual-pruning,
`exp_cifar/importance_evaluation.py:dual`, `exp_cifar/data_subset.py:
beta_sampling`; `exp_imagenet/train_imagenet.py:beta_sampling` is the same
rule): `pred_mean = target_probs[:30].mean(0)` over the score's window of
epochs (here all R warm-up epochs), the anchor the mean of `pred_mean` over
the 10 highest-scored examples. The row draws over all N like the
reference (`dual.per_class=False`); `dual(per_class=True)`
draws each class's quota (the library's earlier default). What departs, and by how much on a
Fashion-MNIST warm-up, is listed in `dual_select` and measured by
`reference_check` (docs/results/reference_check.md).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import scores as scores_lib

Array = jax.Array

# The reference's Beta concentration: a + b = 16.
_CONCENTRATION = 16.0
# m is clipped to [eps, 1 - eps] before the Beta density (beta_log_density).
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
  with `anchor_mean` the mean (windowed-mean) true-class probability of the
  highest-scored examples. As the ratio shrinks b falls and the density
  moves toward m = 1 (easy examples).

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
  # floor keeps it a proper Beta leaning fully toward m = 1.
  b = max(b, 1e-3)
  return _CONCENTRATION - b, b


def beta_log_density(x: np.ndarray, a: float, b: float) -> np.ndarray:
  """`log BetaPdf(x; a, b)` up to its constant, in float64.

  x is clipped to `[1e-6, 1 - 1e-6]` first: with b < 1 (or a < 1) the
  density is infinite at x = 1 (x = 0), which float32 probabilities reach.
  The constant `-log B(a, b)` is left out: it cancels in every sampling
  probability.

  Args:
    x: float `[N]` in [0, 1].
    a: > 0.
    b: > 0.

  Returns:
    float64 `[N]`.
  """
  x = np.clip(np.asarray(x, np.float64), _P_EPS, 1.0 - _P_EPS)
  return (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x)


def dual_select(scores: Array, p_mean: Array, labels: Array, ratio: float, *,
                num_classes: int, class_balanced: bool = True,
                c_d: float = 4.0, seed: int = 0) -> np.ndarray:
  """DUAL's Beta sampling: `P(i) ~ BetaPdf(m_i; a, b) * score_i`.

  Follows `beta_sampling` of the reference: m is the mean true-class
  probability over the score's epochs (`pred_mean`), the anchor the mean m
  of the 10 highest-scored examples, `(a, b) = beta_shape(ratio, anchor,
  c_d)`, and `floor(ratio * N)` examples are drawn without replacement
  with probability proportional to the density times the score
  (Gumbel-top-k, `common.sample_by_weight`, the same law as the
  reference's `np.random.choice(p=..., replace=False)`, not the same
  random stream). With `class_balanced=False` and the same Gumbel noise,
  `reference_check.dual_reference_mask` (a NumPy port of the reference)
  picks the same examples (docs/results/reference_check.md). Departures:
  - `class_balanced` (our default): each class draws its quota from its
    own examples; the reference samples globally (`class_balanced=False`).
  - Budget `floor(ratio * N)`; the reference's `int((1 - prune_rate) * N)`
    with `prune_rate = 1 - ratio` is one less when the float rounds down
    (ratio 0.1 of 60,000: 5,999).
  - The reference's shipped CIFAR command passes the sorted-index file as
    the score, so it multiplies the density by each example's position in
    that file; we multiply by the DUAL score, as the paper and the
    function's variable names say.
  - m is clipped to [1e-6, 1 - 1e-6] (`beta_log_density`); where the
    reference's density is infinite (m = 1 with b < 1) its sampling fails.
  - The windows and the epochs: the reference scores the first T = 30 of
    200 epochs; here all R warm-up epochs (`dual_scores`).

  Args:
    scores: float `[N]` DUAL scores (`dual_scores`), >= 0.
    p_mean: float `[N]` mean true-class probability over the score's
      epochs.
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
                            p_mean=p_mean)
  common.check_finite(scores, "scores")
  common.check_finite(p_mean, "p_mean")
  validation.check_seed(seed)
  s = np.asarray(scores, np.float64)
  if (s < 0).any():
    raise ValueError("scores holds negative values; DUAL scores are >= 0.")
  m = np.asarray(p_mean, np.float64)
  top = np.argsort(-s, kind="stable")[:_NUM_ANCHORS]
  a, b = beta_shape(ratio, float(np.clip(m[top].mean(), 0.0, 1.0)), c_d)
  with np.errstate(divide="ignore"):
    log_w = beta_log_density(m, a, b) + np.log(s)
  _, mask = common.sample_by_weight(
      log_w, np.asarray(labels), ratio, num_classes=num_classes,
      class_balanced=class_balanced, seed=seed)
  return mask


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  p = common.trajectory_view(art, opts)["p_true"]
  scores = np.asarray(dual_scores(p, window=min(opts.dual_window,
                                                p.shape[1])))
  # The reference's pred_mean: the mean over the score's epochs.
  p_mean = np.asarray(p, np.float64).mean(axis=1)
  mask = dual_select(scores, p_mean, labels, ratio, num_classes=num_classes,
                     class_balanced=opts.dual_class_balanced,
                     c_d=opts.dual_c_d,
                     seed=opts.seed)
  return scores.astype(np.float32), mask


OPTIONS = common.declare(
    common.Option("window", int, 10, "DUAL: sliding-window length in "
                  "epochs (capped at R)", low=2, legacy="dual_window"),
    common.Option("c_d", float, 4.0, "DUAL: Beta sampling "
                  "concentration", low=0.0, low_open=True, legacy="dual_c_d"),
    # The variant of the authors' rule (added in 0.3.0).
    common.Option("per_class", bool, False, "DUAL: draw within "
                  "each class's quota (True) or over all N (False, the "
                  "authors' beta_sampling)", absent=True,
                  legacy="dual_class_balanced"),
    scope="dual")

METHOD = common.Method(
    "dual", frozenset({"trajectory"}),
    common.SEED + OPTIONS + common.TRAJECTORY_OPTIONS, _select,
    "std x (1 - mean) of p_true over windows; Beta sampling over the mean "
    "p_true, shaped by the ratio")
