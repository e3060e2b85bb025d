"""Peak memory per process at the end of the warm-up, on P local processes.

Runs the end of the warm-up (artefacts -> scores -> selection -> mask) on
P = 1, 2, 4, ... local JAX processes (`jax.distributed` on CPU, each under
`timeout`), at N synthetic rows of an `[N, R]` loss trajectory, in four ways:
  * `sharded`: each process writes and reads back only its own rows
    (`artefacts.<process>.npz` with their ids), scores them where they lie
    (`sharding.map_rows` of `mrmc_scores`), selects with exact per-class
    quotas on the sharded scores (`sharded_selection.sharded_select_ratio`:
    `[C]` counts cross the hosts, no row does), and gathers the mask as bits
    (`gather_mask`, N / 8 bytes per host); process 0 writes it once;
  * `rows`: what the runner does on several processes for a method that
    scores row by row (MRMC here): each process takes its rows of the row-split
    trajectory to the host (`sharding.process_rows`), scores them there,
    and selects with `sharded_selection.select_rows` (the keys laid out by
    rows again, `sharded_select_ratio`, the mask as bits);
  * `gather`: what the runner does for the other methods: the rows are
    gathered to every host (`sharding.to_host`, by rows in rounds of at most
    `sharding.GATHER_BYTES` per device), then scored and selected on the
    whole arrays (`select_mask_host`);
  * `whole`: the same with the rows gathered by JAX's
    `multihost_utils.process_allgather`, which replicates each array on
    every device before it reaches the host (`to_host` before 0.3.0).
Each process prints its peak RSS (`resource.getrusage(...).ru_maxrss`,
VmHWM) at the end. The table gives, for the largest of the P processes,
that peak less the peak of the same run at a tiny N (`--tiny`: JAX, the
collectives and the compiled programs, the framework, whose memory does not
grow with N), and less the RSS after JAX is initialised and has run one jit
and one collective; for the gather paths, the peak once the rows are on
the host, before scoring (the gather's own cost), less that same RSS; and
whether the mask is the same as the first run's (SHA-256 of the mask; the
tiny runs are not compared).

The synthetic trajectory is a function of the example id only (an exponential
decay with hashed rate and scale, rounded to 1/64 so that scores tie), so
every process count sees the same data. On CPU the devices' buffers are in
host RAM, so the RSS counts what would be a chip's memory too.

Run: python benchmarks/warmup_gather_memory.py [--n 1000000 --epochs 5
  --processes 1,2,4 --paths sharded,rows,gather,whole]
"""

import argparse
import functools
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kib(field: str = "VmRSS") -> int:
  """A memory field of /proc/self/status (VmRSS now, VmHWM its peak)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"no {field} in /proc/self/status")


def _hash(x, salt):
  """A 32-bit mix of uint64 `x` (numpy), by murmur3's finaliser."""
  h = (x.astype(np.uint64) * np.uint64(0x9E3779B1) + np.uint64(salt)) & \
      np.uint64(0xFFFFFFFF)
  h ^= h >> np.uint64(16)
  h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
  h ^= h >> np.uint64(13)
  h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
  return h ^ (h >> np.uint64(16))


def synthetic_rows(ids, epochs: int, num_classes: int, chunk: int = 65536):
  """Losses float32 `[n, R]` and labels int32 `[n]` of global `ids`.

  Made by chunks of rows, so that the temporaries stay small.
  """
  losses = np.empty((len(ids), epochs), np.float32)
  labels = np.empty(len(ids), np.int32)
  r = np.arange(1, epochs + 1, dtype=np.float64)
  for start in range(0, len(ids), chunk):
    part = ids[start:start + chunk]
    q = 0.5 + 2.0 * _hash(part, 1).astype(np.float64) / 2**32
    w = 1.02 + 0.5 * _hash(part, 2).astype(np.float64) / 2**32
    losses[start:start + chunk] = np.round(
        q[:, None] * w[:, None] ** -r[None, :] * 64) / 64
    labels[start:start + chunk] = _hash(part, 3) % np.uint64(num_classes)
  return losses, labels


