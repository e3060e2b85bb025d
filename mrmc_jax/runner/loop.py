"""The one epoch loop of every stage: restore, epochs, metrics, checkpoints.

`run_epochs` resumes from the stage's last readable orbax checkpoint, runs
the remaining epochs through the stage's `epoch_fn`, writes one metrics row
per epoch (TensorBoard and `metrics.jsonl`), shows progress with an ETA, and
checkpoints every `checkpoint_every` epochs and after the last; mid-epoch
checkpoints (every `checkpoint_every_steps` steps, and at the step where a
signal or orbax's preemption notice arrives, before the run stops) let a
stage resume at any step (docs/reliability.md, "Preemption"). The warm-up,
core-set training and each attribution setting are this loop with their own
`epoch_fn`.

Crash safety (docs/reliability.md): the last two checkpoints are kept; a
checkpoint that cannot be restored (truncated by a kill or a full disk), whose
files differ from the digests recorded beside them (`sha256.json`, written
once orbax has finished the save: SHA-256 on a local disk, the store's own
checksum on an object store), or whose parameters or optimizer state are
not finite, is skipped with one warning line for the one before it, then for
the stage start. An epoch's `metrics.jsonl` rows are made durable just before
its checkpoint is saved, and each checkpoint keeps a copy of the file as it
was then; on resume the file is checked against the newest copy (rebuilt from
it, with one warning, if it differs) and the rows of epochs past the restored
checkpoint are dropped: one row per epoch, none lost, none repeated. Every
row's `step` is the number of updates the stage has made at the end of the
row's epoch, and `learning_rate` the rate of the epoch's last update.
A NaN or infinite loss ends the run with `NonFiniteError` at the end of its
epoch (the loss is already on the host there), before its rows or checkpoint
are written. A stage's checkpoints live in `<workdir>/checkpoints/<name>`.
"""

import dataclasses
import math
import os
import signal
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
from mrmc_jax import validation
from mrmc_jax.runner import cli
from mrmc_jax.runner import metrics_io
from mrmc_jax.runner import storage
from mrmc_jax.runner import workdir as wd

Tree = dict[str, Any]
# epoch_fn(tree, epoch, tick) -> (tree, scalars): one epoch, from step
# `resume_step(tree)` of its layout (0, or k after a mid-epoch checkpoint:
# `tree` then holds the state after k steps and `tree["acc"]` their sums);
# `tick(tree)` after each step with the tree as it stands (same keys, the
# step's outputs in place of the inputs it donated), or `tick()` for a
# stage that never resumes mid-epoch; scalars are host floats (one sync per
# epoch).
EpochFn = Callable[[Tree, int, Callable[..., None]], tuple[Tree, dict]]

# Keys of a stage tree that only a mid-epoch checkpoint keeps: the epoch's
# running sums (`acc`, the stage's own) and `epoch_step`, int64 [2]
# (epoch, steps of it done). Epoch checkpoints hold the rest, as before.
STEP_KEYS = ("acc", "epoch_step")
# Mid-epoch checkpoints of a stage live beside its epoch checkpoints, in
# `<checkpoint_dir>` + this suffix, numbered by the stage's update count.
STEPS_SUFFIX = ".steps"
# Steps taken by this process in all stages: the step id of orbax's
# preemption sync point, which must rise on every host alike.
_steps_taken = [0]


def resume_step(tree: Tree) -> int:
  """The step of the epoch at which `epoch_fn` starts (0 unless resumed)."""
  return int(np.asarray(tree["epoch_step"])[1])


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
      storage.abspath(path),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=2, create=True, cleanup_tmp_directories=True))


MANIFEST = "sha256.json"
METRICS_COPY = "metrics.jsonl"


class DamagedCheckpointError(ValueError):
  """A checkpoint's files or values are not what was saved."""


class NonFiniteError(ValueError):
  """Training produced a NaN or infinite loss."""


