"""Metric writers: TensorBoard and logging (CLU) plus durable JSON lines.

`create_writer(workdir, stage)` returns a CLU writer for TensorBoard and the
log (on processes other than 0 it only logs); `metrics.jsonl` is written by
a `JsonlWriter`, whose rows are held until `commit()` appends them with an
fsync. The epoch loop commits an epoch's rows just before it saves the
epoch's checkpoint (which keeps a copy of the file), and on resume
`resume_rows` checks the file against the newest copy and removes the rows
of epochs past the restored checkpoint, so after any kill the file holds
exactly one row per finished epoch of every stage, and damage (a truncated
file, a flipped bit, a duplicated row) is repaired from the copy with one
warning, or refused with one line where no copy covers it.
"""

import json
import os
import shutil
import tempfile
from typing import Any, Mapping, Optional

from clu import metric_writers
import jax
import numpy as np

from mrmc_jax.runner import storage
from mrmc_jax.runner import workdir as wd


def read_rows(path: str) -> list[dict[str, Any]]:
  """The rows of a `metrics.jsonl`; a torn last line (a kill) is skipped."""
  if not storage.exists(path):
    return []
  rows = []
  for line in storage.read_bytes(path).decode(errors="replace").splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def resume_rows(path: str, stage: str, epoch: int,
                durable: Optional[bytes]) -> tuple[list[dict[str, Any]],
                                                   Optional[str]]:
  """Makes `path` hold the rows of the state restored at `stage`'s `epoch`.

  Args:
    path: the workdir's `metrics.jsonl`.
    stage: the stage being resumed.
    epoch: its restored epoch (0: from the start).
    durable: the file as it was at the newest checkpoint of the workdir
      (`loop.durable_metrics`), or None if no checkpoint holds a copy.

  Returns:
    `(rows of stage, warning)`: the stage's rows kept (epochs 1..`epoch`),
    and a one-line warning if the file was rebuilt from `durable`, else
    None.

  Raises:
    workdir.CorruptFileError: a damaged line (not the torn last line of a
      kill) that no copy covers, or rows of `stage` that are not exactly
      epochs 1..`epoch`.
  """
  data = b""
  if storage.exists(path):
    data = storage.read_bytes(path)
  warning = None
  head = durable or b""
  if durable is not None and not data.startswith(durable):
    line = 1 + _common_prefix(data, durable).count(b"\n")
    warning = (f"{path} is damaged or cut short (line {line} differs from the "
               "copy kept with the newest checkpoint); rebuilt from that copy "
               "(rows past the checkpoint are computed again).")
    tail = b""
  else:
    tail = data[len(head):]
  lines = tail.split(b"\n")
  first_line = head.count(b"\n") + 1
  # The epochs of `stage` the copy holds: a row after it repeating one of
  # them (a duplicated row) is covered by the copy and dropped.
  seen = {r.get("epoch") for r in _rows_of(head) if r.get("stage") == stage}
  kept = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      if not isinstance(row, dict):
        raise ValueError(type(row).__name__)
    except (ValueError, UnicodeDecodeError):
      if i == len(lines) - 1 or durable is not None:
        # The torn last line of a kill while appending, or a row written
        # after the newest checkpoint (computed again): dropped.
        continue
      raise wd.CorruptFileError(
          f"{path} line {first_line + i} is damaged (not a JSON row) and no "
          "checkpoint keeps a copy to rebuild it from; delete that line (its "
          "row is then missing) or use a new --workdir.") from None
    if row.get("stage") == stage and (row.get("epoch") or 0) > epoch:
      continue
    if row.get("stage") == stage:
      if row.get("epoch") in seen and durable is not None:
        warning = warning or (
            f"{path} line {first_line + i} repeats epoch {row.get('epoch')} "
            f"of stage {stage!r}; rebuilt from the copy kept with the newest "
            "checkpoint.")
        continue
      seen.add(row.get("epoch"))
    kept.append(line + b"\n")
  out = head + b"".join(kept)
  rows = [json.loads(l) for l in out.splitlines() if l.strip()]
  mine = [r for r in rows if r.get("stage") == stage]
  epochs = [r.get("epoch") for r in mine]
  if epochs != list(range(1, epoch + 1)):
    raise wd.CorruptFileError(
        f"{path} holds epochs {epochs} of stage {stage!r} where the "
        f"checkpoint has {epoch}; rows are lost and no copy can rebuild them: "
        "use a new --workdir.")
  if out != data:
    wd.write_bytes(path, out)
  return mine, warning


