"""What per-example statistics cost, and how core-set training time scales.

1. The warm-up step (training step + per-example statistics + scatter into
   the [N, R] trajectory) against a plain training step, same model and
   batch. Goal: within 3%. And the same step recording the margins too
   (`trajectory.MARGIN_FIELDS`, AUM's input) against it.
2. Core-set training at ratio 0.3 against full-data training over the same
   number of epochs, through the real tf.data pipeline. Goal: <= 0.35.

Timings are medians of interleaved repetitions in one run (the machine is
shared, so only ratios measured together are meaningful).

Run: python benchmarks/runner_costs.py [--model mlp --n 60000 --epochs 2]
(`--epochs 0` skips the second measurement; the first needs no TensorFlow,
so it also runs where only jax, flax and optax are installed). CIFAR scale:
  --model resnet18_cifar --image_shape 32,32,3 --n 50000 --epochs 0
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from mrmc_jax import models
from mrmc_jax import optim
from mrmc_jax import train_step
from mrmc_jax import trajectory


def _synthetic(n, shape, classes, seed=0):
  from mrmc_jax.data import splits  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
  labels = rng.integers(0, classes, n).astype(np.int32)
  return splits.ArraySplit(images, labels)


def _synthetic_batches(n, shape, classes, batch_size, steps, seed=0):
  """Device batches shaped as the pipeline's: normalised image, label, id."""
  rng = np.random.default_rng(seed)
  out = []
  for s in range(steps):
    ids = rng.permutation(n)[:batch_size].astype(np.int32)
    out.append(jax.device_put({
        "image": rng.standard_normal((batch_size, *shape), np.float32),
        "label": rng.integers(0, classes, batch_size).astype(np.int32),
        "id": ids,
        "mask": np.ones(batch_size, bool) if s else
                np.arange(batch_size) < batch_size - 3,  # one padded batch
    }))
  return out


def _copy(tree):
  return jax.tree_util.tree_map(jnp.copy, tree)


def step_overhead(model, n, shape, classes, batch_size, repeats, steps):
  """Median seconds per step: plain, with statistics + trajectory record,
  and with the margins (AUM) recorded too."""
  tx = optim.make_optimizer(optimizer="sgd", learning_rate=0.05,
                            total_steps=1000, momentum=0.9)
  apply_fn = train_step.module_apply_fn(model)
  variables = models.init_variables(model, jax.random.key(0), shape)
  plain = jax.jit(train_step.make_train_step(apply_fn, tx, with_stats=False),
                  donate_argnums=0)
  full = train_step.make_train_step(apply_fn, tx, with_stats=True)

  def warm(state, traj, batch, epoch):
    state, stats = full(state, batch)
    return state, trajectory.record(traj, stats, epoch), stats["train_loss"]

  warm = jax.jit(warm, donate_argnums=(0, 1))
  batches = _synthetic_batches(n, shape, classes, batch_size, steps)
  e = jnp.int32(0)
  # Donation deletes the buffers it is given: each state gets its own copy.
  runs = {"plain": [train_step.create_train_state(_copy(variables), tx)],
          "warm": [train_step.create_train_state(_copy(variables), tx),
                   trajectory.init_trajectory(n, 10)],
          "margins": [train_step.create_train_state(_copy(variables), tx),
                      trajectory.init_trajectory(
                          n, 10, trajectory.FIELDS
                          + trajectory.MARGIN_FIELDS)]}

  def go(name, chunk):
    run = runs[name]
    for b in chunk:
      if name == "plain":
        run[0] = plain(run[0], b)[0]
      else:
        run[0], run[1], _ = warm(run[0], run[1], b, e)
    jax.block_until_ready(run)

  for name in runs:  # compile
    go(name, batches[:1])
  # Short alternating blocks, many of them: a load spike on the shared
  # machine then hits every variant alike, and the medians shed it.
  times = {name: [] for name in runs}
  names = list(runs)
  block = min(10, len(batches))
  for rep in range(max(2, repeats * len(batches) // block)):
    chunk = batches[(rep * block) % len(batches):][:block]
    for name in names[rep % 3:] + names[:rep % 3]:
      t0 = time.perf_counter()
      go(name, chunk)
      times[name].append((time.perf_counter() - t0) / len(chunk))
  return {name: float(np.median(t)) for name, t in times.items()}


def coreset_scaling(model, split, batch_size, epochs, ratio, repeats):
  """Median seconds of `epochs` epochs on all data vs on a `ratio` subset."""
  from mrmc_jax.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  tx = optim.make_optimizer(optimizer="sgd", learning_rate=0.05,
                            total_steps=1000, momentum=0.9)
  apply_fn = train_step.module_apply_fn(model)
  variables = models.init_variables(model, jax.random.key(0),
                                    split.image_shape)
  step = jax.jit(train_step.make_train_step(apply_fn, tx, with_stats=False),
                 donate_argnums=0)
  n = split.num_examples
  ids = np.sort(np.random.default_rng(0).permutation(n)[:int(ratio * n)])

  def run(ids):
    state = train_step.create_train_state(_copy(variables), tx)
    t0 = time.perf_counter()
    for epoch in range(epochs):
      for b in input_pipeline.train_dataset(
          split, batch_size=batch_size, seed=0, epoch=epoch, augment=False,
          mean=0.5, std=0.25, ids=ids).as_numpy_iterator():
        state, _ = step(state, b)
    jax.block_until_ready(state)
    return time.perf_counter() - t0

  run(ids[:batch_size])  # compile
  t_full, t_core = [], []
  for _ in range(repeats):
    t_full.append(run(None))
    t_core.append(run(ids))
  return np.median(t_full), np.median(t_core)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="mlp")
  p.add_argument("--n", type=int, default=60000)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--ratio", type=float, default=0.3)
  p.add_argument("--image_shape", default="28,28,1")
  p.add_argument("--classes", type=int, default=10)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = p.parse_args()
  shape = tuple(int(d) for d in args.image_shape.split(","))
  model = models.create_model(args.model, args.classes,
                              dtype=jnp.dtype(args.dtype))
  print(f"model={args.model} dtype={args.dtype} image={shape} N={args.n} "
        f"batch={args.batch_size} devices={jax.devices()}")
  t = step_overhead(model, args.n, shape, args.classes, args.batch_size,
                    args.repeats, args.steps)
  plain, warm, margins = t["plain"], t["warm"], t["margins"]
  print(f"plain step            {1e3 * plain:8.3f} ms (median)")
  print(f"step + stats + record {1e3 * warm:8.3f} ms (median)")
  print(f"... + margins (AUM)   {1e3 * margins:8.3f} ms (median)")
  print(f"statistics overhead   {100 * (warm / plain - 1):+8.2f} %")
  print(f"margins overhead      {100 * (margins / warm - 1):+8.2f} % of the "
        f"recording step ({margins / warm:.4f}x)")
  if args.epochs == 0:
    return
  split = _synthetic(args.n, shape, args.classes)
  full, core = coreset_scaling(model, split, args.batch_size, args.epochs,
                               args.ratio, max(1, args.repeats // 2))
  print(f"{args.epochs} epochs full data    {full:8.2f} s (median)")
  print(f"{args.epochs} epochs ratio {args.ratio}  {core:8.2f} s (median)")
  print(f"core-set / full time  {core / full:8.3f} (goal <= "
        f"{args.ratio + 0.05:.2f})")


if __name__ == "__main__":
  main()
