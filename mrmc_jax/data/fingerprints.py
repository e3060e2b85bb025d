"""A fingerprint of a loaded data set that sees every example it is used on.

A run records it and refuses to resume on other data, so it must change
whenever any image or label a result depends on changes: the train split's
and the test (or validation) split's, whose accuracy every summary reports.

* In memory (`ArraySplit`): SHA-256 over every train and test image (the
  uint8 array's bytes, with its shape) and every label. Fashion-MNIST
  (70,000 x 28 x 28, 52 MB): 0.15 s, against 5.4 s for one training epoch
  of its config's MLP (`benchmarks/fingerprint.py`, 2 shared CPU cores).
* Streamed (`stream.StreamSplit`): SHA-256 of each ArrayRecord file of the
  train and test splits, with the record count the file's own index gives
  (the counts must add up to each split's size). `file_records` computes
  them once, each process hashing its share of the files (the digests are
  gathered), together with each file's size, modification time and a
  digest per block (at most `MAX_BLOCKS` blocks a file). Given the records
  of an earlier launch (`known`), a file whose size and modification time
  are unchanged is not read again, save `samples` randomly chosen blocks
  per process, re-hashed and compared; a file whose metadata or sampled
  block differ is hashed whole again. Fashion-MNIST as PNG records (41 MB):
  0.15 s at 280 MB/s; a relaunch reads 4 MB per process (four 1-MiB
  blocks) in 0.013 s (`benchmarks/fingerprint.py`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import numpy as np

from mrmc_jax.data import splits

_CHUNK = 1 << 20
# Blocks per file with a stored digest (the sampled re-hash reads whole
# blocks): a few KB of digests a file, a block of >= 1 MiB.
MAX_BLOCKS = 64
# Blocks each process re-hashes at a relaunch.
SAMPLES = 4
# Keys that records written before them lack, and what they cover.
_ADDED = {"test_images_sha256": "the test images",
          "test_files": "the test split's files"}


def _digest(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    if a.size:  # (An empty array has no bytes; its shape is hashed.)
      h.update(memoryview(a).cast("B"))
  return h.hexdigest()[:32]


def _open_binary(path) -> BinaryIO:
  return open(path, "rb")


def labels_digest(labels: np.ndarray) -> str:
  """The hash of a split's labels that `fingerprint` records (int [N])."""
  return _digest(np.asarray(labels).astype(np.int32))


def file_digest(path: str | os.PathLike) -> str:
  """SHA-256 of a file's bytes (hex, first 32 digits)."""
  return _hash_file(path, os.path.getsize(path), _open_binary)["sha256"]