def worker(args) -> None:
  """One process: the end of the warm-up; prints one JSON line."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes,
                             args.process_id)
  sys.path.insert(0, ROOT)
  from mrmc_jax import scoring  # pylint: disable=g-import-not-at-top
  from mrmc_jax import selection  # pylint: disable=g-import-not-at-top
  from mrmc_jax import sharded_selection  # pylint: disable=g-import-not-at-top
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh()
  where = sharding.rows_sharding(mesh)
  # The framework: JAX initialised, one jit and one collective run.
  multihost_utils.process_allgather(jax.jit(lambda x: x + 1)(np.ones(8)))
  base = _status_kib()

  n, p = args.n, jax.process_index()
  rows = sharding.padded_rows(n, mesh)
  per = rows // jax.process_count()
  ids = np.arange(p * per, (p + 1) * per, dtype=np.int64)
  losses, labels = synthetic_rows(ids, args.epochs, args.classes)
  labels[ids >= n] = -1  # padding rows: never selected
  path = os.path.join(args.workdir, f"artefacts.{p}.npz")
  np.savez(path, ids=ids, losses=losses, labels=labels)
  del ids, losses, labels
  with np.load(path) as art:
    local = {k: art[k] for k in ("losses", "labels")}
  t0 = time.perf_counter()
  fetched = None  # The peak once the rows are on the host (gather paths).
  if args.path == "sharded":
    losses = jax.make_array_from_process_local_data(where, local["losses"])
    labels = jax.make_array_from_process_local_data(where, local["labels"])
    del local
    scores = jax.jit(sharding.map_rows(scoring.mrmc_scores, mesh))(losses)
    del losses
    chosen = sharded_selection.sharded_select_ratio(
        scores, labels, args.ratio, num_classes=args.classes, mesh=mesh,
        tie_seed=0)
    mask = sharded_selection.gather_mask(chosen, n, mesh=mesh)
  elif args.path == "rows":
    # The runner's path on several processes: the warm-up's row-split
    # trajectory, this host's rows on the host (`process_rows`), MRMC on
    # them (`Method.row_keys`), `select_rows` with every label (the runner
    # holds the labels of all N).
    losses = jax.make_array_from_process_local_data(where, local["losses"])
    del local
    ids, held = sharding.process_rows(losses)
    del losses
    real = ids < n
    keys = np.asarray(scoring.mrmc_scores(held[real]), np.float32)
    del held
    labels = (_hash(np.arange(n, dtype=np.int64), 3) %
              np.uint64(args.classes)).astype(np.int32)
    mask = sharded_selection.select_rows(keys, ids[real], labels, args.ratio,
                                         num_classes=args.classes, mesh=mesh,
                                         tie_seed=0)
  else:
    fetch = (functools.partial(sharding.to_host,
                               gather_bytes=args.gather_mib << 20)
             if args.path == "gather" else
             lambda x: multihost_utils.process_allgather(x, tiled=True))
    full = {k: fetch(jax.make_array_from_process_local_data(
        where, v))[:n] for k, v in local.items()}
    fetched = _status_kib("VmHWM")
    del local
    scores = scoring.mrmc_scores(full["losses"])
    mask = np.asarray(selection.select_mask_host(
        scores, full["labels"], args.ratio, num_classes=args.classes,
        tie_seed=0))
  seconds = time.perf_counter() - t0
  if p == 0:
    np.save(os.path.join(args.workdir, "mask.npy"), np.packbits(mask))
  peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
             _status_kib("VmHWM"))
  print(json.dumps({"process": p, "base_mib": base / 1024,
                    "peak_mib": peak / 1024,
                    "fetched_mib": (None if fetched is None else
                                    (fetched - base) / 1024),
                    "above_mib": (peak - base) / 1024, "seconds": seconds,
                    "selected": int(mask.sum()),
                    "mask_sha256": hashlib.sha256(np.packbits(mask).tobytes()
                                                  ).hexdigest()}),
        flush=True)
  multihost_utils.sync_global_devices("done")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(args, processes: int, path: str, n: int) -> list[dict]:
  """Runs P workers; returns their JSON records (raises if one fails)."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=f"--xla_force_host_platform_device_count="
                       f"{args.devices}")
  with tempfile.TemporaryDirectory() as tmp:
    procs = [subprocess.Popen(
        ["timeout", "-k", "10", str(args.timeout), sys.executable,
         os.path.abspath(__file__), "--worker", f"--port={port}",
         f"--num_processes={processes}", f"--process_id={i}",
         f"--workdir={tmp}", f"--n={n}", f"--epochs={args.epochs}",
         f"--classes={args.classes}", f"--ratio={args.ratio}",
         f"--path={path}", f"--gather_mib={args.gather_mib}"],
        env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(processes)]
    outs = [pr.communicate() for pr in procs]
  records = []
  for pr, (out, err) in zip(procs, outs):
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if pr.returncode or not lines:
      raise RuntimeError(f"P={processes} {path}: a process exited "
                         f"{pr.returncode}: {err.strip()[-2000:]}")
    records.append(json.loads(lines[-1]))
  return records


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=1_000_000)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--ratio", type=float, default=0.3)
  parser.add_argument("--processes", default="1,2,4")
  parser.add_argument("--paths", default="sharded,rows,gather,whole")
  parser.add_argument("--tiny", type=int, default=4096,
                      help="N of the run whose peak is subtracted (0: none)")
  parser.add_argument("--gather_mib", type=int, default=256,
                      help="`to_host`'s bytes per device per round (MiB) "
                      "on the gather path (its default: 256)")
  parser.add_argument("--devices", type=int, default=1,
                      help="simulated CPU devices per process")
  parser.add_argument("--timeout", type=int, default=600)
  parser.add_argument("--json", default="", help="also write results here")
  parser.add_argument("--worker", action="store_true")
  parser.add_argument("--port", type=int)
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  parser.add_argument("--workdir")
  parser.add_argument("--path", default="sharded")
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  results, first = [], None
  print(f"N={args.n} R={args.epochs} C={args.classes} ratio={args.ratio}, "
        f"{args.devices} CPU device(s) per process; MiB per process, the "
        f"largest of the P (the smallest in brackets)")
  print(f"{'path':8s} {'P':>2s} {'peak-run(N=' + str(args.tiny) + ')':>22s} "
        f"{'peak-JAX init':>22s} {'gathered-JAX init':>18s} {'JAX init':>9s} "
        f"{'seconds':>8s} {'same mask':>9s}")
  for path in args.paths.split(","):
    for processes in (int(p) for p in args.processes.split(",")):
      # The same run at a tiny N: JAX, the collectives and the compiled
      # programs, whose memory does not grow with N.
      recs = launch(args, processes, path, args.n)
      tiny = (launch(args, processes, path, args.tiny) if args.tiny
              else [{"peak_mib": np.nan}] * processes)
      shas = {r["mask_sha256"] for r in recs}
      first = first or recs[0]["mask_sha256"]
      same = len(shas) == 1 and first in shas
      over = [r["peak_mib"] - t["peak_mib"] for r, t in zip(recs, tiny)]
      above = [r["above_mib"] for r in recs]
      fetched = [r["fetched_mib"] for r in recs]
      results.append({"path": path, "processes": processes,
                      "peak_mib": [r["peak_mib"] for r in recs],
                      "tiny_peak_mib": [t["peak_mib"] for t in tiny],
                      "above_tiny_mib": over, "above_init_mib": above,
                      "gathered_above_init_mib": fetched,
                      "init_mib": [r["base_mib"] for r in recs],
                      "seconds": max(r["seconds"] for r in recs),
                      "selected": recs[0]["selected"],
                      "mask_sha256": recs[0]["mask_sha256"],
                      "mask_same_as_first": same})
      print(f"{path:8s} {processes:2d} {max(over):12.1f} ({min(over):7.1f}) "
            f"{max(above):12.1f} ({min(above):7.1f}) "
            f"{'-' if None in fetched else format(max(fetched), '.1f'):>18s} "
            f"{max(r['base_mib'] for r in recs):9.1f} "
            f"{results[-1]['seconds']:8.2f} {str(same):>9s}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"n": args.n, "epochs": args.epochs, "classes": args.classes,
                 "ratio": args.ratio, "results": results}, f, indent=1)
  if not all(r["mask_same_as_first"] for r in results):
    sys.exit("error: the masks differ across process counts or paths.")


if __name__ == "__main__":
  main()
