"""The stream equals the in-memory path on a tiny ArrayRecord tfds set."""

import functools

import numpy as np
import pytest

from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.data import sources
from mrmc_jax.data import stream as streaming

# 203 = 6 * 32 + 11: the last global batch is mostly padding.
N_TRAIN, N_TEST, BATCH = 203, 37, 32


@functools.cache
def _digits32():
  """UCI digits upscaled to 32x32 (so augmentation applies)."""
  d = sources.load_dataset("digits", test_fraction=0.0).train
  images = np.kron(d.images[:N_TRAIN + N_TEST], np.ones((1, 4, 4, 1),
                                                        np.uint8))
  return images, d.labels[:N_TRAIN + N_TEST]


def write_digits32(data_dir, name="digits32"):
  """Writes the tiny set (train 203, test 37 images of 32x32x1)."""
  images, labels = _digits32()
  return streaming.write_arrays(
      name, data_dir,
      {"train": (images[:N_TRAIN], labels[:N_TRAIN]),
       "test": (images[N_TRAIN:], labels[N_TRAIN:])},
      image_shape=(32, 32, 1), num_classes=10)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  write_digits32(path)
  return str(path)


def _batches(ds):
  return list(ds.as_numpy_iterator())


def _assert_same(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for k in w:
      np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def test_records_are_the_written_rows_and_stats_match_memory(data_dir):
  images, labels = _digits32()
  stream = streaming.open_dataset("digits32", data_dir)
  memory = sources.load_dataset("tfds:digits32", data_dir)
  np.testing.assert_array_equal(memory.train.images, images[:N_TRAIN])
  np.testing.assert_array_equal(memory.test.images, images[N_TRAIN:])
  np.testing.assert_array_equal(stream.train.labels, labels[:N_TRAIN])
  np.testing.assert_array_equal(stream.test.labels, labels[N_TRAIN:])
  assert stream.train.image_shape == (32, 32, 1)
  assert stream.num_classes == 10
  # Bit-identical statistics, from exact sums.
  np.testing.assert_array_equal(stream.mean, memory.mean)
  np.testing.assert_array_equal(stream.std, memory.std)


@pytest.mark.parametrize("process_count", [1, 2])
def test_train_batches_equal_memory_with_augmentation_and_coreset(
    data_dir, process_count):
  stream = streaming.open_dataset("digits32", data_dir)
  memory = sources.load_dataset("tfds:digits32", data_dir)
  coreset = np.flatnonzero(np.arange(N_TRAIN) % 3 == 0)
  for ids in (None, coreset):
    for p in range(process_count):
      kw = dict(batch_size=BATCH, seed=3, epoch=1, augment=True, ids=ids,
                process_index=p, process_count=process_count)
      got = _batches(input_pipeline.train_dataset(
          stream.train, mean=stream.mean, std=stream.std, **kw))
      want = _batches(input_pipeline.train_dataset(
          memory.train, mean=memory.mean, std=memory.std, **kw))
      _assert_same(got, want)
      n = N_TRAIN if ids is None else len(ids)
      assert len(got) == input_pipeline.num_batches(n, BATCH)
      assert got[0]["image"].shape == (BATCH // process_count, 32, 32, 1)
  got = _batches(input_pipeline.eval_dataset(
      stream.test, batch_size=BATCH, mean=stream.mean, std=stream.std))
  want = _batches(input_pipeline.eval_dataset(
      memory.test, batch_size=BATCH, mean=memory.mean, std=memory.std))
  _assert_same(got, want)


def test_shares_combine_to_the_whole(data_dir):
  # Two processes' shares, combined by a fake allgather that stacks the
  # arrays each would contribute, give the one-process statistics.
  one = streaming.open_dataset("digits32", data_dir)
  sent = {0: [], 1: []}

  def fake_allgather(p):
    # Both processes make the same calls in the same order: the k-th call
    # of process 0 meets the k-th of process 1.
    def allgather(x):
      k = len(sent[p])
      sent[p].append(x)
      return np.stack([sent[q][k] if k < len(sent[q]) else x
                       for q in range(2)])
    return allgather

  # Process 1 first, so that process 0 sees process 1's real share.
  streaming.open_dataset("digits32", data_dir, process_index=1,
                         process_count=2, allgather=fake_allgather(1))
  two = streaming.open_dataset("digits32", data_dir, process_index=0,
                               process_count=2, allgather=fake_allgather(0))
  np.testing.assert_array_equal(two.train.labels, one.train.labels)
  np.testing.assert_array_equal(two.test.labels, one.test.labels)
  np.testing.assert_array_equal(two.mean, one.mean)
  np.testing.assert_array_equal(two.std, one.std)


def test_bad_input_fails_fast(data_dir, tmp_path):
  with pytest.raises(ValueError, match="needs allgather"):
    streaming.open_dataset("digits32", data_dir, process_count=2,
                           process_index=0)
  with pytest.raises(ValueError, match="already exists"):
    write_digits32(data_dir)
  stream = streaming.open_dataset("digits32", data_dir)
  with pytest.raises(ValueError, match="ids must lie in"):
    input_pipeline.eval_dataset(stream.train, batch_size=BATCH, mean=0.5,
                                std=0.5, ids=[0, N_TRAIN])


def test_known_statistics_skip_the_pixel_pass(data_dir, monkeypatch):
  # A relaunch passes the statistics it kept: no image is decoded for them.
  first = streaming.open_dataset("digits32", data_dir)

  def no_pixel_pass(*args, **kwargs):
    raise AssertionError("the statistics pass ran")

  monkeypatch.setattr(streaming.stats, "pixel_sums", no_pixel_pass)
  again = streaming.open_dataset("digits32", data_dir,
                                 mean_std=(first.mean, first.std))
  np.testing.assert_array_equal(again.mean, first.mean)
  np.testing.assert_array_equal(again.std, first.std)
  np.testing.assert_array_equal(again.train.labels, first.train.labels)
  with pytest.raises(AssertionError, match="statistics pass"):
    streaming.open_dataset("digits32", data_dir)


def test_known_labels_and_statistics_read_no_record(data_dir, monkeypatch):
  full = streaming.open_dataset("digits32", data_dir)
  scans = []
  real = streaming.scan
  monkeypatch.setattr(streaming, "scan",
                      lambda *a, **k: scans.append(a) or real(*a, **k))
  labels = {"train": full.train.labels, "test": full.test.labels}
  known = streaming.open_dataset("digits32", data_dir,
                                 mean_std=(full.mean, full.std),
                                 labels=labels)
  assert not scans
  np.testing.assert_array_equal(known.train.labels, full.train.labels)
  np.testing.assert_array_equal(known.test.labels, full.test.labels)
  # Train labels without the statistics: the train split is scanned.
  streaming.open_dataset("digits32", data_dir, labels=labels)
  assert len(scans) == 1
  with pytest.raises(ValueError, match=r"labels\['test'\] must be \[37\]"):
    streaming.open_dataset("digits32", data_dir,
                           labels={"test": labels["test"][:5]})