def record_count(path: str | os.PathLike) -> int:
  """The number of records of an ArrayRecord file, from its index."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    reader = array_record_module.ArrayRecordReader(os.fspath(path))
    try:
      return int(reader.num_records())
    finally:
      reader.close()
  except RuntimeError as e:
    raise ValueError(f"{os.fspath(path)} is not a readable ArrayRecord file "
                     f"({str(e).splitlines()[0]}); prepare the data set "
                     "again") from None


def block_size(size: int) -> int:
  """The block of a file of `size` bytes: a multiple of 1 MiB, <= 64 blocks."""
  return _CHUNK * max(1, -(-int(size) // (MAX_BLOCKS * _CHUNK)))


def _read_block(f: BinaryIO, size: int, *hashes) -> int:
  n = 0
  while n < size:
    chunk = f.read(min(_CHUNK, size - n))
    if not chunk:
      break
    for h in hashes:
      h.update(chunk)
    n += len(chunk)
  return n


def _hash_file(path, size: int, opener) -> dict[str, Any]:
  whole, blocks, bs = hashlib.sha256(), [], block_size(size)
  with opener(path) as f:
    while True:
      h = hashlib.sha256()
      n = _read_block(f, bs, whole, h)
      if n:
        blocks.append(h.hexdigest()[:16])
      if n < bs:
        break
  return {"sha256": whole.hexdigest()[:32], "block_size": bs,
          "blocks": blocks}


def _block_digest(path, index: int, bs: int, opener) -> str:
  h = hashlib.sha256()
  with opener(path) as f:
    f.seek(index * bs)
    _read_block(f, bs, h)
  return h.hexdigest()[:16]


def check_local(path: str | os.PathLike | None) -> None:
  """Refuses a URL where streamed files must be read (and stat-ed) locally.

  Raises:
    ValueError: one line naming the supported way.
  """
  if path is not None and "://" in os.fspath(path):
    raise ValueError(
        f"dataset.data_dir={os.fspath(path)!r}: streamed ArrayRecord files "
        "are read from a file system, not a URL; copy the data set to a "
        "local disk, or mount the bucket (e.g. gcsfuse), and set "
        "dataset.data_dir to that folder.")


def _stream_files(data: splits.Dataset) -> list[tuple[str, str]]:
  """(split, path) of every file of the streamed splits, in record order."""
  out = []
  for name, split in (("train", data.train), ("test", data.test)):
    if split is None or isinstance(split, splits.ArraySplit):
      continue
    files = getattr(split, "files", ())
    if not files:
      raise ValueError(
          f"cannot fingerprint the images of the {name} split, a "
          f"{type(split).__name__}: it names no files (need an ArraySplit "
          "or a StreamSplit with files)")
    for path in files:
      check_local(path)
      out.append((name, os.fspath(path)))
  return out


def _gather_json(mine: dict[int, dict], process_count: int,
                 allgather: Callable[[np.ndarray], np.ndarray]
                 ) -> dict[int, dict]:
  """Every process's `mine`, merged (a collective: every process calls it)."""
  if process_count == 1:
    return mine
  raw = np.frombuffer(json.dumps(mine).encode(), np.uint8)
  width = int(np.max(allgather(np.array([raw.size], np.int32))))
  padded = np.zeros(width, np.uint8)
  padded[:raw.size] = raw
  out = {}
  for row in np.asarray(allgather(padded)).reshape(process_count, width):
    text = bytes(row).rstrip(b"\0").decode()
    out.update({int(k): v for k, v in json.loads(text).items()})
  return out