def _file_hashes(step_dir: str,
                 want: Optional[dict[str, str]] = None) -> dict[str, str]:
  """`{relative path: digest}` of every file of a checkpoint folder.

  Local files: their SHA-256 (one read). On an object store: the store's
  own checksum of each object from one listing (`storage.stored_checksums`,
  no byte read back), except where `want` (a manifest being checked)
  holds a SHA-256 for the file, written by an older version.
  """
  stored = storage.stored_checksums(step_dir)
  paths = list(stored) if stored is not None else storage.walk_files(step_dir)
  out = {}
  for full in paths:
    name = os.path.basename(full)
    rel = os.path.relpath(full, step_dir) if storage.is_local(step_dir) else (
        full[len(step_dir.rstrip("/")) + 1:])
    if rel == MANIFEST or name.startswith(".tmp-"):
      continue
    old_form = want is not None and ":" not in str(want.get(rel, ":"))
    out[rel] = (stored[full] if stored is not None and not old_form
                else wd.file_sha256(full))
  return out


def _digest(path: str, like: str) -> str:
  """One file's digest in the form of `like` (a manifest entry)."""
  if ":" in like:
    return storage.stored_checksum(path)
  return wd.file_sha256(path)


def step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
  """The folder of checkpoint `step` (orbax's default step names)."""
  return os.path.join(str(mngr.directory), str(int(step)))


def verify_checkpoint(path: str) -> None:
  """Checks every file of a checkpoint against its `sha256.json` digests.

  Raises:
    DamagedCheckpointError: no manifest (the process ended between orbax's
      save and the manifest), or a file missing, added or changed.
  """
  manifest = os.path.join(path, MANIFEST)
  if not storage.exists(manifest):
    raise DamagedCheckpointError(f"no {MANIFEST}: the save did not finish")
  try:
    want = wd.read_json(manifest)["files"]
  except (wd.CorruptFileError, KeyError, TypeError) as e:
    raise DamagedCheckpointError(f"{MANIFEST} is damaged ({e})") from None
  got = _file_hashes(path, want)
  for rel in sorted(set(want) | set(got)):
    if want.get(rel) != got.get(rel):
      what = ("missing" if rel not in got else "unexpected" if rel not in want
              else "changed: its SHA-256 differs from the one saved")
      raise DamagedCheckpointError(f"file {rel} {what}")


def _all_finite(tree: Tree) -> bool:
  """True if every float leaf is finite (one host sync per leaf)."""
  for leaf in jax.tree.leaves(tree):
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
      if not bool(jnp.all(jnp.isfinite(leaf))):
        return False
  return True


# Reads of a checkpoint that fail for another reason than damage (a storage
# error) are tried this often, `READ_RETRY_SECONDS` apart (times the try).
READ_TRIES = 3
READ_RETRY_SECONDS = 1.0
# Broadcast by process 0 in place of a step when it could not read them.
_UNREADABLE = -2


def _first_line(e: BaseException) -> str:
  # Orbax and TensorStore raise long messages; the first line says enough.
  text = str(e).strip()
  return text.splitlines()[0][:200] if text else ""


def _unreadable(what: str, e: BaseException) -> OSError:
  return OSError(
      f"checkpoint {what} cannot be read ({type(e).__name__}: "
      f"{_first_line(e)}) after {READ_TRIES} tries; it was kept. Rerun the "
      "same command once the storage answers.")


def _damage(mngr: ocp.CheckpointManager, step: int) -> Optional[str]:
  """Why checkpoint `step` is damaged (its files against `sha256.json`), or
  None if it is sound. A read error is retried, never taken for damage.

  Raises:
    OSError: the files could not be read `READ_TRIES` times.
  """
  for attempt in range(READ_TRIES):
    try:
      verify_checkpoint(step_dir(mngr, step))
      return None
    except DamagedCheckpointError as e:
      return f"{type(e).__name__}: {e}"
    except Exception as e:  # pylint: disable=broad-except
      if attempt + 1 == READ_TRIES:
        raise _unreadable(f"{mngr.directory}/{step}", e) from None
      time.sleep(READ_RETRY_SECONDS * (attempt + 1))
  return None


def _choose_step(mngr: ocp.CheckpointManager) -> tuple[int, list[int]]:
  """(The newest sound checkpoint or -1, the damaged ones newer than it).

  Each file of the checkpoints looked at is read once (on process 0).
  """
  damaged = []
  for step in sorted(mngr.all_steps(), reverse=True):
    why = _damage(mngr, int(step))
    if why is None:
      return int(step), damaged
    logging.warning("Checkpoint %s/%d cannot be restored (%s); falling back "
                    "to the one before it.", mngr.directory, step, why)
    damaged.append(int(step))
  return -1, damaged


