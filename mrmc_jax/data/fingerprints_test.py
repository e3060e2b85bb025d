"""Tests for mrmc_jax.data.fingerprints: every example counts."""

import collections
import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import threading

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


def test_a_damaged_index_is_one_line(data_dir, tmp_path):
  data = _copy_set(data_dir, tmp_path / "set")
  path = data.train.files[0]
  raw = bytearray(open(path, "rb").read())
  raw[(1 << 16) + 4] ^= 0xFF  # The block header at 64 KiB.
  open(path, "wb").write(bytes(raw))
  with pytest.raises(ValueError, match="not a readable ArrayRecord file"):
    fp.fingerprint(data)


def test_test_and_validation_images_are_in_the_fingerprint():
  data = sources.load_dataset("digits")
  base = fp.fingerprint(data)
  images = data.test.images.copy()
  images[-1, 7, 7, 0] ^= 1
  changed = fp.fingerprint(dataclasses.replace(
      data, test=splits.ArraySplit(images, data.test.labels)))
  assert changed["test_images_sha256"] != base["test_images_sha256"]
  assert {k: v for k, v in changed.items() if k != "test_images_sha256"} == {
      k: v for k, v in base.items() if k != "test_images_sha256"}
  # A validation split is carved from train: its images are the test ones.
  val = splits.validation_split(data, 0.2, 0)
  images = data.train.images.copy()
  held = splits.stratified_holdout(data.train.labels, 0.2, 0)[1]
  images[held[0], 0, 0, 0] ^= 1
  other = splits.validation_split(_with_train(data, images=images), 0.2, 0)
  a, b = fp.fingerprint(val), fp.fingerprint(other)
  assert a["train_images_sha256"] == b["train_images_sha256"]
  assert a["test_images_sha256"] != b["test_images_sha256"]


def test_an_empty_test_split_has_a_fingerprint():
  data = sources.load_dataset("digits")
  empty = dataclasses.replace(data, test=splits.ArraySplit(
      data.test.images[:0], data.test.labels[:0]))
  got = fp.fingerprint(empty)
  assert got["num_test"] == 0
  assert got["test_images_sha256"] != fp.fingerprint(data)[
      "test_images_sha256"]


def test_older_record_names_what_it_cannot_vouch_for():
  given = fp.fingerprint(sources.load_dataset("digits"))
  old = {k: v for k, v in given.items() if k != "test_images_sha256"}
  assert fp.older_record(old, given) == "the test images"
  assert fp.older_record(given, given) is None
  # An older record that also differs is other data, not an older record.
  assert fp.older_record({**old, "num_train": 1}, given) is None


def test_block_digests_cover_the_file(tmp_path):
  path = tmp_path / "f"
  raw = np.random.default_rng(0).bytes(3 * fp._CHUNK + 12345)  # pylint: disable=protected-access
  path.write_bytes(raw)
  assert fp.block_size(len(raw)) == fp._CHUNK  # pylint: disable=protected-access
  big = fp.MAX_BLOCKS * fp._CHUNK + 1  # pylint: disable=protected-access
  assert fp.block_size(big) == 2 * fp._CHUNK  # pylint: disable=protected-access
  got = fp._hash_file(path, len(raw), fp._open_binary)  # pylint: disable=protected-access
  assert got["sha256"] == fp.file_digest(path)
  assert got["sha256"] == hashlib.sha256(raw).hexdigest()[:32]
  bs = got["block_size"]
  assert got["blocks"] == [hashlib.sha256(raw[i:i + bs]).hexdigest()[:16]
                           for i in range(0, len(raw), bs)]
  assert fp._block_digest(path, 3, bs, fp._open_binary) == got["blocks"][3]  # pylint: disable=protected-access


class Counting:
  """An opener that counts the bytes its files' reads return, per file."""

  def __init__(self):
    self.read = collections.Counter()

  def __call__(self, path):
    f = open(path, "rb")
    counter, name = self.read, os.path.basename(path)
    real = f.read

    def read(n=-1):
      out = real(n)
      counter[name] += len(out)
      return out

    f.read = read
    return f

  @property
  def total(self):
    return sum(self.read.values())


