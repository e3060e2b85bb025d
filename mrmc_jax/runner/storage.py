"""Workdir storage: local folders and object stores behind one set of calls.

Every workdir file goes through this module, so a workdir may be a local
path or a `gs://bucket/prefix` URL. Local paths use POSIX calls (atomic
writes by temporary file, fsync and rename; `flock` on the folder). URLs go
through `etils.epath` with its fsspec backend (gcsfs for `gs://`), the same
layer orbax uses for its folders; orbax and tensorstore get the URL
unchanged (`abspath` keeps URLs as they are). On an object store a
single-object upload is atomic (readers see the old object or the new one),
so files are written to their final name directly; a folder is only a
prefix, so "create a folder" is a no-op. The run's exclusive lock on an
object store is a lease object (`Lease`), created with an
`ifGenerationMatch=0` precondition. See docs/reliability.md.

`decide_once(fn)` makes a stage decision ("is this stage done?") on process
0 only and broadcasts it, so hosts whose views of the storage lag can never
disagree.

Settings honoured (all documented by their libraries): `STORAGE_EMULATOR_HOST`
(gcsfs, google-cloud-storage), `TENSORSTORE_GCS_HTTP_URL` (tensorstore, so
orbax's arrays), `GOOGLE_AUTH_TOKEN_FOR_TESTING` (tensorstore without
credentials). `EPATH_USE_TF` is set to `false` when a `gs://` workdir is
checked: TensorFlow's GCS file system has no endpoint setting (its URL
`https://www.googleapis.com/storage/v1/` is compiled in), so every epath
user (orbax included) goes through gcsfs instead, which honours the
emulator setting.
"""

import io
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from typing import Any, BinaryIO, Callable, Iterator, Optional

# Schemes a workdir may use besides local paths; orbax accepts them too.
SCHEMES = ("gs",)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Seconds a reachability check may take before the storage counts as down.
CHECK_TIMEOUT_S = float(os.environ.get("MRMC_STORAGE_CHECK_SECONDS", "30"))


def scheme(path: str) -> Optional[str]:
  """The URL scheme of `path` ("gs"), or None for a local path."""
  m = _URL.match(str(path))
  return m.group(1).lower() if m else None


def is_local(path: str) -> bool:
  return scheme(path) is None


def _looks_like_url(path: str) -> bool:
  # "gs:/bucket" (one slash) or "gs:bucket" would otherwise become a local
  # folder named "gs:".
  return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", str(path))) and (
      scheme(path) is not None or str(path).split(":", 1)[0].lower() in
      SCHEMES + ("s3", "az", "hf", "http", "https", "file", "memory"))


def use_gcsfs() -> None:
  """Points every epath user (orbax included) at gcsfs for `gs://`.

  Sets `EPATH_USE_TF=false` unless the user chose, and forgets epath's
  cached answer to "use TensorFlow?", which the first epath path of the
  process (local ones included, e.g. an earlier orbax checkpoint) fixes.
  Bounds tensorstore's retries (`bound_array_retries`) for the same URLs.
  """
  os.environ.setdefault("EPATH_USE_TF", "false")
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  cached = getattr(gpath, "_is_tf_installed", None)
  if hasattr(cached, "cache_clear"):
    cached.cache_clear()
  bound_array_retries()


# Tensorstore's retries of a failed GCS request (orbax's array data):
# 1, 2, 4, 8, 16, 16, 16, 16 s apart, about 80 s in all, like gcsfs's own
# for the other files. Its default (32 retries up to 32 s apart) keeps a
# run whose storage stopped answering waiting about 15 minutes in a save
# before the one error line.
ARRAY_RETRIES = {"max_retries": 8, "initial_delay": "1s", "max_delay": "16s"}


def bound_array_retries() -> None:
  """Gives orbax's tensorstore contexts `ARRAY_RETRIES` for GCS requests.

  Orbax builds each tensorstore context from its module's defaults and has
  no setting for it; `gcs_request_retries` is tensorstore's documented
  context resource. Idempotent; a user's own value is kept.
  """
  from orbax.checkpoint._src.serialization import tensorstore_utils  # pylint: disable=g-import-not-at-top
  for name in ("_BASE_TS_CONTEXT", "_DEFAULT_OCDBT_TS_CONTEXT"):
    context = getattr(tensorstore_utils, name, None)
    if isinstance(context, dict):
      context.setdefault("gcs_request_retries", dict(ARRAY_RETRIES))


