"""Crash-safe files in a run's workdir, its lock and its identity.

Every file is written through `storage`: on a local path to a temporary name
in the same folder and renamed into place, on an object store (`gs://`) by
one upload of the whole object, so a crash or a kill leaves either the old
file or the new one, never a torn one. Only process 0 writes.

A run holds an exclusive lock on its workdir (`lock`) for its whole life, so
two runs never write one workdir. The workdir's `config.json` (the run
identity) and `data.json` (a fingerprint of the loaded data) are written by
`claim` once the inputs are validated and loaded; every stage output
records a `stamp` of what it was computed from, checked when it is read back.
See docs/reliability.md.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from typing import Any, Iterator, Optional

import jax
import numpy as np

from mrmc_jax import data as data_lib
from mrmc_jax.runner import fields
from mrmc_jax.runner import storage


def is_writer() -> bool:
  """Only process 0 writes logs, plots and summaries."""
  return jax.process_index() == 0


TMP_PREFIX = storage.TMP_PREFIX
_FILE_MODE = storage.FILE_MODE


def _atomic(path: str, write) -> None:
  storage.write_atomic(path, write)


def write_bytes(path: str, data: bytes) -> None:
  """Writes a file, atomically."""
  _atomic(path, lambda f: f.write(data))


def remove_stale_temporaries(workdir: str) -> list[str]:
  """Removes the `.tmp-*` files a killed run left (call under `lock`).

  Returns:
    The removed paths.
  """
  removed = []
  if not storage.is_local(workdir):
    return removed  # Object-store writes use no temporaries.
  for dirpath, _, files in os.walk(workdir):
    for name in files:
      if name.startswith(TMP_PREFIX):
        path = os.path.join(dirpath, name)
        try:
          os.remove(path)
          removed.append(path)
        except FileNotFoundError:
          pass
  return removed


def write_text(path: str, text: str) -> None:
  """Writes a text file, atomically."""
  _atomic(path, lambda f: f.write(text.encode()))


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically."""
  data = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable).encode()
  _atomic(path, lambda f: f.write(data + b"\n"))


class CorruptFileError(ValueError):
  """A workdir file exists but cannot be read (torn, garbled, wrong format)."""


