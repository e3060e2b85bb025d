"""Tests for mrmc_jax.data.splits: ids, process ranges, holdouts, labels."""

import numpy as np
import pytest

from mrmc_jax.data import splits
from mrmc_jax.data import sources
from mrmc_jax.data import stats


def test_splits_are_read_only():
  ds = sources.load_dataset("digits")
  with pytest.raises(ValueError):
    ds.train.images[0, 0, 0, 0] = 1


def test_process_slice_tiles_evenly():
  ranges = [splits.process_slice(10, p, 4) for p in range(4)]
  assert ranges == [(0, 3), (3, 6), (6, 8), (8, 10)]
  assert splits.process_slice(2, 3, 4) == (2, 2)
  with pytest.raises(ValueError):
    splits.process_slice(10, 4, 4)


def test_array_split_slice_keeps_global_ids():
  split = splits.ArraySplit(np.zeros((10, 2, 2, 1), np.uint8),
                              np.arange(10))
  part = split.slice(*splits.process_slice(10, 1, 2))
  np.testing.assert_array_equal(part.ids, np.arange(5, 10))
  np.testing.assert_array_equal(part.rows([5, 9]), [0, 4])
  with pytest.raises(ValueError, match="ids must lie in"):
    part.rows([4])


def test_array_split_validates():
  with pytest.raises(ValueError, match="uint8"):
    splits.ArraySplit(np.zeros((2, 2, 2, 1), np.float32), np.zeros(2))
  with pytest.raises(ValueError, match="labels must be"):
    splits.ArraySplit(np.zeros((2, 2, 2, 1), np.uint8), np.zeros(3, int))


def test_stratified_holdout():
  labels = np.array([0] * 10 + [1] * 5)
  train, test = splits.stratified_holdout(labels, 0.2, seed=0)
  assert np.bincount(labels[test]).tolist() == [2, 1]
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(15))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_validation_split_is_stratified_and_replaces_test():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (100, 2, 2, 1), dtype=np.uint8)
  labels = np.repeat(np.arange(4), 25)
  split = splits.ArraySplit(images, labels)
  mean, std = stats.compute_mean_std(images)
  data = splits.Dataset(name="t", train=split,
                          test=splits.ArraySplit(images[:3], labels[:3]),
                          num_classes=4, mean=mean, std=std)
  out = splits.validation_split(data, 0.2, seed=1)
  assert len(out.train.labels) == 80 and len(out.test.labels) == 20
  np.testing.assert_array_equal(np.bincount(out.test.labels), [5] * 4)
  # Disjoint rows that together are the train split.
  rows = {im.tobytes() for im in out.train.images} | {
      im.tobytes() for im in out.test.images}
  assert len(rows) == len({im.tobytes() for im in images})
  np.testing.assert_allclose(out.mean,
                             stats.compute_mean_std(out.train.images)[0])
  again = splits.validation_split(data, 0.2, seed=1)
  np.testing.assert_array_equal(again.test.images, out.test.images)
  with pytest.raises(ValueError, match="fraction=0.0 is not allowed"):
    splits.validation_split(data, 0.0, seed=1)


def test_zero_size_images_are_refused():
  with pytest.raises(ValueError, match=r"H, W, C >= 1.*\(3, 0, 4, 1\)"):
    splits.ArraySplit(np.zeros((3, 0, 4, 1), np.uint8), np.zeros(3, int))


def test_check_labels_refuses_absurd_class_counts():
  labels = np.r_[np.arange(10).repeat(3), 100_000]
  with pytest.raises(ValueError) as info:
    splits.check_labels(labels, None, None, "f.npz")
  message = str(info.value)
  assert "\n" not in message
  for part in ("f.npz", "100001 classes", "largest label 100000",
               "11 distinct"):
    assert part in message
  # Up to MAX_CLASS_SPREAD x the distinct labels is a subset, accepted.
  assert splits.check_labels(np.array([0, 19]), None, None, "f") == 20
  with pytest.raises(ValueError, match="imply 21 classes"):
    splits.check_labels(np.array([0, 20]), None, None, "f")
  # A stated class count is the source's word, but must cover the labels.
  assert splits.check_labels(labels, None, 100_001, "f") == 100_001
  with pytest.raises(ValueError, match="num_classes=10 but the labels go up"):
    splits.check_labels(np.arange(11), None, 10, "f")


def test_check_labels_test_classes_absent_from_train():
  train, test = np.array([0, 0, 1, 1]), np.array([1, 2, 2])
  with pytest.raises(ValueError,
                     match=r"f: 2 of 3 test examples .* absent .* \[2\]"):
    splits.check_labels(train, test, None, "f")
  with pytest.warns(UserWarning, match="2 of 3 test examples"):
    assert splits.check_labels(train, test, 3, "f", absent="warn") == 3
  assert splits.check_labels(train, np.array([1, 0]), None, "f") == 2