def _copy_set(src, dst):
  shutil.copytree(src, dst, copy_function=shutil.copy2)
  return stream.open_dataset("digits32", dst)


def test_relaunch_reads_metadata_and_samples_only(data_dir, tmp_path):
  data = _copy_set(data_dir, tmp_path / "set")
  files = [*data.train.files, *data.test.files]
  size = sum(os.path.getsize(f) for f in files)
  first = Counting()
  records = fp.file_records(data, opener=first)
  assert first.total == size
  assert fp.fingerprint(data, files=records) == fp.fingerprint(data)
  again = Counting()
  assert fp.file_records(data, known=records, samples=0,
                         opener=again) == records
  assert again.total == 0
  one = Counting()
  assert fp.file_records(data, known=records, samples=1, seed=3,
                         opener=one) == records
  assert len(one.read) == 1 and one.total <= fp._CHUNK  # pylint: disable=protected-access
  full = Counting()
  assert fp.file_records(data, known=records, rehash=True,
                         opener=full) == records
  assert full.total == size
  # A copy with new modification times is hashed again: the same digests.
  copied = stream.open_dataset("digits32", shutil.copytree(
      tmp_path / "set", tmp_path / "copy"))
  recopied = Counting()
  got = fp.file_records(copied, known=records, opener=recopied)
  assert recopied.total == size
  assert fp.fingerprint(copied, files=got) == fp.fingerprint(data)


def test_a_change_that_keeps_size_and_mtime_is_found_by_the_sample(
    data_dir, tmp_path):
  data = _copy_set(data_dir, tmp_path / "set")
  records = fp.file_records(data)
  path = data.test.files[0]
  st = os.stat(path)
  raw = bytearray(open(path, "rb").read())
  raw[200] ^= 0xFF  # In the first chunk's records.
  open(path, "wb").write(bytes(raw))
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  # Not sampled: the metadata vouch for the file (the limit of the check).
  assert fp.file_records(data, known=records, samples=0) == records
  # Sampled (one block per tiny file): hashed again, the digest differs.
  got = fp.file_records(data, known=records, samples=2)
  assert [r["sha256"] == k["sha256"] for r, k in zip(got, records)] == [
      True, False]
  assert fp.fingerprint(data, files=got)["test_files"] != fp.fingerprint(
      data, files=records)["test_files"]


def threaded(process_count, fn):
  """fn(process_index, allgather) on threads standing for processes."""
  barrier = threading.Barrier(process_count)
  slots = [None] * process_count

  def run(p):
    def allgather(x):
      slots[p] = np.asarray(x)
      barrier.wait()
      out = np.stack(slots)
      barrier.wait()
      return out
    return fn(p, allgather)

  with concurrent.futures.ThreadPoolExecutor(process_count) as pool:
    return list(pool.map(run, range(process_count)))


def test_processes_hash_their_share_and_gather_the_digests(data_dir):
  data = stream.open_dataset("digits32", data_dir)
  alone = fp.file_records(data)
  counters = [Counting(), Counting()]
  got = threaded(2, lambda p, gather: fp.file_records(
      data, process_index=p, process_count=2, allgather=gather,
      opener=counters[p]))
  assert got == [alone, alone]
  assert [set(c.read) for c in counters] == [
      {os.path.basename(data.train.files[0])},
      {os.path.basename(data.test.files[0])}]
  with pytest.raises(ValueError, match="needs allgather"):
    fp.file_records(data, process_count=2)


def test_a_url_is_refused_with_the_supported_way(data_dir):
  data = stream.open_dataset("digits32", data_dir)
  url = dataclasses.replace(data, train=dataclasses.replace(
      data.train, files=("gs://bucket/digits32/train.array_record",)))
  with pytest.raises(ValueError, match="mount the bucket"):
    fp.file_records(url)
  fp.check_local(str(data_dir))
  with pytest.raises(ValueError, match=r"dataset.data_dir='gs://b/tfds'"):
    fp.check_local("gs://b/tfds")
