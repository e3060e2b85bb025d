"""Tests for moderate.py: cases worked out by hand, and errors."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import moderate

T, F = True, False


def test_moderate_median_distance_band_1d():
  # Class 0: x = 0, 1, 2, 4, 10 -> median 2, distances 2, 1, 0, 2, 8, their
  # median 2, scores -|d - 2| = 0, -1, -2, 0, -6.
  # Class 1: x = 5, 6 -> median 5.5 (mean of the middle two), distances
  # 0.5, 0.5, median 0.5, scores 0, 0.
  x = np.array([0, 5, 1, 2, 6, 4, 10], np.float32)[:, None]
  labels = np.array([0, 1, 0, 0, 1, 0, 0])
  scores = moderate.moderate_scores(x, labels, num_classes=2)
  np.testing.assert_allclose(scores, [0, 0, -1, -2, 0, 0, -6], atol=1e-6)
  # Keeping 3 of class 0 (quota 3 = floor(0.6 * 5)) keeps the band around
  # the median distance: d = 2, 2 (score 0) then d = 1 (score -1).
  mask = selection.select_mask(scores[labels == 0], labels[labels == 0], 0.6,
                               num_classes=1)
  np.testing.assert_array_equal(mask, [T, T, F, T, F])


def test_moderate_matches_numpy_median():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(41, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 41)
  expected = np.zeros(41)
  for c in range(3):
    m = labels == c
    d = np.linalg.norm(x[m] - np.median(x[m], axis=0), axis=1)
    expected[m] = -np.abs(d - np.median(d))
  np.testing.assert_allclose(
      moderate.moderate_scores(x, labels, num_classes=3), expected,
      atol=1e-5)


def test_error_messages():
  labels = np.zeros(4, np.int32)
  with pytest.raises(ValueError, match=r"features has shape \(4,\)"):
    moderate.moderate_scores(np.ones(4), labels, num_classes=1)


def test_moderate_pooled_band_like_the_reference():
  # Distances to the class median (1-D): class 0 x = 0, 1, 2, 4, 10 ->
  # 2, 1, 0, 2, 8; class 1 x = 5, 6 -> 0.5, 0.5. Pooled ascending:
  # 0 (id 3), 0.5, 0.5 (ids 1, 4), 1 (id 2), 2, 2 (ids 0, 5), 8 (id 6).
  x = np.array([0, 5, 1, 2, 6, 4, 10], np.float32)[:, None]
  labels = np.array([0, 1, 0, 0, 1, 0, 0])
  scores = moderate.moderate_pooled_scores(x, labels, num_classes=2, seed=0)
  # The middle (position 3 of 0..6) is id 2; the ends ids 3 and 6.
  assert scores[2] == 0 and scores[3] == -3 and scores[6] == -3
  # The reference keeps sorted[round(N * low):round(N * high)]: with
  # ratio 3/7 that is positions 2..4, the three middle distances.
  mask = np.asarray(selection.select_mask_host(
      scores, labels, 3 / 7, num_classes=2, class_balanced=False))
  assert mask[2] and mask.sum() == 3 and not mask[[3, 6]].any()
