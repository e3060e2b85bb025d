r"""Cost of the data fingerprint next to one epoch, on full Fashion-MNIST.

In memory (`data.load_dataset("fashion_mnist_idx")`, 60,000 x 28 x 28):
`data.fingerprint` (SHA-256 of every image and label), against one epoch of
the input pipeline alone and one training epoch of `configs/fashion_mnist.py`'s
model (MLP, batch 256, per-example statistics on) on this machine's CPU.

Streamed: the same images written as a tfds ArrayRecord set (PNG records)
into `--data_dir`, then `data.fingerprint` of `stream.open_dataset` (SHA-256
of every record file with its record count) against the statistics pass
that `open_dataset` runs (decode every image); and the fingerprint's launch
I/O per process (`fingerprints.file_records`, bytes counted by a wrapper
around the file reads) at a first launch and at a relaunch that checks the
files by metadata and a sampled re-hash, on 1 and 2 processes (threads
standing for processes, the digests gathered as `process_allgather`
would); and the bytes `open_dataset` reads at a relaunch (/proc/self/io
rchar) with known statistics, and with known statistics and labels.

Run: python benchmarks/fingerprint.py --data_dir runs/fmnist_ar
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _best(fn, repeats: int = 3) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  import mrmc_jax as mj  # pylint: disable=g-import-not-at-top
  from mrmc_jax import data  # pylint: disable=g-import-not-at-top
  from mrmc_jax import models  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import fingerprints as fp  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import fingerprints_test  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import stream  # pylint: disable=g-import-not-at-top

  full = data.load_dataset("fashion_mnist_idx")
  out = {"num_train": len(full.train),
         "train_mb": round(full.train.images.nbytes / 2**20, 1)}
  out["fingerprint_memory_s"] = round(_best(lambda: data.fingerprint(full)),
                                      3)

  def batches():
    return pipeline.train_dataset(
        full.train, batch_size=256, seed=0, epoch=0, augment=False,
        mean=full.mean, std=full.std).as_numpy_iterator()

  out["input_epoch_s"] = round(_best(lambda: sum(1 for _ in batches()), 1),
                               2)
  model = models.create_model("mlp", full.num_classes)
  apply_fn = mj.module_apply_fn(model)
  variables = models.init_variables(model, jax.random.key(0),
                                    full.train.image_shape)
  tx = optax.sgd(0.1, momentum=0.9)
  state = mj.create_train_state(variables, tx)
  step = jax.jit(mj.make_train_step(apply_fn, tx), donate_argnums=0)
  for b in batches():  # compile, and warm the caches
    state, stats = step(state, b)
  jax.block_until_ready(stats)
  t0 = time.perf_counter()
  for b in batches():
    state, stats = step(state, b)
  jax.block_until_ready(stats)
  out["train_epoch_s"] = round(time.perf_counter() - t0, 2)

  name = "fashion_mnist_ar"
  if not os.path.isdir(os.path.join(args.data_dir, name)):
    t0 = time.perf_counter()
    stream.write_arrays(
        name, args.data_dir,
        {"train": (full.train.images, full.train.labels),
         "test": (full.test.images, full.test.labels)},
        image_shape=full.image_shape, num_classes=10,
        class_names=full.class_names)
    out["prepare_s"] = round(time.perf_counter() - t0, 1)
  t0 = time.perf_counter()
  streamed = stream.open_dataset(name, args.data_dir)
  out["stream_stats_pass_s"] = round(time.perf_counter() - t0, 2)
  np.testing.assert_array_equal(streamed.mean, full.mean)
  paths = [*streamed.train.files, *streamed.test.files]
  record_bytes = sum(os.path.getsize(p) for p in paths)
  out["stream_files"] = len(paths)
  out["stream_mb"] = round(record_bytes / 2**20, 1)
  seconds = _best(lambda: data.fingerprint(streamed))
  out["fingerprint_stream_s"] = round(seconds, 3)
  out["fingerprint_stream_mb_per_s"] = round(record_bytes / 2**20 / seconds)

  # Launch I/O of the fingerprint, per process: the bytes its file reads
  # return (a counting opener), at the first launch and at a relaunch that
  # has the first launch's records (`known`), on P simulated processes.
  for p_count in (1, 2):
    first = [fingerprints_test.Counting() for _ in range(p_count)]
    again = [fingerprints_test.Counting() for _ in range(p_count)]
    records = fingerprints_test.threaded(
        p_count, lambda p, gather, c=first: fp.file_records(
            streamed, process_index=p, process_count=p_count,
            allgather=gather, opener=c[p]))[0]
    t0 = time.perf_counter()
    again_records = fingerprints_test.threaded(
        p_count, lambda p, gather, c=again: fp.file_records(
            streamed, known=records, seed=1, process_index=p,
            process_count=p_count, allgather=gather, opener=c[p]))[0]
    relaunch_s = time.perf_counter() - t0
    assert again_records == records
    out[f"P{p_count}_first_launch_mb_per_process"] = [
        round(c.total / 2**20, 2) for c in first]
    out[f"P{p_count}_relaunch_mb_per_process"] = [
        round(c.total / 2**20, 2) for c in again]
    out[f"P{p_count}_relaunch_s"] = round(relaunch_s, 3)
  out["records_json_kb"] = round(len(json.dumps(records)) / 2**10, 1)
  # The rest of a relaunch's input I/O: `open_dataset` with known
  # statistics (a label scan, in ArrayRecord's C++ reader), and with known
  # statistics and labels (as the runner relaunches): the bytes this process
  # read from files meanwhile (/proc/self/io rchar).
  known = {"mean_std": (streamed.mean, streamed.std)}
  for key, extra in (("open_known_stats_mb", {}),
                     ("open_known_stats_and_labels_mb", {"labels": {
                         "train": streamed.train.labels,
                         "test": streamed.test.labels}})):
    before = _rchar()
    stream.open_dataset(name, args.data_dir, **known, **extra)
    out[key] = round((_rchar() - before) / 2**20, 2)
  print(json.dumps(out), flush=True)


def _rchar() -> int:
  with open("/proc/self/io") as f:
    return int(next(l for l in f if l.startswith("rchar:")).split()[1])


if __name__ == "__main__":
  main()
