"""Tests for mrmc_jax.data.noise: symmetric, exact, seeded, train only."""

import numpy as np
import pytest

from mrmc_jax.data import noise
from mrmc_jax.data import sources
from mrmc_jax.data import splits


def test_exactly_round_f_n_train_labels_flip_to_another_class():
  data = sources.load_dataset("digits")
  noisy, flipped, flipped_test = noise.add_label_noise(data, 0.2, seed=3)
  n = data.train.num_examples
  assert len(flipped) == round(0.2 * n) and flipped_test is None
  changed = np.flatnonzero(noisy.train.labels != data.train.labels)
  np.testing.assert_array_equal(changed, flipped)  # every flip differs
  # None of the test labels, images or statistics change.
  np.testing.assert_array_equal(noisy.test.labels, data.test.labels)
  np.testing.assert_array_equal(noisy.train.images, data.train.images)
  assert noisy.test is data.test and noisy.mean is data.mean
  assert noisy.train.labels.max() < data.num_classes


def test_deterministic_in_the_seed():
  data = sources.load_dataset("digits")
  a = noise.add_label_noise(data, 0.4, seed=0)
  b = noise.add_label_noise(data, 0.4, seed=0)
  c = noise.add_label_noise(data, 0.4, seed=1)
  np.testing.assert_array_equal(a[0].train.labels, b[0].train.labels)
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[1], c[1])


def test_new_labels_are_uniform_over_the_other_classes():
  labels = np.zeros(30000, np.int32)
  noisy, rows = noise.flip_labels(labels, 0.9, 4, np.random.default_rng(0))
  counts = np.bincount(noisy[rows], minlength=4)
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:] / len(rows), 1 / 3, atol=0.01)


def test_validation_split_gets_its_own_noise_when_asked():
  data = splits.validation_split(sources.load_dataset("digits"), 0.2, 0)
  noisy, flipped, flipped_val = noise.add_label_noise(data, 0.3, 0,
                                                      noisy_test=True)
  assert len(flipped_val) == round(0.3 * data.test.num_examples)
  np.testing.assert_array_equal(
      np.flatnonzero(noisy.test.labels != data.test.labels), flipped_val)
  assert len(flipped) == round(0.3 * data.train.num_examples)


def test_zero_noise_and_bad_values():
  data = sources.load_dataset("digits")
  same, flipped, _ = noise.add_label_noise(data, 0.0, 0)
  assert flipped.size == 0
  np.testing.assert_array_equal(same.train.labels, data.train.labels)
  for bad in (1.0, -0.1, "x"):
    with pytest.raises(ValueError, match="label_noise=.* is not allowed"):
      noise.add_label_noise(data, bad, 0)
  with pytest.raises(ValueError, match="label_noise_seed"):
    noise.add_label_noise(data, 0.1, -1)