def check_url(path: str) -> None:
  """Refuses a workdir that is not a local path or reachable `gs://` URL.

  Called before any work: nothing is read or written besides one listing
  of the bucket.

  Raises:
    ValueError: one line naming the path and what is supported.
  """
  path = str(path)
  s = scheme(path)
  if s is None:
    if _looks_like_url(path):
      raise ValueError(
          f"--workdir={path} looks like a URL but is not one (write "
          f"scheme://bucket/path); supported: local paths, "
          f"{', '.join(x + '://' for x in SCHEMES)}.")
    return
  if s not in SCHEMES:
    raise ValueError(
        f"--workdir={path}: the scheme {s}:// is not supported; supported: "
        f"local paths, {', '.join(x + '://' for x in SCHEMES)}.")
  rest = path[len(s) + 3:]
  bucket = rest.split("/", 1)[0]
  if not bucket:
    raise ValueError(f"--workdir={path} names no bucket ({s}://BUCKET/path).")
  use_gcsfs()
  try:
    import gcsfs  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ValueError(f"--workdir={path} needs gcsfs (pip install gcsfs)."
                     ) from None
  result: dict[str, Any] = {}

  def probe():
    try:
      result["ok"] = _fs(path).exists(f"{s}://{bucket}")
    except Exception as e:  # pylint: disable=broad-except
      result["error"] = f"{type(e).__name__}: {e}".splitlines()[0]

  t = threading.Thread(target=probe, daemon=True)
  t.start()
  t.join(CHECK_TIMEOUT_S)
  if t.is_alive():
    raise ValueError(f"--workdir={path}: the storage did not answer within "
                     f"{CHECK_TIMEOUT_S:.0f} s; check the network and "
                     "credentials.")
  if "error" in result:
    raise ValueError(f"--workdir={path}: the storage is not reachable "
                     f"({result['error'][:200]}).")
  if not result.get("ok"):
    raise ValueError(f"--workdir={path}: bucket {bucket} does not exist or "
                     "is not visible with these credentials.")


def _fs(path: str):
  import fsspec  # pylint: disable=g-import-not-at-top
  return fsspec.filesystem(scheme(path))


def _epath(path: str):
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(path)


def abspath(path: str) -> str:
  """`os.path.abspath` for local paths; URLs unchanged."""
  return os.path.abspath(path) if is_local(path) else str(path).rstrip("/")


def join(*parts: str) -> str:
  return os.path.join(*[str(p) for p in parts])


def dirname(path: str) -> str:
  """The parent folder; a bucket's root for its top-level objects."""
  return os.path.dirname(str(path).rstrip("/") if not is_local(path) else path)


def exists(path: str) -> bool:
  return os.path.exists(path) if is_local(path) else _epath(path).exists()


def isdir(path: str) -> bool:
  return os.path.isdir(path) if is_local(path) else _epath(path).is_dir()


def isfile(path: str) -> bool:
  return os.path.isfile(path) if is_local(path) else _epath(path).is_file()


def listdir(path: str) -> list[str]:
  """Names (not paths) in folder `path`; [] for a missing prefix."""
  if is_local(path):
    return os.listdir(path)
  p = _epath(path)
  return [c.name for c in p.iterdir()] if p.is_dir() else []


