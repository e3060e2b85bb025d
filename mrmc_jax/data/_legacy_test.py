"""Tests for the deprecated unbatched path (mrmc_jax.data._legacy)."""

import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mrmc_jax.data import _legacy
from mrmc_jax.data import pipeline as ip
from mrmc_jax.data import sources
from mrmc_jax.data import splits
from mrmc_jax.data.pipeline_test import _batches
from mrmc_jax.data.pipeline_test import _id_split
from mrmc_jax.data.pipeline_test import _pixel
from mrmc_jax.data.pipeline_test import _stack
from mrmc_jax.data.pipeline_test import N


def _sliceable_mock(images, labels):
  """A tfds mock whose splits honour `name[start:stop]` slicing."""

  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, decoders, read_config, kwargs
    match = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", split)
    start = int(match.group(2) or 0)
    stop = int(match.group(3) or len(labels))
    return tf.data.Dataset.from_tensor_slices({
        "image": images[start:stop], "label": labels[start:stop]})

  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_stream_ids_match_in_memory_rows_and_slice_per_process():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 11).astype(np.int64)
  with _sliceable_mock(images, labels):
    in_memory = sources.load_dataset("cifar10")
    seen = []
    for p in range(3):
      for ex in _legacy.tfds_stream("cifar10", "train", process_index=p,
                                     process_count=3).as_numpy_iterator():
        np.testing.assert_array_equal(ex["image"],
                                      in_memory.train.images[ex["id"]])
        assert ex["label"] == in_memory.train.labels[ex["id"]]
        seen.append((p, int(ex["id"])))
  # Contiguous, in order, first processes take the extra examples.
  assert seen == [(p, i) for p, (a, b) in enumerate(
      splits.process_slice(11, p, 3) for p in range(3)) for i in range(a, b)]


def test_apply_mask_gives_ceil_core_batches():
  split = _id_split()
  mask = np.zeros(N, bool)
  mask[[1, 4, 9, 16, 25, 36, 3, 7, 20]] = True
  ds = _legacy.apply_mask(_legacy.examples_dataset(split), mask)
  batches = _batches(_legacy.pad_and_batch(ds, 4, mean=0.0, std=1 / 255))
  assert len(batches) == ip.num_batches(mask.sum(), 4) == 3
  ids, row_mask = _stack(batches, "id"), _stack(batches, "mask")
  np.testing.assert_array_equal(ids[row_mask], np.flatnonzero(mask))
  np.testing.assert_array_equal(row_mask, np.arange(12) < 9)
  np.testing.assert_array_equal(
      _pixel(_stack(batches, "image"))[row_mask], ids[row_mask])
  assert batches[0]["image"].shape == (4, 4, 4, 1)


def test_pad_and_batch_exact_multiple_and_total_batches():
  split = _id_split(n=8)
  batches = _batches(_legacy.pad_and_batch(_legacy.examples_dataset(split), 4,
                                      mean=0.0, std=1.0))
  assert len(batches) == 2 and all(b["mask"].all() for b in batches)
  batches = _batches(_legacy.pad_and_batch(_legacy.examples_dataset(split), 4,
                                      mean=0.0, std=1.0, total_batches=4))
  assert len(batches) == 4 and not batches[3]["mask"].any()


def test_apply_mask_on_a_plain_tf_dataset():
  ds = tf.data.Dataset.from_tensor_slices({"id": np.arange(6)})
  kept = [int(ex["id"]) for ex in _legacy.apply_mask(
      ds, np.array([1, 0, 0, 1, 1, 0], bool)).as_numpy_iterator()]
  assert kept == [0, 3, 4]