def read_json(path: str) -> Any:
  """Reads a JSON file; `CorruptFileError` naming the file if it is garbled."""
  try:
    return json.loads(storage.read_bytes(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptFileError(f"{path} is not valid JSON ({e}); {_advice(path)}"
                           ) from None


def _advice(path: str) -> str:
  """What to do about a damaged workdir file, in words that work."""
  if os.path.basename(path) in set(IDENTITY_FILES.values()) | {"data.json"}:
    # The identity cannot be recreated from the outputs: deleting it only
    # turns the workdir into outputs of unknown origin.
    return ("the run's identity is lost, so its outputs cannot be trusted: "
            "use a new --workdir (or restore the file from a backup).")
  return "delete it or use a new --workdir."


def file_sha256(path: str) -> str:
  """SHA-256 of a file's bytes, read in 1 MiB chunks (any file size).

  The one content hash of the runner: stage outputs, warm-up artefacts and
  every file of a checkpoint (`sha256.json`). Local paths and URLs alike.
  """
  h = hashlib.sha256()
  with storage.open_binary(path) as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def write_npy(path: str, array: np.ndarray) -> None:
  """Writes one array as `.npy`, atomically."""
  _atomic(path, lambda f: np.save(f, np.asarray(array)))


def write_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes arrays as one `.npz`, atomically."""
  _atomic(path, lambda f: np.savez(f, **{k: np.asarray(v)
                                         for k, v in arrays.items()}))


def read_npz(path: str) -> dict[str, np.ndarray]:
  """Reads an `.npz`; `CorruptFileError` naming the file if it is damaged."""
  try:
    with np.load(storage.open_read(path), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise
  except Exception as e:  # zipfile, EOF, pickle and format errors alike.
    raise CorruptFileError(f"{path} is damaged ({type(e).__name__}: {e})"
                           ) from None


def read_npy(path: str) -> np.ndarray:
  """Reads an `.npy`; `CorruptFileError` naming the file if it is damaged."""
  try:
    return np.load(storage.open_read(path), allow_pickle=False)
  except FileNotFoundError:
    raise
  except Exception as e:
    raise CorruptFileError(f"{path} is damaged ({type(e).__name__}: {e})"
                           ) from None


def _jsonable(x):
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating,)):
    return float(x)
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x)}")


class ConfigMismatchError(ValueError):
  """The workdir holds a run of a different config, data or job."""


class WorkdirBusyError(ValueError):
  """Another process holds the workdir's lock."""


# What each job writes as its identity; a workdir holds one job's outputs.
IDENTITY_FILES = {"main": "config.json", "compare": "grid.json",
                  "attribution": "config.json"}
# Outputs of a run: their presence without an identity file means the
# identity was deleted, and the outputs cannot be trusted.
_OUTPUTS = ("summary.json", "coreset", "warmup", "checkpoints", "cells",
            "metrics.jsonl", "results.csv", "report.json", "matrices")


def check_workdir(workdir: str, job: str, identity: dict[str, Any]) -> None:
  """Cheap checks before any work: usable folder, same job, same config.

  Raises:
    ValueError: `workdir` is a file or not writable, holds another job's
      run, outputs without an identity, or a run of another config (the
      first differing field is named). Nothing is written.
  """
  storage.check_url(workdir)
  if storage.is_local(workdir):
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise ValueError(f"--workdir={workdir} is a file, not a folder.")
    parent = workdir
    while not os.path.exists(parent):
      parent = os.path.dirname(os.path.abspath(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
      raise ValueError(f"--workdir={workdir} is not writable ({parent} is "
                       "read-only for this user).")
  elif storage.isfile(workdir):
    raise ValueError(f"--workdir={workdir} is a file, not a folder.")
  if not storage.isdir(workdir):
    return
  mine = IDENTITY_FILES[job]
  for other_job, name in IDENTITY_FILES.items():
    if name != mine and storage.exists(os.path.join(workdir, name)):
      raise ConfigMismatchError(
          f"workdir {workdir} holds a {other_job} run ({name}), not a {job} "
          "run; use a new --workdir.")
  path = os.path.join(workdir, mine)
  if not storage.exists(path):
    found = [n for n in _OUTPUTS if storage.exists(os.path.join(workdir, n))]
    if found:
      raise ConfigMismatchError(
          f"workdir {workdir} holds run outputs ({', '.join(found)}) but no "
          f"{mine}, so what they were computed from is unknown; use a new "
          "--workdir.")
    return
  # A field stored at its `absent` value (or added since, at that value)
  # is the same run as one without it (`fields.drop_absent`).
  stored = read_json(path)
  if not isinstance(stored, dict):
    raise ConfigMismatchError(f"{path} is damaged (not a JSON object); "
                              f"{_advice(path)}")
  # Flat option names of a workdir written before 0.3.0 read as scoped.
  old = fields.drop_absent(fields.upgrade_identity(stored))
  identity = fields.drop_absent(identity)
  if old != identity:
    raise ConfigMismatchError(_mismatch(workdir, path, old, identity))


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds an exclusive lock on `workdir` (created if missing) while inside.

  On an object store (`gs://`) the lock is a lease object,
  `storage.Lease`. On a local path it is `flock` on the folder itself: no lock file to leave behind,
  and the kernel drops it when the process dies (kill -9 included), so a
  killed run never leaves a stale lock. Only process 0 locks: on a
  multi-host job the other processes write nothing to the workdir. A
  workdir this call created and that is still empty on exit (the run
  failed before writing anything) is removed again.

  Raises:
    WorkdirBusyError: another process holds the lock.
  """
  if not is_writer():
    yield
    return
  if not storage.is_local(workdir):
    lease = storage.Lease(workdir)
    try:
      lease.acquire()
    except storage.LeaseBusyError as e:
      raise WorkdirBusyError(str(e)) from None
    try:
      yield
    finally:
      lease.release()
    return
  created = not os.path.isdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise WorkdirBusyError(
            f"workdir {workdir} is in use by another run; wait for it to "
            "finish or use a new --workdir.") from None
      raise
    remove_stale_temporaries(workdir)
    try:
      yield
    finally:
      if created and not os.listdir(workdir):
        os.rmdir(workdir)
  finally:
    os.close(fd)  # Releases the lock.


def claim(workdir: str, identity: dict[str, Any],
          data: Optional[dict[str, Any]] = None, job: str = "main") -> bool:
  """Records (or checks) the run identity and data fingerprint of `workdir`.

  Call under `lock`, after the inputs are validated and the data loaded, so
  that a failed first run leaves no identity behind. `data.json` is written
  before the identity file, whose presence marks the workdir as claimed.

  Args:
    workdir: the run's folder.
    identity: what the run computes (`config.json` or `grid.json`).
    data: `mrmc_jax.data.fingerprint` of the loaded data, or None.
    job: a key of `IDENTITY_FILES`.

  Returns:
    True if the workdir already held this run (a resume).

  Raises:
    ConfigMismatchError: naming the first differing field of the config or
      of the data fingerprint; nothing is overwritten.
  """
  check_workdir(workdir, job, identity)
  path = os.path.join(workdir, IDENTITY_FILES[job])
  data_path = os.path.join(workdir, "data.json")
  resumed = storage.exists(path)
  if data is not None and storage.exists(data_path):
    old = read_json(data_path)
    older = data_lib.fingerprints.older_record(old, data)
    if older:
      raise ConfigMismatchError(
          f"{data_path} was written before the data fingerprint covered "
          f"{older}, so the results in {workdir} cannot be shown to match "
          "the data given; use a new --workdir (or finish the run with the "
          "version that wrote it).")
    if old != data:
      raise ConfigMismatchError(
          f"the data differ from the data of the run in {workdir} "
          f"({_first_difference(old, data)}); use a new --workdir.")
  if is_writer():
    if data is not None and not storage.exists(data_path):
      write_json(data_path, data)
    if not resumed:
      write_json(path, identity)
  return resumed


def stamp(*parts: Any) -> str:
  """A short hash of JSON-able parts: what a stage output was computed from."""
  data = json.dumps(parts, sort_keys=True, default=_jsonable).encode()
  return hashlib.sha256(data).hexdigest()[:16]


def check_stamp(path: str, stored: Optional[str], expected: str) -> None:
  """Refuses a stage output computed from another config or other data."""
  if stored != expected:
    raise ConfigMismatchError(
        f"{path} was computed from another config or other data (stamp "
        f"{stored}, expected {expected}); delete it or use a new --workdir.")


def _mismatch(workdir: str, path: str, old: Any, identity: Any) -> str:
  """The refusal of another config, with a command that works."""
  diff = _first_difference(old, identity)
  known = fields.declared()
  unknown = [p for p in _paths(old) if p not in known]
  if unknown:
    # No config has that field: the file was edited or damaged.
    return (f"{path} is damaged or edited ({unknown[0]} is not a config "
            f"field); {_advice(path)}")
  where, stored = _first_path(old, identity)
  resume = ""
  if where is not None and stored is not _MISSING and not isinstance(
      stored, dict):
    value = stored if isinstance(stored, str) else repr(stored)
    resume = f", or --config.{where}={value} to resume it"
  return (f"workdir {workdir} holds a run of a different config ({diff}); "
          f"use a new --workdir{resume}.")


_MISSING = object()


def _paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
  """The dotted paths of a nested dict's leaves."""
  out = []
  for k, v in tree.items():
    if isinstance(v, dict):
      out += _paths(v, f"{prefix}{k}.")
    else:
      out.append(f"{prefix}{k}")
  return out


def _first_path(a: Any, b: Any, prefix: str = "") -> tuple[Optional[str],
                                                           Any]:
  """The dotted path of the first difference and its value in `a`."""
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      x, y = a.get(k, _MISSING), b.get(k, _MISSING)
      if x != y:
        return _first_path(x, y, f"{prefix}{k}.")
  return (prefix.rstrip(".") or None), a


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k, "<missing>") != b.get(k, "<missing>"):
        return _first_difference(a.get(k, "<missing>"), b.get(k, "<missing>"),
                                 f"{prefix}{k}.")
  return f"{prefix.rstrip('.')}: stored {a!r}, given {b!r}"
