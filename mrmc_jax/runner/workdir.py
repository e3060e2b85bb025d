"""Crash-safe files in a run's workdir.

Every file is written to a temporary name in the same folder and renamed into
place, so a crash or a kill leaves either the old file or the new one, never
a torn one. Only process 0 writes.
"""

import json
import os
import tempfile
from typing import Any

import jax
import numpy as np


def is_writer() -> bool:
  """Only process 0 writes logs, plots and summaries."""
  return jax.process_index() == 0


def _atomic(path: str, write) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                             prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes a text file, atomically."""
  _atomic(path, lambda f: f.write(text.encode()))


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically."""
  data = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable).encode()
  _atomic(path, lambda f: f.write(data + b"\n"))


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def write_npy(path: str, array: np.ndarray) -> None:
  """Writes one array as `.npy`, atomically."""
  _atomic(path, lambda f: np.save(f, np.asarray(array)))


def write_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes arrays as one `.npz`, atomically."""
  _atomic(path, lambda f: np.savez(f, **{k: np.asarray(v)
                                         for k, v in arrays.items()}))


def read_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _jsonable(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


class ConfigMismatchError(ValueError):
  """The workdir holds a run of a different config."""


def claim(workdir: str, config_json: dict[str, Any]) -> bool:
  """Checks that `workdir` is empty or holds a run of this same config.

  Writes `config.json` on first use. Returns True if the workdir already held
  this run (a resume). Raises `ConfigMismatchError` naming the first
  differing field otherwise; nothing is overwritten.
  """
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    old = read_json(path)
    if old != config_json:
      diff = _first_difference(old, config_json)
      raise ConfigMismatchError(
          f"workdir {workdir} holds a run of a different config ({diff}); "
          "use a new --workdir or the same config to resume.")
    return True
  if is_writer():
    write_json(path, config_json)
  return False


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k, "<missing>") != b.get(k, "<missing>"):
        return _first_difference(a.get(k, "<missing>"), b.get(k, "<missing>"),
                                 f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: stored {a!r}, given {b!r}"