def _broadcast_steps(steps: list[int]) -> list[int]:
  """Process 0's list of step numbers, on every process."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  n = multihost_utils.broadcast_one_to_all(np.int32(len(steps)))
  values = np.asarray(steps if jax.process_index() == 0 else [0] * int(n),
                      np.int32).reshape(int(n))
  return [int(v) for v in np.asarray(
      multihost_utils.broadcast_one_to_all(values))]


def _drop(mngr: ocp.CheckpointManager, steps: list[int]) -> None:
  """Deletes damaged checkpoints alike on every process.

  With several processes, process 0 removes the folders and every process
  then reloads orbax's list (orbax's own delete waits at a barrier per
  step, and a host whose listing lags would never reach it).
  """
  if not steps:
    return
  if jax.process_count() == 1:
    for step in steps:
      mngr.delete(step)  # So that the epoch can be saved again.
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    for step in steps:
      storage.rmtree(step_dir(mngr, step))
  multihost_utils.sync_global_devices(f"drop {mngr.directory} {steps}")
  mngr.reload()


# Orbax's message for a checkpoint whose tree does not fit the target.
_MISMATCH = "tree structures do not match"


def _restore_step(mngr: ocp.CheckpointManager, step: int,
                  target: Tree) -> Optional[Tree]:
  """Restores a verified checkpoint on every process, retrying read errors
  on all of them together until each has read it.

  Returns:
    The tree, or None if the checkpoint holds another tree structure than
    `target` on any process (a superseded checkpoint, not a read error).

  Raises:
    OSError: it could not be read `READ_TRIES` times; it is kept.
  """
  for attempt in range(READ_TRIES):
    error = None
    try:
      tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except
      error, tree = e, None
    # A sound checkpoint of another state's structure (e.g. a warm-up that
    # now records more fields) is no read error: it is superseded.
    superseded = isinstance(error, ValueError) and _MISMATCH in str(error)
    failed = error is not None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      failed, superseded = (bool(v) for v in np.any(
          multihost_utils.process_allgather(
              np.array([failed, superseded], np.int32)), axis=0))
    if superseded:
      return None
    if not failed:
      return tree
    if attempt + 1 == READ_TRIES:
      raise _unreadable(f"{mngr.directory}/{step}", error or OSError(
          "another process could not read it")) from None
    time.sleep(READ_RETRY_SECONDS * (attempt + 1))
  raise AssertionError("unreachable")


def restore(mngr: ocp.CheckpointManager, target: Tree,
            unit: str = "epoch") -> tuple[int, Tree]:
  """Returns (checkpoint number, tree) from the newest sound checkpoint.

  The number is the completed epochs (epoch checkpoints), or updates
  (`unit="update"`, mid-epoch checkpoints).

  One decision for all processes: process 0 checks the checkpoints' files
  against their `sha256.json` (each file read once) and broadcasts the
  newest sound one and the damaged ones newer than it; every process then
  deletes the damaged ones alike and restores that one. A damaged
  checkpoint (files differ from the manifest, no manifest, or non-finite
  values in `tree["state"]`, or anywhere in a tree without one) is
  skipped with one warning line and deleted; with none left the
  stage starts over from `target` (epoch 0). A sound checkpoint of another
  tree structure than `target` (a stage that now keeps more state) is
  superseded: dropped with one warning line alike. A read error (the
  storage does not answer) is retried and never deletes a checkpoint.

  Raises:
    OSError: a checkpoint could not be read `READ_TRIES` times (kept).
  """
  while True:
    if jax.process_count() == 1:
      step, damaged = _choose_step(mngr)
    else:
      chosen, error = (-1, []), None
      if jax.process_index() == 0:
        try:
          chosen = _choose_step(mngr)
        except OSError as e:  # Unreadable: every process stops alike.
          chosen, error = (_UNREADABLE, []), e
      step, *damaged = _broadcast_steps([chosen[0], *chosen[1]])
      if step == _UNREADABLE:
        raise error or OSError(
            f"process 0 could not read the checkpoints of {mngr.directory} "
            f"after {READ_TRIES} tries; they were kept. Rerun the same "
            "command once the storage answers.")
      mngr.reload()  # This host's listing may lag process 0's.
    _drop(mngr, damaged)
    if step < 0:
      return 0, target
    tree = _restore_step(mngr, step, target)
    if tree is None:
      logging.warning("Checkpoint %s/%d holds another structure than this "
                      "stage's state (%s); starting from the one before it.",
                      mngr.directory, step, _MISMATCH)
      _drop(mngr, [step])
      continue
    # The parameters and optimizer state (the whole tree of a stage
    # without `state`): a stage's own records may hold NaN by design (the
    # attribution's probe losses of epochs still to come).
    if _all_finite(tree.get("state", tree)):  # The same on every process.
      logging.info("Resumed from %s at %s %d.", mngr.directory, unit, step)
      return int(step), tree
    logging.warning("Checkpoint %s/%d cannot be restored (it holds NaN or "
                    "infinite parameters or optimizer state); falling back "
                    "to the one before it.", mngr.directory, step)
    _drop(mngr, [step])


def save_checkpoint(mngr: ocp.CheckpointManager, epoch: int,
                    tree: Tree) -> None:
  """Saves `tree` as epoch `epoch` and waits until it is on disk.

  Process 0 then adds a copy of the workdir's `metrics.jsonl` (its rows are
  committed just before) and `sha256.json`, a digest of every file of the
  checkpoint, checked on restore. Orbax has no integrity check of its
  own. Local files: their SHA-256, one read of the checkpoint per save and
  per restore. On an object store: the store's own checksum of each object
  (MD5 or CRC32C, computed from the bytes it received), from one listing:
  nothing is read back.
  """
  mngr.save(epoch, args=ocp.args.StandardSave(tree))
  finish_checkpoint(mngr, epoch)


def finish_checkpoint(mngr: ocp.CheckpointManager, epoch: int) -> None:
  """Waits for orbax's save of `epoch`, then adds the copy and manifest."""
  mngr.wait_until_finished()
  if wd.is_writer():
    path = step_dir(mngr, epoch)
    workdir = os.path.dirname(os.path.dirname(str(mngr.directory)))
    metrics = os.path.join(workdir, "metrics.jsonl")
    if storage.exists(metrics):
      data = storage.read_bytes(metrics)
      wd.write_bytes(os.path.join(path, METRICS_COPY), data)
    wd.write_json(os.path.join(path, MANIFEST),
                  {"files": _file_hashes(path)})


