"""Tests for mrmc_jax.data.noise: exact, seeded, train only, the transitions."""

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


# Class-conditional noise.


def _labels(per_class, num_classes=10):
  return np.repeat(np.arange(num_classes), per_class).astype(np.int32)


def test_pairs_flip_exactly_the_fraction_of_each_paired_class():
  labels = _labels(2000)
  targets = noise.pair_targets("mnist", 10, "mnist5k")
  noisy, rows = noise.flip_labels(labels, 0.3, 10, np.random.default_rng(0),
                                  targets)
  np.testing.assert_array_equal(np.flatnonzero(noisy != labels), rows)
  per_class = np.bincount(labels[rows], minlength=10)
  paired = [1, 3, 4, 5, 6, 7, 8, 9]
  np.testing.assert_array_equal(per_class[paired], 600)  # round(0.3 * 2000)
  assert per_class[0] == per_class[2] == 0  # no partner: never flipped
  # Only the map's transitions occur, each pair both ways.
  moves = set(zip(labels[rows].tolist(), noisy[rows].tolist()))
  assert moves == {(1, 7), (7, 1), (3, 8), (8, 3), (4, 9), (9, 4), (5, 6),
                   (6, 5)}


def test_matrix_targets_follow_the_rows_within_binomial_tolerance():
  c, n = 4, 20000
  labels = _labels(n, c)
  t = np.array([[0, .5, .5, 0], [0, 0, 0, 0], [.2, .8, 0, 0],
                [0, 0, 1., 0]])
  noisy, rows = noise.flip_labels(labels, 0.4, c, np.random.default_rng(1),
                                  t)
  for i in (0, 2, 3):
    got = noisy[rows][labels[rows] == i]
    assert got.size == 8000
    share = np.bincount(got, minlength=c) / got.size
    tol = 4 * np.sqrt(t[i] * (1 - t[i]) / got.size) + 1e-12
    assert (np.abs(share - t[i]) <= tol).all(), (i, share)
  assert not (labels[rows] == 1).any()


def test_class_conditional_noise_is_seeded_and_flips_validation_too():
  data = splits.validation_split(sources.load_dataset("digits"), 0.2, 0)
  t = noise.pair_targets("1-7,3>8", 10)
  a = noise.add_label_noise(data, 0.3, 5, targets=t, noisy_test=True)
  b = noise.add_label_noise(data, 0.3, 5, targets=t, noisy_test=True)
  c = noise.add_label_noise(data, 0.3, 6, targets=t, noisy_test=True)
  np.testing.assert_array_equal(a[0].train.labels, b[0].train.labels)
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[2], b[2])
  assert not np.array_equal(a[1], c[1])
  old, new = data.train.labels[a[1]], a[0].train.labels[a[1]]
  assert set(zip(old.tolist(), new.tolist())) == {(1, 7), (7, 1), (3, 8)}
  assert a[2].size and (np.isin(data.test.labels[a[2]], (1, 3, 7))).all()
  np.testing.assert_array_equal(
      np.flatnonzero(a[0].test.labels != data.test.labels), a[2])


def test_kind_parsing_and_refusals():
  assert noise.parse_kind("symmetric") == ("symmetric", "")
  assert noise.parse_kind("pairs:fashion_mnist") == ("pairs", "fashion_mnist")
  assert noise.parse_kind("pairs:1-7, 3>8") == ("pairs", "1-7, 3>8")
  assert noise.parse_kind("matrix:t.npy") == ("matrix", "t.npy")
  for bad in ("uniform", "pairs:", "pairs:cifar", "pairs:1-", "matrix:",
              "pairs:1~7", None):
    with pytest.raises(ValueError, match="label_noise_kind=.* not allowed"):
      noise.parse_kind(bad)
  with pytest.raises(ValueError, match="written for fashion_mnist_idx"):
    noise.pair_targets("fashion_mnist", 10, "mnist5k")
  for name in ("fashion_mnist", "tfds:fashion_mnist", "fashion_mnist:3.0.1"):
    assert noise.pair_targets("fashion_mnist", 10, name)[0, 6] == 1.0
  with pytest.raises(ValueError, match="written for"):
    noise.pair_targets("mnist", 10, "npz:mnist")
  with pytest.raises(ValueError, match="10 classes"):
    noise.pair_targets("mnist", 3, None)
  for bad in ("1-1", "1-10"):
    with pytest.raises(ValueError, match="must differ and lie in"):
      noise.pair_targets(bad, 10)


def test_target_matrix_refusals():
  ok = np.array([[0, 1, 0], [.5, 0, .5], [0, 0, 0]])
  np.testing.assert_allclose(noise.check_targets(ok, 3), ok)
  with pytest.raises(ValueError, match=r"shape \(3, 3\).*must be 4 x 4"):
    noise.check_targets(ok, 4)
  with pytest.raises(ValueError, match="row 1 sums to 0.9"):
    noise.check_targets([[0, 1, 0], [.5, 0, .4], [0, 0, 0]], 3)
  with pytest.raises(ValueError, match="on the diagonal"):
    noise.check_targets([[.5, .5, 0], [1, 0, 0], [0, 0, 0]], 3)
  with pytest.raises(ValueError, match="outside"):
    noise.check_targets([[0, 1.5, -.5], [1, 0, 0], [0, 0, 0]], 3)
  with pytest.raises(ValueError, match="all zero"):
    noise.check_targets(np.zeros((3, 3)), 3)


def test_flipped_share_by_class():
  labels = np.array([0, 0, 0, 1, 1, 2])
  mask = np.array([1, 1, 0, 1, 1, 0], bool)
  share = noise.flipped_share_by_class(mask, [1, 2, 4], labels, 3)
  np.testing.assert_allclose(share[:2], [0.5, 0.5])
  assert np.isnan(share[2])
