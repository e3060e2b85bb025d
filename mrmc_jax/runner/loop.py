"""The one epoch loop of every stage: restore, epochs, metrics, checkpoints.

`run_epochs` resumes from the stage's last readable orbax checkpoint, runs
the remaining epochs through the stage's `epoch_fn`, writes one metrics row
per epoch (TensorBoard and `metrics.jsonl`), shows progress with an ETA, and
checkpoints every `checkpoint_every` epochs and after the last. The warm-up,
core-set training and each attribution setting are this loop with their own
`epoch_fn`.

Crash safety (docs/reliability.md): the last two checkpoints are kept; a
checkpoint that cannot be restored (truncated by a kill or a full disk) is
skipped with one warning line for the one before it, then for the stage
start. An epoch's `metrics.jsonl` rows are made durable just before its
checkpoint is saved, and on resume the rows of epochs past the restored
checkpoint are dropped: one row per epoch, none lost, none repeated. Every
row's `step` is the number of updates the stage has made at the end of the
row's epoch, and `learning_rate` the rate of the epoch's last update.
"""

import os
import time
from typing import Any, Callable, Optional

from absl import logging
from clu import periodic_actions
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from mrmc_jax import sharding
from mrmc_jax.runner import metrics_io
from mrmc_jax.runner import workdir as wd

Tree = dict[str, Any]
# epoch_fn(tree, epoch, tick) -> (tree, scalars): one epoch; `tick()` after
# each step; scalars are host floats (one sync per epoch).
EpochFn = Callable[[Tree, int, Callable[[], None]], tuple[Tree, dict]]


class Progress:
  """A tqdm bar with ETA (process 0 only) plus CLU's steps/sec reports."""

  def __init__(self, total: int, desc: str, writer, initial: int = 0):
    self.bar = tqdm.tqdm(total=total, initial=initial, desc=desc,
                         disable=not wd.is_writer(), dynamic_ncols=True,
                         mininterval=1.0)
    self.report = periodic_actions.ReportProgress(
        num_train_steps=total, writer=writer, every_secs=60)
    self.step = initial

  def update(self):
    self.step += 1
    self.bar.update(1)
    self.report(self.step)

  def close(self):
    self.bar.close()


def checkpoint_manager(path: str) -> ocp.CheckpointManager:
  # Two kept: if the newest is damaged, the one before it is the fallback.
  # Temporary folders of a save that a kill interrupted are removed.
  return ocp.CheckpointManager(
      os.path.abspath(path),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=2, create=True, cleanup_tmp_directories=True))


