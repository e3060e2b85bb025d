r"""Host memory and input speed of `dataset.input` "memory" vs "stream".

Builds tfds data sets in the ArrayRecord format from the Fashion-MNIST idx
files (`make data-fashion-mnist`), resized to 64x64 (bilinear, antialiased),
at two sizes (the first N train images; the test split is the first 1,000
t10k images), then for each size, input and process count runs fresh
processes that each open the data set (memory: `data.load_dataset`;
stream: `data.stream.open_dataset`) and iterate one augmented training epoch
of `data.pipeline.train_dataset` (global batch 256, this process's rows), with
no model: the input pipeline alone. Each process reports its peak RSS
(`resource.getrusage`), its RSS after the imports (the baseline), and its
images/s over the epoch. Two processes run `jax.distributed` on CPU and
combine the streamed statistics with `process_allgather`.

Run: python benchmarks/streaming.py --data_dir runs/fmnist64 \
       [--sizes 10000,60000 --processes 1,2]
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _name(n: int) -> str:
  return f"fashion_mnist64_{n}"


def prepare(data_dir: str, sizes, image_size: int = 64) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mrmc_jax import data  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import stream as streaming  # pylint: disable=g-import-not-at-top
  full = data.load_dataset("fashion_mnist_idx")

  def resized(split, n):
    def pairs():
      for i in range(0, n, 1000):
        x = tf.image.resize(split.images[i:min(i + 1000, n)],
                            (image_size, image_size), antialias=True)
        x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8).numpy()
        yield from zip(x, split.labels[i:i + len(x)])
    return pairs

  for n in sizes:
    if os.path.isdir(os.path.join(data_dir, _name(n))):
      continue
    t0 = time.perf_counter()
    streaming.write_arrays(
        _name(n), data_dir,
        {"train": resized(full.train, n), "test": resized(full.test, 1000)},
        image_shape=(image_size, image_size, 1), num_classes=10,
        class_names=full.class_names)
    print(f"prepared {_name(n)} in {time.perf_counter() - t0:.0f} s",
          flush=True)
  del np


def worker(args) -> None:
  """One process: open the data, iterate one epoch, print a JSON line."""
  import jax  # pylint: disable=g-import-not-at-top
  if args.process_count > 1:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.process_count,
                               process_id=args.process_index)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from mrmc_jax import data as datasets  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import stream as streaming  # pylint: disable=g-import-not-at-top
  base = _rss_mb()
  t0 = time.perf_counter()
  name = _name(args.size)
  if args.input == "memory":
    data = datasets.load_dataset("tfds:" + name, args.data_dir)
  else:
    data = streaming.open_dataset(
        name, args.data_dir, process_index=args.process_index,
        process_count=args.process_count,
        allgather=multihost_utils.process_allgather)
  open_s = time.perf_counter() - t0
  ds = input_pipeline.train_dataset(
      data.train, batch_size=256, seed=0, epoch=0, augment=True,
      mean=data.mean, std=data.std, process_index=args.process_index,
      process_count=args.process_count)
  t0 = time.perf_counter()
  images = 0
  for b in ds.as_numpy_iterator():
    images += int(b["mask"].sum())
  seconds = time.perf_counter() - t0
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({
      "input": args.input, "size": args.size,
      "processes": args.process_count, "process": args.process_index,
      "baseline_rss_mb": round(base), "peak_rss_mb": round(peak),
      "open_s": round(open_s, 1), "images": images,
      "images_per_s": round(images / seconds)}), flush=True)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--sizes", default="10000,60000")
  parser.add_argument("--processes", default="1,2")
  parser.add_argument("--inputs", default="memory,stream")
  parser.add_argument("--worker", action="store_true")
  parser.add_argument("--input")
  parser.add_argument("--size", type=int)
  parser.add_argument("--process_index", type=int, default=0)
  parser.add_argument("--process_count", type=int, default=1)
  parser.add_argument("--coordinator")
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  sizes = [int(s) for s in args.sizes.split(",")]
  prepare(args.data_dir, sizes)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for n in sizes:
    for inp in args.inputs.split(","):
      for p in (int(s) for s in args.processes.split(",")):
        coordinator = f"127.0.0.1:{_free_port()}"
        procs = [subprocess.Popen(
            ["timeout", "-k", "10", "900", sys.executable, __file__,
             "--worker", f"--data_dir={args.data_dir}", f"--input={inp}",
             f"--size={n}", f"--process_index={i}", f"--process_count={p}",
             f"--coordinator={coordinator}"],
            env=env, stdout=subprocess.PIPE, text=True) for i in range(p)]
        for proc in procs:
          out, _ = proc.communicate()
          lines = [l for l in out.splitlines() if l.startswith("{")]
          print(lines[-1] if lines else f"failed: {proc.returncode}",
                flush=True)


if __name__ == "__main__":
  main()