def durable_metrics(checkpoints: str) -> Optional[bytes]:
  """The newest `metrics.jsonl` copy kept by a checkpoint under `checkpoints`.

  Every stage's newest checkpoint is looked at; each copy is checked
  against its manifest, and copies of one workdir's history are prefixes of
  each other, so the longest is the newest. None if there is none.
  """
  best = None
  if not storage.isdir(checkpoints):
    return None
  for stage in storage.listdir(checkpoints):
    root = os.path.join(checkpoints, stage)
    steps = sorted((int(s) for s in storage.listdir(root) if s.isdigit()),
                   reverse=True) if storage.isdir(root) else []
    for s in steps:
      path = os.path.join(root, str(s))
      try:
        want = wd.read_json(os.path.join(path, MANIFEST))["files"]
        copy = os.path.join(path, METRICS_COPY)
        if METRICS_COPY not in want or _digest(copy, want[METRICS_COPY]) != (
            want[METRICS_COPY]):
          continue
        data = storage.read_bytes(copy)
      except (OSError, ValueError, KeyError, TypeError):
        continue
      if best is None or len(data) > len(best):
        best = data
      break
  return best


def check_finite(scalars: dict[str, Any], what: str,
                 learning_rate: Optional[float] = None) -> None:
  """Refuses a NaN or infinite loss among host `scalars` (one line).

  Raises:
    NonFiniteError: naming `what` (the stage and epoch), the value, and the
      setting likely at fault.
  """
  for key in sorted(scalars):
    value = scalars[key]
    if "loss" in key and isinstance(value, float) and not math.isfinite(
        value):
      lr = ("" if learning_rate is None else
            f" (learning rate {learning_rate:.3g} in that epoch)")
      raise NonFiniteError(
          f"training diverged: {key} is {value} at {what}{lr}. Lower "
          "train.learning_rate (or check the data for NaN/huge values) and "
          "rerun with a new --workdir; nothing was selected from it.")


