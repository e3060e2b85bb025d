"""Per-device memory of the `[N, R]` trajectory and `[N, D]` features.

1. Measured on 8 simulated CPU devices: the bytes each device holds for the
   replicated layout (`sharding.replicate(init_trajectory(n, r), mesh)`) and
   the row-sharded one (`init_trajectory(n, r, mesh=mesh)`), summed over the
   fields from `addressable_shards`; likewise for features `[N, D]` float32
   (`sharding.zeros` with `rows_sharding`). Also the per-device memory XLA
   plans for scoring (`mrmc_scores`, on the sharded `[N_pad, R]` losses via
   `sharding.map_rows`, then the `[N]` scores sliced) and for one recording
   scatter, from the compiled programs' `memory_analysis()`.
2. Computed, for pod slices: per chip and per host at N = 1.28M, 10M, 100M,
   R = 20, fields loss/p_true/el2n float32, correct bool, visits int32
   (17 bytes per example-epoch) and features `[N, 512]` float32. The formula
   is the one the measurement checks: replicated N * bytes per chip; sharded
   N_pad / chips * bytes, N_pad = N rounded up to a multiple of the chips.

Run: python benchmarks/trajectory_memory.py [--n 10007 --r 20 --dim 512]
"""

import argparse
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                 ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from mrmc_jax import scoring  # pylint: disable=g-import-not-at-top
from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top
from mrmc_jax import trajectory  # pylint: disable=g-import-not-at-top

# Bytes per example and epoch over trajectory.KEYS with their dtypes.
ROW_BYTES = sum(
    np.dtype(np.bool_ if f == "correct" else
             np.int32 if f == "visits" else np.float32).itemsize
    for f in trajectory.KEYS)
# (name, chips, hosts, HBM GiB per chip).
SLICES = (("v4-128", 64, 16, 32), ("v5e-256", 256, 64, 16))
SIZES = (1_281_167, 10_000_000, 100_000_000)


def device_bytes(tree) -> list[int]:
  """Bytes held by each device, over the arrays of `tree`."""
  out = {}
  for x in jax.tree.leaves(tree):
    for s in x.addressable_shards:
      out[s.device] = out.get(s.device, 0) + s.data.nbytes
  return [out[d] for d in sorted(out, key=lambda d: d.id)]


def plan(fn, *args) -> dict[str, int]:
  """XLA's per-device memory plan of `jax.jit(fn)(*args)`."""
  m = jax.jit(fn).lower(*args).compile().memory_analysis()
  return {"arguments": m.argument_size_in_bytes,
          "outputs": m.output_size_in_bytes, "temp": m.temp_size_in_bytes}


def measure(n: int, r: int, dim: int) -> None:
  mesh = sharding.make_mesh()
  d = len(mesh.devices.flat)
  n_pad = sharding.padded_rows(n, mesh)
  print(f"measured on {d} simulated {jax.devices()[0].platform} devices: "
        f"N={n} (padded to {n_pad}), R={r}, D={dim}")
  rep = sharding.replicate(trajectory.init_trajectory(n, r), mesh)
  shd = trajectory.init_trajectory(n, r, mesh=mesh)
  rows = sharding.rows_sharding(mesh)
  feats = {"replicated": sharding.zeros((n, dim), jnp.float32,
                                        sharding.replicated(mesh)),
           "sharded": sharding.zeros((n_pad, dim), jnp.float32, rows)}
  for name, traj in (("replicated", rep), ("sharded", shd)):
    per = device_bytes(traj)
    f = device_bytes(feats[name])
    print(f"  trajectory {name:10s}: {min(per):>12,} .. {max(per):>12,} "
          f"bytes per device; features {min(f):>12,} .. {max(f):>12,}")
  assert set(device_bytes(rep)) == {n * r * ROW_BYTES}
  assert set(device_bytes(shd)) == {n_pad * r * ROW_BYTES // d}
  assert set(device_bytes(feats["sharded"])) == {n_pad * dim * 4 // d}
  score = {"replicated": scoring.mrmc_scores,
           "sharded": sharding.map_rows(scoring.mrmc_scores, mesh)}
  for name, traj in (("replicated", rep), ("sharded", shd)):
    print(f"  mrmc_scores(loss)[:N] plan per device, {name:10s}: "
          f"{plan(lambda l: score[name](l)[:n], traj['loss'])}")
  b = 8 * d
  stats = sharding.shard_batch(
      {"id": np.arange(b, dtype=np.int32), "mask": np.ones(b, bool),
       **{f: np.zeros(b, np.bool_ if f == "correct" else np.float32)
          for f in trajectory.FIELDS}}, mesh)
  for name, traj, sharded in (("replicated", rep, False),
                              ("sharded", shd, True)):
    print(f"  record plan per device (B={b}), {name:10s}: " + str(plan(
        lambda t, s: trajectory.record(t, s, 0, mesh=mesh, sharded=sharded),
        traj, stats)))


def gib(x: float) -> str:
  return f"{x / 2**30:,.3f} GiB" if x >= 2**30 / 10 else f"{x / 2**20:,.1f} MiB"


def computed(r: int, dim: int) -> None:
  print(f"\ncomputed, R={r}, {ROW_BYTES} bytes per example-epoch, features "
        f"[N, {dim}] float32:")
  print("| slice | N | trajectory per chip, replicated | sharded | features "
        "per chip, replicated | sharded | sharded trajectory + features "
        "per host (HBM) | full copy per host (RAM, gathered at the end) |")
  print("|---|---|---|---|---|---|---|---|")
  for name, chips, hosts, hbm in SLICES:
    for n in SIZES:
      n_pad = -(-n // chips) * chips
      t_rep, t_shd = n * r * ROW_BYTES, n_pad * r * ROW_BYTES / chips
      f_rep, f_shd = n * dim * 4, n_pad * dim * 4 / chips
      over = lambda x: f" ({100 * x / (hbm * 2**30):.0f}% of {hbm} GiB)"
      print(f"| {name} ({chips} chips, {hosts} hosts) | {n:,} | "
            f"{gib(t_rep)}{over(t_rep)} | {gib(t_shd)} | "
            f"{gib(f_rep)}{over(f_rep)} | {gib(f_shd)} | "
            f"{gib((t_shd + f_shd) * chips / hosts)} | "
            f"{gib(n * r * ROW_BYTES)} + {gib(n * dim * 4)} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=10_007)
  parser.add_argument("--r", type=int, default=20)
  parser.add_argument("--dim", type=int, default=512)
  args = parser.parse_args()
  measure(args.n, args.r, args.dim)
  computed(args.r, args.dim)


if __name__ == "__main__":
  main()