def makedirs(path: str) -> None:
  """Creates a folder (a no-op on object stores, where folders are prefixes)."""
  if is_local(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  if is_local(path):
    os.remove(path)
  else:
    _epath(path).unlink()


def rmtree(path: str) -> None:
  """Removes a folder and all below it; a missing one is fine."""
  if is_local(path):
    shutil.rmtree(path, ignore_errors=True)
  elif _epath(path).exists():
    _epath(path).rmtree()


def walk_files(top: str) -> Iterator[str]:
  """Paths of every file below `top`."""
  if is_local(top):
    for dirpath, _, files in os.walk(top):
      for name in files:
        yield os.path.join(dirpath, name)
    return
  fs = _fs(top)
  prefix = f"{scheme(top)}://"
  for p in fs.find(top):
    yield p if scheme(p) else prefix + p


def stored_checksums(top: str) -> Optional[dict[str, str]]:
  """The store's own checksum of every file below URL `top`, from a listing.

  An object store computes a checksum of each object from the bytes it
  received (GCS: MD5, or CRC32C for composed objects) and returns it with
  the listing, so a checkpoint of any size is fingerprinted without reading
  it back. Values are `"md5:<base64>"` or `"crc32c:<base64>"`.

  Args:
    top: a folder URL.

  Returns:
    `{path: checksum}` for every object below `top` (full URLs, as
    `walk_files` gives them), or None for a local path (hash the bytes).
  """
  if is_local(top):
    return None
  fs = _fs(top)
  fs.invalidate_cache(top)  # Listings are cached; this one must be fresh.
  prefix = f"{scheme(top)}://"
  return {p if scheme(p) else prefix + p: _checksum(prefix + p, info)
          for p, info in fs.find(top, detail=True).items()}


def stored_checksum(path: str) -> str:
  """The store's checksum of one object (see `stored_checksums`)."""
  fs = _fs(path)
  fs.invalidate_cache(path)
  return _checksum(path, fs.info(path))


def _checksum(path: str, info: dict[str, Any]) -> str:
  if info.get("md5Hash"):
    return f"md5:{info['md5Hash']}"
  if info.get("crc32c"):
    return f"crc32c:{info['crc32c']}"
  raise OSError(f"{path}: the store gave no checksum of the object")


def read_bytes(path: str) -> bytes:
  """A file's bytes; FileNotFoundError if it is missing."""
  if is_local(path):
    with open(path, "rb") as f:
      return f.read()
  p = _epath(path)
  if not p.is_file():
    raise FileNotFoundError(2, "No such file", str(path))
  return p.read_bytes()


def open_binary(path: str) -> BinaryIO:
  """A file opened for streaming reads; FileNotFoundError if it is missing."""
  if is_local(path):
    return open(path, "rb")
  p = _epath(path)
  if not p.is_file():
    raise FileNotFoundError(2, "No such file", str(path))
  return p.open("rb")


def open_read(path: str) -> io.BytesIO:
  """A file as a seekable in-memory stream (for `np.load`)."""
  return io.BytesIO(read_bytes(path))


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# The mode `open` gives new files: mkstemp's temporaries are 0600.
FILE_MODE = 0o666 & ~_umask()
TMP_PREFIX = ".tmp-"


def write_atomic(path: str, write: Callable[[Any], None]) -> None:
  """Writes a file so that readers see the old file or the new one.

  Local: to a temporary name in the same folder, fsync, rename. Object
  store: one upload of the whole object (atomic by the store's contract).

  Args:
    path: the file.
    write: called with a binary file object to write the contents to.
  """
  if not is_local(path):
    buf = io.BytesIO()
    write(buf)
    _epath(path).write_bytes(buf.getvalue())
    return
  folder = os.path.dirname(path) or "."
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder,
                             prefix=TMP_PREFIX + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fchmod(f.fileno(), FILE_MODE)
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def append_durable(path: str, data: bytes) -> None:
  """Appends `data` and returns once it is stored.

  Local: append and fsync (a kill may leave a torn last line, which readers
  skip). Object store: objects cannot be appended to, so the whole object
  is uploaded again with the new bytes (atomic; O(file size), fine for the
  small `metrics.jsonl`). Only the single writer (process 0) calls this.
  """
  if is_local(path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "ab") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    return
  old = read_bytes(path) if exists(path) else b""
  write_atomic(path, lambda f: f.write(old + data))


# --- The lease: an exclusive lock on an object-store workdir. ---

LEASE_NAME = ".lease"
# A lease not refreshed for this long is free to take. Refreshed every
# third of it by a background thread of the holder.
LEASE_SECONDS = float(os.environ.get("MRMC_LEASE_SECONDS", "60"))


class LeaseBusyError(ValueError):
  """A live lease of another run is held on the workdir."""


class Lease:
  """An exclusive lease on an object-store workdir, `<workdir>/.lease`.

  Taking it creates the lease object with the precondition
  `ifGenerationMatch=0` (create only if absent): of two runs that race,
  exactly one succeeds. A lease whose expiry has passed (its holder died or
  hung) or whose holder is a dead process on this host is replaced, again
  under a generation precondition, so two takers of a stale lease cannot
  both win. The holder refreshes it every `LEASE_SECONDS / 3` seconds
  (rewrite with `ifGenerationMatch=<its generation>`); if that fails
  because another run took it (this one was stalled past the expiry), the
  process prints one line and exits with status 2 at once, before it can
  write over the other run. A kill -9 leaves the lease until it expires
  (`LEASE_SECONDS`, 60 by default, or at once for a rerun on the same host).

  The client retries a request whose reply was lost with the same
  precondition; if the first attempt had succeeded, the retry fails (412,
  `FileExistsError`) although the lease is this run's. The lease body
  carries a token unique to its holder, so such a failure re-reads the
  lease and goes on if it holds this run's token (`_write`): neither
  `acquire` nor a refresh ever refuses or stops its own holder.
  """

  def __init__(self, workdir: str, seconds: float = LEASE_SECONDS):
    self.path = join(workdir, LEASE_NAME)
    self.seconds = float(seconds)
    self._fs = _fs(workdir)
    bucket, _, key = self.path[len(scheme(workdir)) + 3:].partition("/")
    self._bucket, self._key = bucket, key
    self._generation: Optional[str] = None
    self._token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _body(self) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "token": self._token,
                       "expires": time.time() + self.seconds}).encode()

  def _write(self, if_generation: str) -> str:
    """Writes the lease under the precondition; returns its generation.

    Raises:
      FileExistsError: the precondition failed and the lease is not this
        run's (a 412 after a retried request whose first attempt succeeded
        finds this run's token, and is success).
    """
    try:
      return self._upload(self._body(), if_generation)
    except FileExistsError:
      body, gen = self._read()
      if body is not None and body.get("token") == self._token:
        return gen
      raise

  def _upload(self, data: bytes, if_generation: str) -> str:
    # A multipart upload (metadata + data), as gcsfs itself sends: the
    # precondition is honoured for it by GCS and by the emulator alike.
    url = f"{self._fs._location}/upload/storage/v1/b/{self._bucket}/o"  # pylint: disable=protected-access
    body = (b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n" +
            json.dumps({"name": self._key}).encode() +
            b"\n--==0==\nContent-Type: application/json\n\n" + data +
            b"\n--==0==--")
    out = self._fs.call(
        "POST", url, uploadType="multipart", ifGenerationMatch=if_generation,
        headers={"Content-Type": 'multipart/related; boundary="==0=="'},
        data=body, json_out=True)
    return str(out["generation"])

  def _read(self) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    try:
      self._fs.invalidate_cache()
      info = self._fs.info(self.path)
      data = self._fs.cat_file(self.path)
    except FileNotFoundError:
      return None, None
    try:
      body = json.loads(data)
    except ValueError:
      body = {}
    return body, str(info.get("generation"))

  def _stale(self, body: dict[str, Any]) -> bool:
    if float(body.get("expires", 0)) < time.time():
      return True
    if body.get("host") == socket.gethostname():
      try:
        os.kill(int(body.get("pid", -1)), 0)
      except ProcessLookupError:
        return True  # Its holder on this host is dead (a kill -9).
      except (OSError, ValueError):
        return False
    return False

  def acquire(self) -> None:
    """Takes the lease; `LeaseBusyError` (one line) if a live one is held."""
    for _ in range(3):
      try:
        self._generation = self._write("0")
        break
      except FileExistsError:  # 412: the lease object exists.
        pass
      body, gen = self._read()
      if body is None:
        continue
      if not self._stale(body):
        left = max(0, float(body.get("expires", 0)) - time.time())
        raise LeaseBusyError(
            f"workdir {dirname(self.path)} is in use by another run (lease "
            f"held by {body.get('host')} pid {body.get('pid')}, refreshed "
            f"within the last {self.seconds:.0f} s, expires in {left:.0f} s "
            "unless refreshed); wait for it to finish or use a new --workdir.")
      try:
        self._generation = self._write(gen)
        break
      except FileExistsError:
        continue  # Another run replaced it first; look again.
    else:
      raise LeaseBusyError(f"workdir {dirname(self.path)} is in use by "
                           "another run (its lease changed while taking it).")
    self._thread = threading.Thread(target=self._refresh, daemon=True)
    self._thread.start()

  def _refresh_once(self) -> bool:
    """Rewrites the lease; False if another run has taken it."""
    try:
      self._generation = self._write(self._generation)
    except FileExistsError:
      return False
    except Exception:  # pylint: disable=broad-except
      pass  # A transient error: retried at the next refresh.
    return True

  def _refresh(self) -> None:
    while not self._stop.wait(self.seconds / 3):
      if not self._refresh_once():
        os.write(2, (f"error: lost the lease on {dirname(self.path)} to "
                     "another run (this one stalled past its expiry); "
                     "stopping without writing more.\n").encode())
        os._exit(2)  # pylint: disable=protected-access

  def release(self) -> None:
    """Stops refreshing and deletes the lease (if still this run's)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._generation is not None:
      try:
        self._fs.call("DELETE", "b/{}/o/{}", self._bucket, self._key,
                      ifGenerationMatch=self._generation)
      except Exception:  # pylint: disable=broad-except
        pass  # Already replaced or gone: expires on its own anyway.
      self._generation = None


# --- Stage decisions made once. ---


def decide_once(fn: Callable[[], bool]) -> bool:
  """Runs `fn` on process 0 only and returns its answer on every process.

  A stage decision ("is this stage done?") read from the workdir by every
  host can differ between hosts (caches, listing lag); a host that skips a
  stage the others run would hang the job in a collective. With one
  process this is `bool(fn())`.

  Args:
    fn: a function of no arguments returning a bool; called on process 0.

  Returns:
    Process 0's answer.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return bool(fn())
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  value = np.int32(bool(fn())) if jax.process_index() == 0 else np.int32(0)
  return bool(multihost_utils.broadcast_one_to_all(value))


