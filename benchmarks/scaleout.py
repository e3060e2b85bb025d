"""What gathering per-example statistics costs, on 1, 2 and 8 devices.

For each mesh, times the jitted data-parallel train step of an MLP on
MNIST-shaped inputs two ways:
  * plain: `make_train_step(..., with_stats=False)`, the update alone;
  * stats: `with_stats=True` plus `trajectory.record` into the replicated
    `[N, R]` buffer, as the warm-up runs it (rows gathered first with
    `sharding.all_gather`; `--gather=0` shows the cost without).
Batches are placed on the devices beforehand, so the input pipeline is not
timed. Prints the median of several repetitions (each `--steps` steps) in
ms per step, and the ratios stats / plain and plain / plain on 1 device.

The devices are simulated CPU devices sharing this machine's cores, so the
ratios across meshes show the overhead of partitioning and collectives, not
a speed-up; on real accelerators run it without the XLA flag.
Run: python benchmarks/scaleout.py [--devices 1,2,8 --batch 256]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Must be set before JAX initialises its CPU backend.
if "xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import optax

from mrmc_jax import models
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import trajectory

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def _batches(num: int, batch_size: int, n: int, rng: np.random.Generator):
  """`num` host batches of MNIST-shaped noise with distinct global ids."""
  ids = rng.permutation(n)[:num * batch_size].reshape(num, batch_size)
  return [{"image": rng.standard_normal((batch_size, *IMAGE_SHAPE),
                                        np.float32),
           "label": rng.integers(0, NUM_CLASSES, batch_size, np.int32),
           "id": ids[i].astype(np.int32),
           "mask": np.ones(batch_size, bool)} for i in range(num)]


def bench_mesh(mesh, host_batches, args) -> dict[str, float]:
  """Median ms/step of the plain and the stats+record step on one mesh.

  The two are timed alternately, repetition after repetition, so that load
  from other processes on the machine hits both alike; `ratio` is the
  median of the per-repetition ratios stats / plain.
  """
  model = models.create_model("mlp", NUM_CLASSES)
  apply_fn = train_step.module_apply_fn(model)
  tx = optax.sgd(0.05, momentum=0.9)
  # Host copies: on a 1-device mesh `replicate` may reuse the device
  # buffers, which the donating steps then delete.
  variables = jax.tree.map(np.asarray, models.init_variables(
      model, jax.random.key(0), IMAGE_SHAPE))
  batches = [sharding.shard_batch(b, mesh) for b in host_batches]
  epoch = sharding.replicate(np.int32(0), mesh)

  plain_fn = jax.jit(train_step.make_train_step(apply_fn, tx,
                                                with_stats=False),
                     donate_argnums=0)
  stats_fn = train_step.make_train_step(apply_fn, tx, with_stats=True)

  def warm_step(state, traj, batch, epoch):
    state, stats = stats_fn(state, batch)
    if args.gather:
      stats = sharding.all_gather(stats, mesh)
    return state, trajectory.record(traj, stats, epoch), stats["train_loss"]

  warm_step = jax.jit(warm_step, donate_argnums=(0, 1))
  new_state = lambda: sharding.replicate(
      train_step.create_train_state(variables, tx), mesh)
  carry = {"plain": new_state(), "state": new_state(),
           "traj": sharding.replicate(
               trajectory.init_trajectory(args.n, args.epochs), mesh)}

  def plain(steps):
    state = carry["plain"]
    for i in range(steps):
      state, m = plain_fn(state, batches[i % len(batches)])
    jax.block_until_ready((state, m))
    carry["plain"] = state

  def stats(steps):
    state, traj = carry["state"], carry["traj"]
    for i in range(steps):
      state, traj, m = warm_step(state, traj, batches[i % len(batches)],
                                 epoch)
    jax.block_until_ready((state, traj, m))
    carry["state"], carry["traj"] = state, traj

  def seconds(run):
    t0 = time.perf_counter()
    run(args.steps)
    return (time.perf_counter() - t0) / args.steps

  plain(1)  # compile both first
  stats(1)
  times = np.array([(seconds(plain), seconds(stats))
                    for _ in range(args.repeats)])
  return {"plain": float(np.median(times[:, 0])),
          "stats": float(np.median(times[:, 1])),
          "ratio": float(np.median(times[:, 1] / times[:, 0]))}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--devices", default="1,2,8",
                 help="comma-separated mesh sizes")
  p.add_argument("--batch", type=int, default=256, help="global batch size")
  p.add_argument("--n", type=int, default=60_000,
                 help="examples N in the trajectory buffer")
  p.add_argument("--epochs", type=int, default=10,
                 help="epochs R in the trajectory buffer")
  p.add_argument("--steps", type=int, default=20, help="steps per repeat")
  p.add_argument("--repeats", type=int, default=9)
  p.add_argument("--gather", type=int, default=1,
                 help="1: gather the B rows before recording, as the "
                 "experiment does; 0: scatter the sharded rows directly "
                 "(XLA then all-reduces the whole buffer every step)")
  args = p.parse_args()
  sizes = [int(s) for s in args.devices.split(",")]
  host_batches = _batches(4, args.batch, args.n, np.random.default_rng(0))
  print(f"MLP on {IMAGE_SHAPE} inputs, global batch {args.batch}, "
        f"trajectory [{args.n}, {args.epochs}], {jax.device_count()} "
        f"{jax.default_backend()} devices; median of {args.repeats} x "
        f"{args.steps} steps")
  print(f"{'devices':>7}  {'plain ms':>8}  {'stats ms':>8}  "
        f"{'stats/plain':>11}  {'plain/plain@1':>13}")
  base = None
  for size in sizes:
    mesh = sharding.make_mesh(sharding.mesh_devices(size))
    sharding.check_batch_size(args.batch, mesh)
    r = bench_mesh(mesh, host_batches, args)
    base = base or r["plain"]
    print(f"{size:>7}  {1e3 * r['plain']:>8.2f}  {1e3 * r['stats']:>8.2f}  "
          f"{r['ratio']:>11.2f}  {r['plain'] / base:>13.2f}",
          flush=True)


if __name__ == "__main__":
  main()
