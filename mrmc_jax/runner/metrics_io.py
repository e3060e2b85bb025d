"""Metric writers: TensorBoard and logging (CLU) plus JSON lines.

`create_writer(workdir)` returns a CLU `MultiWriter`; on processes other than
0 it only logs. Each `write_scalars(step, {...})` call becomes one line of
`metrics.jsonl`: `{"step": step, "stage": ..., name: value, ...}`.
"""

import json
import os
from typing import Any, Mapping

from clu import metric_writers
import jax
import numpy as np


class JsonlWriter(metric_writers.MetricWriter):
  """Appends scalars as JSON lines; other summary kinds are ignored."""

  def __init__(self, path: str, **static_fields: Any):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._file = open(path, "a")
    self._static = static_fields

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step), **self._static}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(row, sort_keys=True) + "\n")

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
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str, stage: str) -> metric_writers.MetricWriter:
  """TensorBoard under `workdir/tb/<stage>` + `workdir/metrics.jsonl`."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(
          os.path.join(workdir, "tb", stage), asynchronous=False),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl"), stage=stage),
  ])
