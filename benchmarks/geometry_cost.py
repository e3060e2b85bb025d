"""What k-center greedy and herding cost (`mrmc_jax.methods.geometry`).

1. Fashion-MNIST size: N = 60,000 features of D = 256 in 10 classes,
   class-wise (the default) at ratios 0.5 and 0.1, and global at 0.1.
2. ImageNet size, class-wise: 1000 classes of 1,281 rows (1.28M), D = 512.
   The greedy runs in chunks of one fixed shape (`geometry.CHUNK_ELEMENTS`
   floats: 93 classes of 1,408 padded rows at D = 512), one after the
   other, so the whole run costs the number of chunks times one chunk:
   one chunk is measured and the total extrapolated from it.

Each time is the median of `--repeats` calls after a first call that
compiles (its extra time is printed as the compile time). Features are
Gaussian; the cost does not depend on their values (fixed loop lengths).

Run: python benchmarks/geometry_cost.py [--repeats 3] [--skip_global]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from mrmc_jax.methods import geometry


def _time(fn, repeats):
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  med = float(np.median(times)) if times else first
  return med, max(0.0, first - med)


def _methods(features, labels, ratio, num_classes, class_balanced):
  return {
      "kcenter": lambda: geometry.kcenter_select(
          features, labels, ratio, num_classes=num_classes,
          class_balanced=class_balanced),
      "herding": lambda: geometry.herding_select(
          features, labels, ratio, num_classes=num_classes,
          class_balanced=class_balanced),
  }


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--n", type=int, default=60000)
  p.add_argument("--dim", type=int, default=256)
  p.add_argument("--skip_global", action="store_true")
  p.add_argument("--imagenet_dim", type=int, default=512)
  p.add_argument("--imagenet_ratio", type=float, default=0.5)
  args = p.parse_args()
  print(f"devices={jax.devices()}")
  rng = np.random.default_rng(0)

  feats = rng.normal(size=(args.n, args.dim)).astype(np.float32)
  labels = rng.permutation(np.arange(args.n) % 10)
  cells = [(True, 0.5), (True, 0.1)] + ([] if args.skip_global
                                        else [(False, 0.1)])
  for balanced, ratio in cells:
    for name, fn in _methods(feats, labels, ratio, 10, balanced).items():
      sec, comp = _time(fn, args.repeats if balanced else 0)
      print(f"N={args.n} D={args.dim} {'class-wise' if balanced else 'global'}"
            f" ratio={ratio} {name:8s} {sec:8.2f} s (compile {comp:.2f} s)")

  # ImageNet, class-wise: one full chunk of classes, measured.
  classes, per_class, dim = 1000, 1281, args.imagenet_dim
  rows = -(-per_class // 128) * 128
  per_chunk = max(1, min(classes, geometry.CHUNK_ELEMENTS // (rows * dim)))
  chunks = -(-classes // per_chunk)
  n = per_chunk * per_class
  feats = rng.normal(size=(n, dim)).astype(np.float32)
  labels = np.repeat(np.arange(per_chunk), per_class)
  for name, fn in _methods(feats, labels, args.imagenet_ratio, per_chunk,
                           True).items():
    sec, comp = _time(fn, max(1, args.repeats // 2))
    print(f"ImageNet class-wise D={dim} ratio={args.imagenet_ratio} {name:8s}"
          f" one chunk of {per_chunk} classes {sec:8.2f} s (compile "
          f"{comp:.2f} s); {chunks} chunks for 1000 classes: "
          f"{chunks * sec:8.1f} s")


if __name__ == "__main__":
  main()