def file_records(data: splits.Dataset, *,
                 known: Sequence[dict[str, Any]] = (),
                 rehash: bool = False,
                 samples: int = SAMPLES,
                 seed: int = 0,
                 process_index: int = 0,
                 process_count: int = 1,
                 allgather: Callable[[np.ndarray], np.ndarray] | None = None,
                 opener: Callable[[str], BinaryIO] = _open_binary
                 ) -> list[dict[str, Any]]:
  """Content hashes and metadata of every file of a streamed data set.

  Every process calls it: each hashes its share of the files (every
  `process_count`-th, from `process_index`) and `allgather` combines the
  shares. A file whose record in `known` has the same split, name, size and
  modification time is not read, except for the sampled blocks.

  Args:
    data: a loaded data set; its `StreamSplit`s name their files (an
      in-memory data set has none: []).
    known: the records of an earlier launch on the same data set (kept by
      the caller, e.g. in a workdir), or () to hash every file.
    rehash: hash every file whole, whatever `known` says.
    samples: blocks of this process's unchanged files re-hashed and
      compared with their `known` digests; a mismatch re-hashes that file.
    seed: picks the sampled blocks (with `process_index`).
    process_index: this process.
    process_count: number of processes.
    allgather: maps this process's array [k] to the stacked arrays of every
      process [P, k] (e.g. `multihost_utils.process_allgather`); needed when
      process_count > 1.
    opener: opens a file for binary reading (e.g. to count the bytes read).

  Returns:
    One dict per file, train then test, in record order: `split`, `file`
    (base name), `size`, `mtime_ns`, `records`, `sha256`, `block_size` and
    `blocks` (the SHA-256 of each block, 16 hex digits each).

  Raises:
    ValueError: a streamed split without files, a URL, or process_count > 1
      without `allgather`.
  """
  if process_count > 1 and allgather is None:
    raise ValueError("process_count > 1 needs allgather to combine the "
                     "processes' shares of the file hashes")
  files = _stream_files(data)
  if not files:
    return []
  old = {(r["split"], r["file"]): r for r in known}
  stat = {}
  reusable = []  # This process's files whose metadata are unchanged.
  for i in range(process_index, len(files), process_count):
    split, path = files[i]
    st = os.stat(path)
    stat[i] = {"split": split, "file": os.path.basename(path),
               "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    r = old.get((split, stat[i]["file"]))
    if (not rehash and r is not None and r.get("blocks") is not None and
        (r.get("size"), r.get("mtime_ns")) == (st.st_size, st.st_mtime_ns)
        and r.get("block_size") == block_size(st.st_size)):
      reusable.append(i)
  # The sample: blocks drawn uniformly from this process's unchanged files.
  pairs = [(i, b) for i in reusable
           for b in range(len(old[files[i][0], stat[i]["file"]]["blocks"]))]
  rng = np.random.default_rng([int(seed), int(process_index)])
  picked = rng.choice(len(pairs), min(samples, len(pairs)), replace=False)
  changed = set()
  for k in sorted(int(k) for k in picked):
    i, b = pairs[k]
    r = old[files[i][0], stat[i]["file"]]
    if _block_digest(files[i][1], b, r["block_size"], opener) != r[
        "blocks"][b]:
      changed.add(i)

  def describe(i):
    if i in reusable and i not in changed:
      r = old[files[i][0], stat[i]["file"]]
      return {**stat[i], **{k: r[k] for k in (
          "records", "sha256", "block_size", "blocks")}}
    path = files[i][1]
    return {**stat[i], "records": record_count(path),
            **_hash_file(path, stat[i]["size"], opener)}

  # hashlib releases the GIL on large updates: threads hash files in
  # parallel; the result keeps the files' order.
  with concurrent.futures.ThreadPoolExecutor(
      min(8, os.cpu_count() or 1)) as pool:
    mine = dict(zip(stat, pool.map(describe, stat)))
  every = _gather_json(mine, process_count, allgather)
  return [every[i] for i in range(len(files))]


def _split_content(name: str, split, records) -> dict[str, Any]:
  if isinstance(split, splits.ArraySplit):
    return {f"{name}_images_sha256": _digest(split.images)}
  mine = [{k: r[k] for k in ("file", "records", "sha256")}
          for r in records if r["split"] == name]
  total = sum(r["records"] for r in mine)
  if total != len(split):
    raise ValueError(f"the {name} split's {len(mine)} files hold {total} "
                     f"records but the split has {len(split)} examples")
  return {f"{name}_files": mine}


def fingerprint(data: splits.Dataset, *,
                files: Sequence[dict[str, Any]] | None = None
                ) -> dict[str, Any]:
  """Counts, shapes and content hashes of every train and test example.

  Args:
    data: a loaded data set; each split an `ArraySplit` (every image
      hashed) or a `stream.StreamSplit` (every file hashed).
    files: `file_records(data, ...)` computed already (e.g. checked by
      metadata at a relaunch), or None to hash every file here.

  Returns:
    A JSON-able dict: `num_train`, `image_shape`, `num_classes`,
    `train_labels_sha256`, then `train_images_sha256` (in memory) or
    `train_files` (streamed: per file its name, record count and SHA-256),
    and with a test split `num_test`, `test_labels_sha256` and
    `test_images_sha256` or `test_files`.
  """
  if files is None:
    files = file_records(data)
  train = data.train
  out = {"num_train": int(len(train)),
         "image_shape": [int(d) for d in train.image_shape],
         "num_classes": int(data.num_classes),
         "train_labels_sha256": labels_digest(train.labels),
         **_split_content("train", train, files)}
  if data.test is not None:
    out["num_test"] = int(len(data.test))
    out["test_labels_sha256"] = labels_digest(data.test.labels)
    out.update(_split_content("test", data.test, files))
  return out


def older_record(stored: dict[str, Any], given: dict[str, Any]
                 ) -> str | None:
  """What a fingerprint written before some keys existed cannot vouch for.

  Args:
    stored: a fingerprint kept by an earlier run.
    given: `fingerprint` of the data loaded now.

  Returns:
    None unless `stored` agrees with `given` on every key it holds and
    lacks keys `given` has; then what those keys cover (e.g. "the test
    images"), which `stored` cannot show to be unchanged.
  """
  missing = [k for k in given if k not in stored]
  if not missing or any(stored[k] != given.get(k) for k in stored):
    return None
  return " and ".join(_ADDED.get(k, k) for k in missing)