def _rows_of(data: bytes) -> list[dict[str, Any]]:
  """The JSON rows of sound `metrics.jsonl` bytes (a checkpoint's copy)."""
  rows = []
  for line in data.splitlines():
    try:
      row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
      continue
    if isinstance(row, dict):
      rows.append(row)
  return rows


def _common_prefix(a: bytes, b: bytes) -> bytes:
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return a[:n]


class JsonlWriter(metric_writers.MetricWriter):
  """Scalars as JSON lines, appended durably on `commit()`.

  Other summary kinds are ignored. Rows written with `write_scalars` are
  held in memory until `commit()` (or `flush()`/`close()`), which appends
  them and fsyncs the file.
  """

  def __init__(self, path: str, **static_fields: Any):
    storage.makedirs(os.path.dirname(path) or ".")
    self._path = path
    self._static = static_fields
    self._pending: list[str] = []

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step), **self._static}
    row.update({k: (int(v) if isinstance(v, (int, np.integer)) else
                    float(np.asarray(v))) for k, v in scalars.items()})
    self._pending.append(json.dumps(row, sort_keys=True) + "\n")

  def commit(self):
    """Appends the pending rows and waits until they are on disk."""
    if not self._pending:
      return
    storage.append_durable(self._path, "".join(self._pending).encode())
    self._pending = []

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self.commit()

  def close(self):
    self.commit()


class _UploadingWriter(metric_writers.MetricWriter):
  """TensorBoard events written locally and copied to an object store.

  TensorFlow's summary writer reaches object stores only through its own
  GCS client, which has no endpoint setting (so it cannot be pointed at an
  emulator, and would bypass the workdir's storage layer). Events go to a
  local folder instead, and every `flush()` (each epoch's commit) uploads
  each events file whole, which is atomic per file.
  """

  def __init__(self, target: str):
    self._target = target
    self._local = tempfile.mkdtemp(prefix="tb-")
    self._inner = metric_writers.create_default_writer(
        self._local, asynchronous=False)

  def write_scalars(self, step, scalars):
    self._inner.write_scalars(step, scalars)

  def write_summaries(self, step, values, metadata=None):
    self._inner.write_summaries(step, values, metadata)

  def write_images(self, step, images):
    self._inner.write_images(step, images)

  def write_videos(self, step, videos):
    self._inner.write_videos(step, videos)

  def write_audios(self, step, audios, *, sample_rate):
    self._inner.write_audios(step, audios, sample_rate=sample_rate)

  def write_texts(self, step, texts):
    self._inner.write_texts(step, texts)

  def write_histograms(self, step, arrays, num_buckets=None):
    self._inner.write_histograms(step, arrays, num_buckets)

  def write_hparams(self, hparams):
    self._inner.write_hparams(hparams)

  def flush(self):
    self._inner.flush()
    for path in storage.walk_files(self._local):
      rel = os.path.relpath(path, self._local)
      data = storage.read_bytes(path)
      storage.write_atomic(os.path.join(self._target, rel),
                           lambda f, d=data: f.write(d))

  def close(self):
    self.flush()
    self._inner.close()
    shutil.rmtree(self._local, ignore_errors=True)


def create_writer(workdir: str, stage: str) -> metric_writers.MetricWriter:
  """TensorBoard under `workdir/tb/<stage>` and the log (process 0)."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  target = os.path.join(workdir, "tb", stage)
  if not storage.is_local(workdir):
    return _UploadingWriter(target)
  return metric_writers.create_default_writer(target, asynchronous=False)
