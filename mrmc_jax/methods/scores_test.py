"""Tests for scores.py: small cases worked out by hand, and errors."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import scores

T, F = True, False


def test_forgetting_counts_by_hand():
  correct = np.array([
      [T, F, T, F],  # Two correct -> incorrect transitions.
      [F, F, F, F],  # Never learned: max(events) + 1 = 3.
      [T, T, T, T],  # Learned, never forgotten.
      [F, T, T, F],  # One.
      [F, F, F, T],  # Learned last epoch: 0, not "never learned".
  ])
  np.testing.assert_array_equal(scores.forgetting_scores(correct),
                                [2, 3, 0, 1, 0])
  # One epoch: no transitions; the never-learned row still ranks first.
  np.testing.assert_array_equal(
      scores.forgetting_scores(np.array([[T], [F]])), [0, 1])
  # As the D2 and CCS reference code count them: never learned = 0 events.
  np.testing.assert_array_equal(
      scores.forgetting_scores(correct, never_learned_first=False),
      [2, 0, 0, 1, 0])


def test_el2n_mean_over_chosen_epochs():
  el2n = np.array([[0.1, 0.2, 0.6],
                   [1.0, 0.0, 0.5]], np.float32)
  np.testing.assert_allclose(scores.el2n_scores(el2n), [0.3, 0.5],
                             rtol=1e-6)
  np.testing.assert_allclose(scores.el2n_scores(el2n, epochs=[0, 2]),
                             [0.35, 0.75], rtol=1e-6)
  np.testing.assert_allclose(scores.el2n_scores(el2n, epochs=[1]),
                             [0.2, 0.0], rtol=1e-6)


def test_grand_is_a_validated_passthrough():
  norms = np.array([0.0, 2.5, 1.0], np.float32)
  np.testing.assert_array_equal(scores.grand_scores(norms), norms)


def test_dyn_unc_window_two_by_hand():
  p = np.array([[0.2, 0.4, 0.4, 1.0],
                [0.5, 0.5, 0.5, 0.5]], np.float32)
  # Windows (0.2, 0.4), (0.4, 0.4), (0.4, 1.0): population stds 0.1, 0, 0.3.
  np.testing.assert_allclose(scores.dyn_unc_scores(p, window=2),
                             [0.4 / 3, 0.0], atol=1e-6)
  # R = 4 < window = 10: one window of all four, mean 0.5, deviations
  # -0.3, -0.1, -0.1, 0.5, variance 0.36 / 4 = 0.09, std 0.3.
  np.testing.assert_allclose(scores.dyn_unc_scores(p, window=10),
                             [0.3, 0.0], atol=1e-6)


def test_random_scores_deterministic_and_stratified():
  a = scores.random_scores(50, seed=3)
  np.testing.assert_array_equal(a, scores.random_scores(50, seed=3))
  assert not np.array_equal(a, scores.random_scores(50, seed=4))
  assert a.shape == (50,) and float(a.min()) >= 0 and float(a.max()) < 1
  labels = np.array([0] * 30 + [1] * 20)
  mask = selection.select_mask(a, labels, 0.5, num_classes=2)
  np.testing.assert_array_equal(np.bincount(labels[np.asarray(mask)]),
                                [15, 10])


def test_error_messages():
  ok2 = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match=r"window=1 is not allowed.*>= 2"):
    scores.dyn_unc_scores(ok2, window=1)
  with pytest.raises(ValueError, match=r"p_true has shape \(4,\)"):
    scores.dyn_unc_scores(np.ones(4))
  with pytest.raises(ValueError, match=r"R >= 2"):
    scores.dyn_unc_scores(np.ones((4, 1)))
  with pytest.raises(ValueError, match=r"el2n_traj holds 1 NaN"):
    scores.el2n_scores(np.where(np.eye(4, 3) > 0.5, np.nan, 1.0)[:1])
  with pytest.raises(ValueError,
                     match=r"epochs=\[3\] is not allowed.*\[0, 3\)"):
    scores.el2n_scores(ok2, epochs=[3])
  with pytest.raises(ValueError, match=r"grad_norms holds negative"):
    scores.grand_scores(np.array([1.0, -1.0]))
  with pytest.raises(ValueError, match=r"correct holds values other than 0/1"):
    scores.forgetting_scores(np.array([[0, 2]]))
