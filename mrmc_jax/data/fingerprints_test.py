"""Tests for mrmc_jax.data.fingerprints: every example counts."""

import dataclasses
import numpy as np
import pytest

from mrmc_jax.data import fingerprints as fp
from mrmc_jax.data import sources
from mrmc_jax.data import splits
from mrmc_jax.data import stream
from mrmc_jax.data import stream_test


def _with_train(data, images=None, labels=None):
  tr = data.train
  return dataclasses.replace(data, train=splits.ArraySplit(
      tr.images if images is None else images,
      tr.labels if labels is None else labels))


def test_in_memory_fingerprint_sees_every_pixel_and_label():
  data = sources.load_dataset("digits")
  base = fp.fingerprint(data)
  assert base == fp.fingerprint(sources.load_dataset("digits"))
  assert base["num_train"] == 1438 and base["image_shape"] == [8, 8, 1]
  # One pixel of one image that an evenly spaced sample of 256 rows skips.
  images = data.train.images.copy()
  images[1, 3, 3, 0] ^= 1
  changed = fp.fingerprint(_with_train(data, images=images))
  assert changed["train_images_sha256"] != base["train_images_sha256"]
  labels = data.train.labels.copy()
  labels[[1, 2]] = labels[[2, 1]] if labels[1] != labels[2] else labels[1]
  labels[1] = (labels[1] + 1) % 10
  changed = fp.fingerprint(_with_train(data, labels=labels))
  assert changed["train_labels_sha256"] != base["train_labels_sha256"]
  # The same bytes in another shape are other data.
  reshaped = data.train.images.reshape(-1, 4, 16, 1)
  assert fp.fingerprint(_with_train(data, images=reshaped))[
      "train_images_sha256"] != base["train_images_sha256"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  stream_test.write_digits32(path)
  return path


def test_stream_fingerprint_hashes_every_file_with_its_count(data_dir,
                                                             tmp_path):
  data = stream.open_dataset("digits32", data_dir)
  base = fp.fingerprint(data)
  files = base["train_files"]
  assert sum(f["records"] for f in files) == stream_test.N_TRAIN
  assert all(len(f["sha256"]) == 32 for f in files)
  # The same set with one pixel of one image changed: the hash of the file
  # holding it changes, the counts, shapes and labels do not.
  images, labels = stream_test._digits32()  # pylint: disable=protected-access
  images = images.copy()
  images[100, 5, 5, 0] ^= 1
  n = stream_test.N_TRAIN
  stream.write_arrays("digits32", tmp_path,
                      {"train": (images[:n], labels[:n]),
                       "test": (images[n:], labels[n:])},
                      image_shape=(32, 32, 1), num_classes=10)
  changed = fp.fingerprint(stream.open_dataset("digits32", tmp_path))
  assert changed["train_files"] != files
  assert {k: v for k, v in changed.items() if k != "train_files"} == {
      k: v for k, v in base.items() if k != "train_files"}


def test_stream_fingerprint_refuses_unknown_files_and_wrong_counts(data_dir):
  data = stream.open_dataset("digits32", data_dir)
  no_files = dataclasses.replace(
      data, train=dataclasses.replace(data.train, files=()))
  with pytest.raises(ValueError, match="names no files"):
    fp.fingerprint(no_files)
  short = dataclasses.replace(data, train=dataclasses.replace(
      data.train, source=data.train.source,
      labels=np.zeros(stream_test.N_TRAIN, np.int32)))
  short = dataclasses.replace(short, train=dataclasses.replace(
      short.train, files=short.train.files * 2))
  with pytest.raises(ValueError, match=r"hold 406 records but the split has "
                     "203"):
    fp.fingerprint(short)
