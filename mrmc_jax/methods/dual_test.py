"""Tests for dual.py: the score by hand, the Beta shape, exact budgets."""

import numpy as np
import pytest
from scipy import stats

from mrmc_jax import selection
from mrmc_jax.methods import dual


def test_dual_score_by_hand():
  # R = 3, window 2: windows (e0, e1) and (e1, e2).
  p = np.array([[0.2, 0.6, 0.6],    # std .2 x (1-.4) = .12; 0 x .4 = 0
                [1.0, 1.0, 1.0],    # never uncertain: 0
                [0.0, 0.5, 1.0]],   # .25 x .75 and .25 x .25
               np.float32)
  got = np.asarray(dual.dual_scores(p, window=2))
  np.testing.assert_allclose(got, [0.06, 0.0, (0.1875 + 0.0625) / 2],
                             rtol=1e-6)
  # Window longer than R: one window of all R epochs.
  np.testing.assert_allclose(dual.dual_scores(p[:, :2], window=10),
                             dual.dual_scores(p[:, :2], window=2))


def test_beta_shape_moves_toward_easy_as_ratio_shrinks():
  # b = 15 (1 - anchor) (1 - (1 - ratio)^c_d), a = 16 - b.
  a, b = dual.beta_shape(0.5, 0.2, 4.0)
  assert b == pytest.approx(15 * 0.8 * (1 - 0.5 ** 4)) and a + b == 16
  modes = [(a - 1) / (a + b - 2) for a, b in
           (dual.beta_shape(r, 0.2, 4.0) for r in (0.9, 0.7, 0.5, 0.3, 0.1))]
  assert all(x < y for x, y in zip(modes, modes[1:]))


def test_dual_select_exact_quotas_seeded_and_weighted():
  rng = np.random.default_rng(0)
  n = 400
  labels = rng.integers(0, 3, n)
  scores = rng.random(n)
  scores[:40] = 0.0  # Zero weight: never drawn while others remain.
  p1 = rng.random(n)
  for ratio in (0.1, 0.3, 0.7):
    mask = dual.dual_select(scores, p1, labels, ratio, num_classes=3,
                            seed=1)
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=3),
                                  selection.class_quotas(labels, 3, ratio))
    assert not mask[:40].any()
  again = dual.dual_select(scores, p1, labels, 0.3, num_classes=3, seed=1)
  np.testing.assert_array_equal(
      again, dual.dual_select(scores, p1, labels, 0.3, num_classes=3,
                              seed=1))
  other = dual.dual_select(scores, p1, labels, 0.3, num_classes=3, seed=2)
  assert (other != again).any()
  # Global mode, budget exact; the draw follows the density: at ratio 0.1
  # the kept m sit where the Beta density is high.
  mask = dual.dual_select(scores, p1, labels, 0.1, num_classes=3,
                          class_balanced=False, seed=0)
  assert mask.sum() == selection.budget(0.1, n)
  top = np.argsort(-scores, kind="stable")[:10]
  a, b = dual.beta_shape(0.1, p1[top].mean(), 4.0)
  pdf = stats.beta.pdf(p1, a, b)
  assert pdf[mask].mean() > 1.5 * pdf[scores > 0].mean()


def test_dual_errors():
  with pytest.raises(ValueError, match="negative"):
    dual.dual_select(np.array([-1.0, 1.0]), np.array([0.5, 0.5]),
                     np.zeros(2, int), 0.5, num_classes=1)
  with pytest.raises(ValueError, match="window=1 is not allowed"):
    dual.dual_scores(np.ones((2, 3)), window=1)


def test_registry_row_uses_the_windowed_mean_not_the_first_epoch():
  from mrmc_jax.methods import options  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import registry  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  n, r = 500, 5
  labels = rng.integers(0, 2, n)
  p = rng.random((n, r)).astype(np.float32)
  art = {"p_true": p, "loss": rng.random((n, r)),
         "correct": rng.random((n, r)) > 0.5, "el2n": rng.random((n, r)),
         "visits": np.ones((n, r))}
  opts = options.SelectionOptions(dual_window=3)
  scores, mask = registry.select("dual", art, labels, 0.2, num_classes=2,
                                 opts=opts)
  want = dual.dual_select(scores, p.astype(np.float64).mean(axis=1), labels,
                          0.2, num_classes=2, class_balanced=False, seed=0)
  np.testing.assert_array_equal(mask, want)
  first = dual.dual_select(scores, p[:, 0], labels, 0.2, num_classes=2,
                           class_balanced=False, seed=0)
  assert (first != mask).any()


def test_registry_row_draws_globally_like_the_reference_by_default():
  from mrmc_jax.methods import options  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import registry  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  n, r = 400, 4
  labels = np.repeat([0, 1], [300, 100])
  # Class 1 is all easy and stable: a global draw takes almost none of it.
  p = np.where(labels[:, None] == 1, 0.99, rng.random((n, r))
               ).astype(np.float32)
  art = {"p_true": p, "loss": rng.random((n, r)),
         "correct": rng.random((n, r)) > 0.5, "el2n": rng.random((n, r)),
         "visits": np.ones((n, r))}
  opts = options.SelectionOptions()
  with pytest.warns(UserWarning, match="selected no example"):
    _, mask = registry.select("dual", art, labels, 0.5, num_classes=2,
                              opts=opts)
  assert mask.sum() == 200 and mask[labels == 1].sum() < 50
  _, per_class = registry.select("dual(per_class=True)", art,
                                 labels, 0.5, num_classes=2, opts=opts)
  np.testing.assert_array_equal(np.bincount(labels[per_class]), [150, 50])
  # The shared option is not DUAL's: a spec setting it is refused.
  with pytest.raises(ValueError, match="dual does not read it"):
    registry.select("dual(class_balanced=True)", art, labels, 0.5,
                    num_classes=2, opts=opts)


def test_beta_log_density_matches_scipy_up_to_its_constant():
  x = np.array([0.05, 0.3, 0.7, 0.99])
  got = dual.beta_log_density(x, 12.0, 4.0)
  want = stats.beta.logpdf(x, 12.0, 4.0)
  np.testing.assert_allclose(got - got[0], want - want[0], rtol=1e-10)
  assert np.isfinite(dual.beta_log_density(np.array([0.0, 1.0]), 15.5, 0.5)
                     ).all()
