"""Times MRMC selection at ImageNet size: 1.28M examples, 1000 classes.

Prints the median wall time after compilation of
1. `mrmc_scores` (the bounded fit) on an `[N, R]` loss trajectory, and
2. `select_mask_host` (host quotas + jitted sort), class-balanced and global, for
   a few ratios, with ties to the lower id (`tie_seed=None`) and seeded
   (`tie_seed=0`, what the runner uses) side by side.
Run: python benchmarks/selection_speed.py [--n 1281167 --classes 1000 --r 20]
(`--r 0` skips the fit; `--ratios 0.3` times one ratio; `--closure` also
times the first call of a jitted `select_mask` with the labels closed over
as a constant against the same function taking them as an argument.)
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import numpy as np

from mrmc_jax import scoring
from mrmc_jax import selection


def timed(fn, repeats):
  """Seconds of the first call (compilation) and the median of the rest."""
  times = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times[0], float(np.median(times[1:]))


def report(label, fn, repeats):
  """Prints the first call's seconds (compilation) and the median of the rest."""
  first, median = timed(fn, repeats)
  print(f"{label} first={first:.3f}s median={median:.3f}s")


def noisy_decays(n, r):
  """float32 `[n, r]` losses `q * w**-r` with multiplicative noise."""
  rng = np.random.default_rng(1)
  q = rng.uniform(0.1, 3.0, (n, 1))
  w = rng.uniform(1.0, 1.5, (n, 1))
  losses = q * w ** -np.arange(1, r + 1) * rng.lognormal(0.0, 0.2, (n, r))
  return jax.device_put(losses.astype(np.float32))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--n", type=int, default=1_281_167)
  p.add_argument("--classes", type=int, default=1000)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--r", type=int, default=20)
  p.add_argument("--ratios", default="0.1,0.3,0.5,0.7")
  p.add_argument("--closure", action="store_true")
  args = p.parse_args()
  rng = np.random.default_rng(0)
  labels = rng.integers(0, args.classes, args.n).astype(np.int32)
  scores = rng.standard_normal(args.n).astype(np.float32)
  scores_d, labels_d = jax.device_put(scores), jax.device_put(labels)
  print(f"N={args.n} classes={args.classes} devices={jax.devices()}")
  if args.r:
    losses = noisy_decays(args.n, args.r)
    report(f"mrmc_scores [{args.n}, {args.r}]",
           lambda: scoring.mrmc_scores(losses), args.repeats)
  if args.closure:
    # The compile-time trap: a closed-over array is a constant of the
    # program, and XLA constant-folds the selector over it.
    arg = jax.jit(lambda s, l: selection.select_mask(
        s, l, 0.3, num_classes=args.classes))
    const = jax.jit(lambda s: selection.select_mask(
        s, labels, 0.3, num_classes=args.classes))
    for label, fn in (("labels as an argument", lambda: arg(scores_d, labels_d)),
                      ("labels closed over   ", lambda: const(scores_d))):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      print(f"jit(select_mask) {label}: first call {time.perf_counter() - t0:.2f}s")
  ratios = [float(r) for r in args.ratios.split(",")]
  print("select_mask_host median seconds (first call, with compilation, in "
        "brackets)")
  for balanced in (True, False):
    for ratio in ratios:
      row = []
      for seed in (None, 0):
        first, median = timed(
            lambda: selection.select_mask_host(  # pylint: disable=cell-var-from-loop
                scores_d, labels_d, ratio, num_classes=args.classes,
                class_balanced=balanced, tie_seed=seed), args.repeats)
        row.append(f"tie_seed={seed!s:4} {median:.3f}s ({first:.2f}s)")
      print(f"class_balanced={balanced!s:5} ratio={ratio:.2f}  "
            + "  ".join(row))


if __name__ == "__main__":
  main()
