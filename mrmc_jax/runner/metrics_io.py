"""Metric writers: TensorBoard and logging (CLU) plus durable JSON lines.

`create_writer(workdir, stage)` returns a CLU writer for TensorBoard and the
log (on processes other than 0 it only logs); `metrics.jsonl` is written by
a `JsonlWriter`, whose rows are held until `commit()` appends them with an
fsync. The epoch loop commits an epoch's rows just before it saves the
epoch's checkpoint, and on resume `drop_rows_after` removes the rows of
epochs past the restored checkpoint, so after any kill the file holds
exactly one row per finished epoch of every stage.
"""

import json
import os
from typing import Any, Mapping

from clu import metric_writers
import jax
import numpy as np

from mrmc_jax.runner import workdir as wd


def read_rows(path: str) -> list[dict[str, Any]]:
  """The rows of a `metrics.jsonl`; a torn last line (a kill) is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def drop_rows_after(path: str, stage: str, epoch: int) -> None:
  """Keeps one row per epoch <= `epoch` of `stage`; rewrites atomically."""
  rows = read_rows(path)
  kept, seen = [], set()
  for r in rows:
    if r.get("stage") == stage:
      e = r.get("epoch")
      if e is None or e > epoch or e in seen:
        continue
      seen.add(e)
    kept.append(r)
  if len(kept) != len(rows) or (rows and not _ends_with_newline(path)):
    wd.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                for r in kept))


def _ends_with_newline(path: str) -> bool:
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    if f.tell() == 0:
      return True
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


class JsonlWriter(metric_writers.MetricWriter):
  """Scalars as JSON lines, appended durably on `commit()`.

  Other summary kinds are ignored. Rows written with `write_scalars` are
  held in memory until `commit()` (or `flush()`/`close()`), which appends
  them and fsyncs the file.
  """

  def __init__(self, path: str, **static_fields: Any):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
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
    with open(self._path, "a") as f:
      f.write("".join(self._pending))
      f.flush()
      os.fsync(f.fileno())
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


def create_writer(workdir: str, stage: str) -> metric_writers.MetricWriter:
  """TensorBoard under `workdir/tb/<stage>` and the log (process 0)."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  return metric_writers.create_default_writer(
      os.path.join(workdir, "tb", stage), asynchronous=False)