def restore(mngr: ocp.CheckpointManager, target: Tree) -> tuple[int, Tree]:
  """Returns (completed epochs, tree) from the newest readable checkpoint.

  A checkpoint that fails to restore is skipped with one warning line; with
  none readable the stage starts over from `target` (epoch 0).
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and TensorStore raise many types for a torn file; the message
      # is long, its first line says enough.
      first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
      logging.warning("Checkpoint %s/%d cannot be restored (%s: %s); "
                      "falling back to the one before it.", mngr.directory,
                      step, type(e).__name__, first)
      # Removed, so that the epoch can be saved again under its number.
      mngr.delete(step)
      continue
    logging.info("Resumed from %s at epoch %d.", mngr.directory, step)
    return int(step), tree
  return 0, target


def save_checkpoint(mngr: ocp.CheckpointManager, epoch: int,
                    tree: Tree) -> None:
  """Saves `tree` as epoch `epoch` and waits until it is on disk."""
  mngr.save(epoch, args=ocp.args.StandardSave(tree))
  mngr.wait_until_finished()


def sums(stats: dict[str, jax.Array]) -> jax.Array:
  """`[loss sum, correct sum, count]` over the valid rows of `[B]` stats."""
  m = stats["mask"].astype(jnp.float32)
  return jnp.stack([jnp.sum(stats["loss"] * m),
                    jnp.sum(stats["correct"].astype(jnp.float32) * m),
                    jnp.sum(m)])


def means(acc) -> dict[str, float]:
  """Mean loss and accuracy from accumulated `sums` (one host sync)."""
  loss, correct, count = (float(x) for x in np.asarray(acc))
  count = max(count, 1.0)
  return {"loss": loss / count, "accuracy": correct / count}


def zeros_on(mesh, shape=(3,)) -> jax.Array:
  """A replicated zero accumulator on the mesh.

  Placed like the jitted steps' outputs: an uncommitted array on one device
  would give the first call other input shardings than the rest (a second
  compilation), and cannot join a multi-host jit.
  """
  return sharding.replicate(np.zeros(shape, np.float32), mesh)


def _stamp_array(stamp: str) -> np.ndarray:
  return np.frombuffer(stamp.encode().ljust(16)[:16], np.uint8).copy()


def run_epochs(*,
               stage: str,
               workdir: str,
               checkpoint_dir: str,
               tree: Tree,
               num_epochs: int,
               steps_per_epoch: int,
               epoch_fn: EpochFn,
               checkpoint_every: int,
               total_steps: Optional[int] = None,
               after_epoch: Optional[Callable[[Tree, int], dict]] = None,
               learning_rate: Optional[Callable[[int], Any]] = None,
               stamp: str = "",
               ) -> Tree:
  """Runs (or resumes) a stage's epochs; returns the final tree.

  Args:
    stage: the metrics stage name (`stage` field of metrics.jsonl, `tb/`).
    workdir: where metrics go.
    checkpoint_dir: the stage's orbax folder.
    tree: the initial state; must hold `seconds` (float64 scalar), the
      stage's accumulated epoch time, restored with the rest.
    num_epochs: epochs in all; those already checkpointed are skipped.
    steps_per_epoch: for progress.
    epoch_fn: one epoch (see `EpochFn`).
    checkpoint_every: epochs between checkpoints (the last always saves).
    total_steps: the progress total (default `num_epochs * steps_per_epoch`).
    after_epoch: optional `(tree, epoch) -> scalars`, outside the epoch time
      (e.g. test evaluation).
    learning_rate: the stage's schedule `count -> rate`, logged per epoch.
    stamp: what the stage is computed from (`workdir.stamp`); kept in every
      checkpoint, and a checkpoint of another stamp is refused.

  Returns:
    The tree after the last epoch.

  Raises:
    workdir.ConfigMismatchError: the checkpoints are of another stamp.
  """
  total = num_epochs * steps_per_epoch if total_steps is None else total_steps
  mngr = checkpoint_manager(checkpoint_dir)
  tree = {**tree, "stamp": _stamp_array(stamp)}
  start, tree = restore(mngr, tree)
  if start:
    wd.check_stamp(checkpoint_dir, bytes(np.asarray(tree["stamp"])).decode(
        errors="replace").strip(), stamp.ljust(16)[:16].strip())
  writer = metrics_io.create_writer(workdir, stage)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  jsonl = metrics_io.JsonlWriter(metrics_path, stage=stage)
  if wd.is_writer():
    metrics_io.drop_rows_after(metrics_path, stage, start)
  progress = Progress(total, stage, writer,
                      initial=min(start * steps_per_epoch, total))
  try:
    for epoch in range(start, num_epochs):
      t0 = time.perf_counter()
      tree, scalars = epoch_fn(tree, epoch, progress.update)
      elapsed = time.perf_counter() - t0
      tree = {**tree, "seconds": np.float64(float(tree["seconds"]) + elapsed)}
      step = min((epoch + 1) * steps_per_epoch, total)
      scalars = {**scalars, "epoch_seconds": elapsed}
      if learning_rate is not None:
        scalars["learning_rate"] = float(learning_rate(max(step - 1, 0)))
      if after_epoch is not None:
        scalars.update(after_epoch(tree, epoch))
      writer.write_scalars(step, scalars)
      jsonl.write_scalars(step, {"epoch": epoch + 1, **scalars})
      if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == num_epochs:
        # Rows first: a kill between the two leaves rows past the checkpoint,
        # which the resume drops; the other order would lose them.
        if wd.is_writer():
          jsonl.commit()
        save_checkpoint(mngr, epoch + 1, tree)
  finally:
    # Before an error's message, which would otherwise land mid-bar.
    progress.close()
  writer.flush()
  mngr.close()
  return tree