def check_finite_arrays(arrays: dict[str, np.ndarray], what: str) -> None:
  """Refuses float host arrays with NaN or infinite entries (one line)."""
  for key in sorted(arrays):
    a = np.asarray(arrays[key])
    if np.issubdtype(a.dtype, np.inexact):
      bad = ~np.isfinite(a)
      if bad.any():
        raise NonFiniteError(
            f"{what}: {key} holds {int(bad.sum())} NaN or infinite values; "
            "training diverged. Lower train.learning_rate (or check the data "
            "for NaN/huge values) and rerun with a new --workdir.")


def sums(stats: dict[str, jax.Array]) -> jax.Array:
  """`[loss sum, correct sum, count]` over the valid rows of `[B]` stats."""
  m = stats["mask"].astype(jnp.float32)
  # where, not a product: rows out of the mask may hold NaN (a bad label).
  return jnp.stack([jnp.sum(jnp.where(stats["mask"], stats["loss"], 0.0)),
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


def make_epoch_fn(step: Callable[..., tuple[dict, jax.Array]],
                  batches: Callable[[int, int], Any], *, mesh,
                  carry: tuple[str, ...] = ("state",),
                  steps_per_epoch: Optional[int] = None,
                  total_steps: Optional[int] = None,
                  finish: Optional[Callable[[Tree, int], tuple[Tree, dict]]]
                  = None) -> EpochFn:
  """The `EpochFn` of every stage: its steps, with metrics summed on device.

  The epoch starts at `resume_step(tree)`, from the sums `tree["acc"]` of
  the steps done when resumed mid-epoch (fresh zeros otherwise); a stage
  whose tree has no `acc` never resumes mid-epoch (`tick()` without a tree).
  The epoch's `train_loss` and `train_accuracy` are `means` of the sums
  (one host sync per epoch).

  Args:
    step: `(carried, acc, batch, epoch) -> (carried, acc)`: `carried` the
      dict of the tree's `carry` entries, `acc` the running sums, float32
      `[3]`, `[loss, accuracy, count]` (`sums`, or per-step means and 1),
      `epoch` the epoch as a replicated int32 scalar.
    batches: `(epoch, start) -> batches` of the epoch from step `start`.
    mesh: where fresh sums and the epoch scalar are placed.
    carry: the tree's entries that `step` updates.
    steps_per_epoch: with `total_steps`, the epoch's first global step.
    total_steps: the stage's last step (None: every batch of every epoch):
      an epoch stops at `total_steps` (the "steps" budget).
    finish: optional `(tree, epoch) -> (tree, scalars)` after the steps
      (per-epoch checks, evaluation); its scalars follow the means.

  Returns:
    `epoch_fn(tree, epoch, tick) -> (tree, scalars)` for `run_epochs`.
  """

  def epoch_fn(tree: Tree, epoch: int, tick: Callable[..., None]):
    k = resume_step(tree)  # > 0: resumed mid-epoch
    resumable = "acc" in tree
    acc = tree["acc"] if k else zeros_on(mesh)
    carried = {key: tree[key] for key in carry}
    e = sharding.replicate(np.int32(epoch), mesh)
    done = k
    for batch in batches(epoch, k):
      if (total_steps is not None and
          epoch * steps_per_epoch + done >= total_steps):
        break
      carried, acc = step(carried, acc, batch, e)
      done += 1
      if resumable:
        tick({**tree, **carried, "acc": acc})
      else:
        tick()
    tree = {**tree, **carried, **({"acc": acc} if resumable else {})}
    scalars = {}
    if finish is not None:
      tree, scalars = finish(tree, epoch)
    m = means(acc)
    return tree, {"train_loss": m["loss"], "train_accuracy": m["accuracy"],
                  **scalars}

  return epoch_fn


def _stamp_array(stamp: str) -> np.ndarray:
  return np.frombuffer(stamp.encode().ljust(16)[:16], np.uint8).copy()


def _without(tree: Tree, keys) -> Tree:
  return {k: v for k, v in tree.items() if k not in keys}


def _drop_superseded(mngr: Optional[ocp.CheckpointManager],
                     updates: int) -> None:
  """Deletes the mid-epoch checkpoints an epoch checkpoint has superseded."""
  if mngr is not None:
    for step in mngr.all_steps():
      if step <= updates:
        mngr.delete(step)


@dataclasses.dataclass
class _Resumed:
  """Where a stage resumes: its tree, the epoch and the step of that epoch,
  and the manager of its mid-epoch checkpoints (None if none exist yet)."""
  tree: Tree
  epoch: int
  step: int
  step_manager: Optional[ocp.CheckpointManager]


def _resume(stage: str, checkpoint_dir: str, mngr: ocp.CheckpointManager,
            tree: Tree, steps_per_epoch: int, stamp: str) -> _Resumed:
  """Restores the newest epoch checkpoint, then a newer mid-epoch one.

  Raises:
    workdir.ConfigMismatchError: the checkpoint is of another stamp.
  """
  tree = {**tree, "stamp": _stamp_array(stamp),
          "epoch_step": np.zeros(2, np.int64)}
  start, restored = restore(mngr, _without(tree, STEP_KEYS))
  tree = {**tree, **restored}
  resumed_at = 0
  smngr = None
  step_path = checkpoint_dir + STEPS_SUFFIX
  # Decided once: a host whose listing lags would skip the collective
  # restore the others run.
  if "acc" in tree and storage.decide_once(
      lambda: storage.isdir(step_path)):
    smngr = checkpoint_manager(step_path)
    # Those not past the restored epoch checkpoint are superseded by it.
    _drop_superseded(smngr, start * steps_per_epoch)
    updates, step_tree = restore(smngr, tree, unit="update")
    if updates:
      tree = step_tree
      start, resumed_at = (int(x) for x in np.asarray(tree["epoch_step"]))
      logging.info("%s resumes at epoch %d, step %d of %d.", stage,
                   start + 1, resumed_at, steps_per_epoch)
  if start or resumed_at:
    wd.check_stamp(checkpoint_dir, bytes(np.asarray(tree["stamp"])).decode(
        errors="replace").strip(), stamp.ljust(16)[:16].strip())
  return _Resumed(tree, start, resumed_at, smngr)


def _open_metrics(stage: str, workdir: str, checkpoint_dir: str,
                  start: int) -> tuple[Any, metrics_io.JsonlWriter]:
  """The stage's TensorBoard writer and `metrics.jsonl` writer, resumed.

  The file keeps the rows of the `start` epochs the checkpoint holds
  (rebuilt from a checkpoint's copy if damaged); TensorBoard gets those
  rows again, in a fresh folder: events of epochs past the checkpoint (a
  kill) would otherwise show twice.
  """
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  jsonl = metrics_io.JsonlWriter(metrics_path, stage=stage)
  rows = []
  if wd.is_writer():
    rows, warning = metrics_io.resume_rows(
        metrics_path, stage, start,
        durable_metrics(storage.dirname(storage.abspath(checkpoint_dir))))
    if warning:
      logging.warning("%s", warning)
    storage.rmtree(os.path.join(workdir, "tb", stage))
  writer = metrics_io.create_writer(workdir, stage)
  for row in rows:
    writer.write_scalars(row["step"], {
        k: v for k, v in row.items()
        if k not in ("step", "stage", "epoch") and
        isinstance(v, (int, float))})
  return writer, jsonl


class _Steps:
  """The per-step side of one stage's epochs: progress, signals, preemption
  notices and mid-epoch checkpoints (`tick`, handed to `epoch_fn`)."""

  def __init__(self, mngr: ocp.CheckpointManager, resumed: _Resumed,
               step_path: str, steps_per_epoch: int,
               checkpoint_every_steps: int, progress: Progress,
               jsonl: metrics_io.JsonlWriter):
    self.mngr = mngr
    self.smngr = resumed.step_manager
    self.step_path = step_path
    self.steps_per_epoch = steps_per_epoch
    self.every = checkpoint_every_steps
    self.progress = progress
    self.jsonl = jsonl

  def start_epoch(self, tree: Tree, epoch: int, done: int) -> None:
    """Called before each epoch: `tree` as it starts, `done` steps in."""
    self.tree, self.epoch, self.done = tree, epoch, done
    self.t0 = time.perf_counter()

  def tick(self, partial: Optional[Tree] = None) -> None:
    """After each step; stops the run at a signal or preemption notice."""
    self.done += 1
    self.progress.update()
    _steps_taken[0] += 1
    signum = cli.pending_signal()
    # Orbax's preemption notice: on a multi-host job all hosts reach this
    # sync point at the same step (False without JAX's distributed
    # preemption service). A SIGTERM handed to JAX's notifier
    # (`cli.waits_for_sync_point`) stops the job there, on every host at
    # once, whichever host it came to.
    preempted = self.mngr.reached_preemption(_steps_taken[0])
    if signum is not None and cli.waits_for_sync_point(signum):
      signum = None if not preempted else signum
    if signum is not None or preempted:
      if preempted or jax.process_count() == 1:
        cli.hold_exit()  # The save may outlast the watcher's grace.
        self.save(partial)
      raise cli.Interrupted(signal.SIGTERM if signum is None else signum)
    if (self.every and self.done % self.every == 0 and
        self.done < self.steps_per_epoch):
      self.save(partial)

  def save(self, partial: Optional[Tree]) -> None:
    """Saves the mid-epoch checkpoint of `partial` (the tree so far)."""
    if partial is None or "acc" not in self.tree:
      return  # This stage's epoch_fn cannot resume mid-epoch.
    if self.smngr is None:
      self.smngr = checkpoint_manager(self.step_path)
    partial = {**partial, "stamp": self.tree["stamp"],
               "epoch_step": np.array([self.epoch, self.done], np.int64),
               "seconds": np.float64(float(self.tree["seconds"]) +
                                     time.perf_counter() - self.t0)}
    # Rows of the finished epochs first, as before an epoch checkpoint.
    if wd.is_writer():
      self.jsonl.commit()
    save_checkpoint(self.smngr, self.epoch * self.steps_per_epoch + self.done,
                    partial)

  def close(self) -> None:
    if self.smngr is not None:
      self.smngr.close()


def _epoch_scalars(stage: str, tree: Tree, epoch: int, scalars: dict,
                   elapsed: float, step: int,
                   learning_rate: Optional[Callable[[int], Any]],
                   after_epoch: Optional[Callable[[Tree, int], dict]]
                   ) -> dict:
  """An epoch's metrics row: `epoch_fn`'s scalars, its time, learning rate
  and `after_epoch`'s scalars; a non-finite loss is refused."""
  scalars = {**scalars, "epoch_seconds": elapsed}
  if learning_rate is not None:
    scalars["learning_rate"] = float(learning_rate(max(step - 1, 0)))
  what = f"{stage} epoch {epoch + 1}"
  check_finite(scalars, what, scalars.get("learning_rate"))
  if after_epoch is not None:
    scalars.update(after_epoch(tree, epoch))
    check_finite(scalars, what, scalars.get("learning_rate"))
  return scalars


def run_epochs(*,
               stage: str,
               workdir: str,
               checkpoint_dir: str,
               tree: Tree,
               num_epochs: int,
               steps_per_epoch: int,
               epoch_fn: EpochFn,
               checkpoint_every: int,
               checkpoint_every_steps: int = 0,
               total_steps: Optional[int] = None,
               after_epoch: Optional[Callable[[Tree, int], dict]] = None,
               learning_rate: Optional[Callable[[int], Any]] = None,
               stamp: str = "",
               ) -> Tree:
  """Runs (or resumes) a stage's epochs; returns the final tree.

  Mid-epoch checkpoints (docs/reliability.md, "Preemption"): every
  `checkpoint_every_steps` steps of an epoch, and at the step where SIGINT,
  SIGTERM or orbax's preemption notice (`reached_preemption`, JAX's
  preemption sync point on multi-host jobs) arrives, the tree `tick` was
  given is saved with `epoch_step` = (epoch, steps done) in
  `<checkpoint_dir>.steps`, numbered by the stage's update count; the run
  then stops with `cli.Interrupted`. A resume takes the newest sound such
  checkpoint past the newest epoch checkpoint and hands `epoch_fn` a tree
  whose `resume_step` is k: the epoch's layout is a function of (seed,
  epoch), so its remaining batches are those it would have had. On a
  multi-host job SIGTERM (to one host or to all) goes to JAX's preemption
  notifier and every host saves and stops at the sync point they agree on;
  SIGINT (each host may see it at another step) stops without saving.

  Args:
    stage: the metrics stage name (`stage` field of metrics.jsonl, `tb/`).
    workdir: where metrics go.
    checkpoint_dir: the stage's orbax folder.
    tree: the initial state; must hold `seconds` (float64 scalar), the
      stage's accumulated epoch time, restored with the rest; and, if
      `epoch_fn` passes trees to `tick`, `acc`: its per-epoch sums (the
      value is not used: `epoch_fn` starts an epoch with fresh sums).
    num_epochs: epochs in all; those already checkpointed are skipped.
    steps_per_epoch: for progress.
    epoch_fn: one epoch (see `EpochFn`).
    checkpoint_every: epochs between checkpoints (the last always saves).
    checkpoint_every_steps: steps of an epoch between mid-epoch checkpoints
      (0: none; signals and preemption notices still save one).
    total_steps: the progress total (default `num_epochs * steps_per_epoch`).
    after_epoch: optional `(tree, epoch) -> scalars`, outside the epoch time
      (e.g. test evaluation).
    learning_rate: the stage's schedule `count -> rate`, logged per epoch.
    stamp: what the stage is computed from (`workdir.stamp`); kept in every
      checkpoint, and a checkpoint of another stamp is refused.

  Returns:
    The tree after the last epoch.

  Raises:
    ValueError: `checkpoint_every_steps` negative.
    workdir.ConfigMismatchError: the checkpoints are of another stamp.
    NonFiniteError: a NaN or infinite loss, at the end of its epoch.
    workdir.CorruptFileError: `metrics.jsonl` is damaged where no
      checkpoint's copy covers it.
    cli.Interrupted: SIGINT or SIGTERM (or a preemption notice), at the
      next step, after its checkpoint is saved.
  """
  validation.check_int(checkpoint_every_steps, "checkpoint_every_steps",
                       minimum=0)
  total = num_epochs * steps_per_epoch if total_steps is None else total_steps
  mngr = checkpoint_manager(checkpoint_dir)
  resumed = _resume(stage, checkpoint_dir, mngr, tree, steps_per_epoch, stamp)
  tree = resumed.tree
  writer, jsonl = _open_metrics(stage, workdir, checkpoint_dir,
                                resumed.epoch)
  progress = Progress(total, stage, writer, initial=min(
      resumed.epoch * steps_per_epoch + resumed.step, total))
  steps = _Steps(mngr, resumed, checkpoint_dir + STEPS_SUFFIX,
                 steps_per_epoch, checkpoint_every_steps, progress, jsonl)
  try:
    for epoch in range(resumed.epoch, num_epochs):
      done = resumed.step if epoch == resumed.epoch else 0
      tree = {**tree, "epoch_step": np.array([epoch, done], np.int64)}
      steps.start_epoch(tree, epoch, done)
      tree, scalars = epoch_fn(tree, epoch, steps.tick)
      elapsed = time.perf_counter() - steps.t0
      tree = {**tree, "seconds": np.float64(float(tree["seconds"]) + elapsed)}
      step = min((epoch + 1) * steps_per_epoch, total)
      scalars = _epoch_scalars(stage, tree, epoch, scalars, elapsed, step,
                               learning_rate, after_epoch)
      writer.write_scalars(step, scalars)
      jsonl.write_scalars(step, {"epoch": epoch + 1, **scalars})
      if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == num_epochs:
        # Rows first: a kill between the two leaves rows past the checkpoint,
        # which the resume drops; the other order would lose them.
        if wd.is_writer():
          jsonl.commit()
        save_checkpoint(mngr, epoch + 1, _without(tree, STEP_KEYS))
        _drop_superseded(steps.smngr, (epoch + 1) * steps_per_epoch)
  finally:
    # Before an error's message, which would otherwise land mid-bar.
    progress.close()
  writer.flush()
  mngr.close()
  steps.close()
  return tree
