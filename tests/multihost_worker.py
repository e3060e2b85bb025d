r"""One process of a multi-process CPU run of `experiments/main.py`, for tests.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
  python tests/multihost_worker.py --record=DIR --tag=a \
      [--stop_after_warmup_epoch=K] -- \
      --config=configs/default.py --workdir=W \
      --config.distributed.initialize=True \
      --config.distributed.coordinator_address=127.0.0.1:PORT \
      --config.distributed.num_processes=2 --config.distributed.process_id=I

Runs main.py unchanged (flags after `--`), having wrapped two functions to
record what this process did, saved on exit as `DIR/process_<I>_<tag>.npz`
and `.json`:
  * npz `<stage>_<epoch>`: int [steps, B / P], the global ids this process's
    devices held in each training batch (`stage` is `warmup` or `train`);
  * json `written`: the workdir files this process wrote (only process 0
    may write).
With `--stop_after_warmup_epoch=K` the process exits with status 3 right
after warm-up epoch K's checkpoint, like a job killed there. With
`--kill_in_warmup_epoch=K` every process meets the others at a barrier just
before its second training batch of warm-up epoch K, then sends itself
SIGKILL (no cleanup, no record saved): a job killed mid-epoch. With
`--term_in_warmup_epoch=K` process 1 alone (or each process listed by
`--term_processes=0,1`) sends itself SIGTERM just before its second
training batch of warm-up epoch K (a maintenance event on one host, or on
all) and writes the time it did to `DIR/sigterm_<tag>.json`. With
`--batch_seconds=S` every process waits S seconds before each training
batch (a slow input pipeline: steps no faster than a pod's).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# main.py's `import preamble` (run below by path) finds experiments/ here.
sys.path.insert(0, os.path.join(ROOT, "experiments"))
# As main.py does first, before any library starts a thread: SIGINT and
# SIGTERM wait for the runner's watcher in every thread (a thread started
# before the block, e.g. by numpy's BLAS, would take them itself).
import preamble  # pylint: disable=g-import-not-at-top,unused-import

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import atexit
import collections
import json
import runpy
import signal
import time

# Importing (not initialising) JAX before `jax.distributed.initialize` is
# allowed; main.py initialises it when it runs below.
import jax  # pylint: disable=g-import-not-at-top
from jax.experimental import multihost_utils
import numpy as np

from mrmc_jax.runner import context  # pylint: disable=g-import-not-at-top
from mrmc_jax.runner import loop
from mrmc_jax.runner import workdir as wd

STOP_STATUS = 3


def _local_ids(ids: jax.Array) -> np.ndarray:
  """The rows of a global `[B]` array held by this process, in row order."""
  shards = sorted(ids.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def main():
  argv = sys.argv[1:]
  split = argv.index("--") if "--" in argv else len(argv)
  parser = argparse.ArgumentParser()
  parser.add_argument("--record", required=True)
  parser.add_argument("--tag", default="run")
  parser.add_argument("--stop_after_warmup_epoch", type=int, default=None)
  parser.add_argument("--kill_in_warmup_epoch", type=int, default=None)
  parser.add_argument("--term_in_warmup_epoch", type=int, default=None)
  parser.add_argument("--term_processes", default="1")
  parser.add_argument("--batch_seconds", type=float, default=0.0)
  args = parser.parse_args(argv[:split])

  fed = collections.defaultdict(list)
  written = []
  train_batches = context.Context.train_batches
  atomic = wd._atomic  # pylint: disable=protected-access

  def recording_train_batches(self, epoch, ids=None, start=0):
    stage = "warmup" if ids is None else "train"
    for batch in train_batches(self, epoch, ids, start):
      if (stage == "warmup" and epoch == args.kill_in_warmup_epoch and
          len(fed[f"{stage}_{epoch}"]) == 1):
        # The barrier waits for every step already queued on every process,
        # so that no process dies inside a collective another still runs.
        multihost_utils.sync_global_devices("kill")
        os.kill(os.getpid(), signal.SIGKILL)
      if (stage == "warmup" and epoch == args.term_in_warmup_epoch and
          len(fed[f"{stage}_{epoch}"]) == 1 and
          str(jax.process_index()) in args.term_processes.split(",")):
        os.makedirs(args.record, exist_ok=True)
        with open(os.path.join(args.record, f"sigterm_{args.tag}.json"),
                  "w") as f:
          json.dump({"time": time.time()}, f)
        os.kill(os.getpid(), signal.SIGTERM)
      fed[f"{stage}_{epoch}"].append(_local_ids(batch["id"]))
      time.sleep(args.batch_seconds)
      yield batch

  def recording_atomic(path, write):
    written.append(os.path.relpath(path, os.path.abspath(workdir)))
    atomic(path, write)

  save = loop.save_checkpoint

  def stop_after(mngr, epoch, tree):
    save(mngr, epoch, tree)
    if (os.path.basename(str(mngr.directory)) == "warmup"
        and epoch == args.stop_after_warmup_epoch):
      raise SystemExit(STOP_STATUS)

  context.Context.train_batches = recording_train_batches
  wd._atomic = recording_atomic  # pylint: disable=protected-access
  if args.stop_after_warmup_epoch is not None:
    loop.save_checkpoint = stop_after

  main_flags = argv[split + 1:]
  workdir = next(f.split("=", 1)[1] for f in main_flags
                 if f.startswith("--workdir="))
  sys.argv = [os.path.join(ROOT, "experiments", "main.py"), *main_flags]
  saved = []

  def save_record():
    if saved:
      return
    saved.append(1)
    stem = os.path.join(args.record,
                        f"process_{jax.process_index()}_{args.tag}")
    os.makedirs(args.record, exist_ok=True)
    np.savez(stem + ".npz", **{k: np.stack(v) for k, v in fed.items()})
    with open(stem + ".json", "w") as f:
      json.dump({"written": written, "process_count": jax.process_count(),
                 "device_count": jax.device_count()}, f)

  # main.py ends its process itself after the exit handlers; registered
  # after JAX's, this one runs before JAX shuts down.
  atexit.register(save_record)
  try:
    runpy.run_path(sys.argv[0], run_name="__main__")
  finally:
    save_record()


if __name__ == "__main__":
  main()