def check_hosts_agree(value: Any, what: str) -> None:
  """Refuses to go on unless every process holds the same `value`.

  Each process's SHA-256 of `value` (its dtype, shape and bytes) is
  all-gathered (32 bytes per process) and compared with process 0's, e.g.
  the core-set mask before it is trained on: hosts that computed different
  masks would otherwise train on different examples without a word. With
  one process this does nothing.

  Args:
    value: a host array (e.g. the bool mask `[N]`).
    what: what it is, for the message.

  Raises:
    ValueError: some process holds another value (`check_digests_agree`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return
  import hashlib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  value = np.ascontiguousarray(value)
  h = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
  h.update(value.tobytes())
  digest = np.frombuffer(h.digest(), np.uint8)
  check_digests_agree(
      np.asarray(multihost_utils.process_allgather(digest)), what)


def check_digests_agree(digests: Any, what: str) -> None:
  """Raises one line unless every row of `digests` equals row 0.

  Args:
    digests: uint8 `[P, 32]`, process p's SHA-256 in row p.
    what: what was hashed, for the message.

  Raises:
    ValueError: naming the processes whose digest differs from process 0's.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  digests = np.asarray(digests)
  differ = [p for p in range(digests.shape[0])
            if not np.array_equal(digests[p], digests[0])]
  if differ:
    raise ValueError(
        f"{what} differs between hosts: process(es) {differ} of "
        f"{digests.shape[0]} computed another one than process 0 (SHA-256 "
        f"{bytes(digests[differ[0]]).hex()[:12]} vs "
        f"{bytes(digests[0]).hex()[:12]}); nothing was trained on it. Every "
        "host must read the same data with the same code and versions.")
