"""Tests of the storage layer on local paths, URL checks and `decide_once`.

Object stores are tested against a GCS emulator in tests/test_object_store.py.
"""

import hashlib
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mrmc_jax.runner import storage
from mrmc_jax.runner import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_scheme_and_paths():
  assert storage.scheme("gs://b/r") == "gs"
  assert storage.scheme("/data/x") is None and storage.scheme("runs/a") is None
  assert storage.is_local("runs/a") and not storage.is_local("gs://b")
  assert storage.abspath("gs://b/r/") == "gs://b/r"
  assert storage.abspath("runs/a") == os.path.abspath("runs/a")
  assert storage.dirname("gs://b/r/checkpoints") == "gs://b/r"
  assert storage.join("gs://b/r", "x", "y.json") == "gs://b/r/x/y.json"


@pytest.mark.parametrize("path,match", [
    ("s3://b/r", "s3:// is not supported"),
    ("memory://r", "memory:// is not supported"),
    ("gs:/b/r", "looks like a URL"),
    ("gs:b/r", "looks like a URL"),
    ("gs://", "names no bucket"),
])
def test_check_url_refuses(path, match):
  with pytest.raises(ValueError, match=match):
    storage.check_url(path)


def test_check_url_accepts_local_paths(tmp_path):
  storage.check_url(str(tmp_path / "run"))
  storage.check_url("runs/a:b")  # A colon later in a local name is fine.
  assert not (tmp_path / "run").exists()


def test_local_atomic_write_append_and_walk(tmp_path):
  root = str(tmp_path / "w")
  wd.write_json(storage.join(root, "a", "x.json"), {"k": 1})
  assert wd.read_json(storage.join(root, "a", "x.json")) == {"k": 1}
  assert oct(os.stat(storage.join(root, "a", "x.json")).st_mode & 0o777) == (
      oct(storage.FILE_MODE))
  storage.append_durable(storage.join(root, "m.jsonl"), b"1\n")
  storage.append_durable(storage.join(root, "m.jsonl"), b"2\n")
  assert storage.read_bytes(storage.join(root, "m.jsonl")) == b"1\n2\n"
  assert sorted(os.path.relpath(p, root) for p in storage.walk_files(root)
                ) == ["a/x.json", "m.jsonl"]
  assert sorted(storage.listdir(root)) == ["a", "m.jsonl"]

  def torn(f):
    f.write(b"half")
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    storage.write_atomic(storage.join(root, "a", "x.json"), torn)
  assert wd.read_json(storage.join(root, "a", "x.json")) == {"k": 1}
  assert sorted(os.listdir(os.path.join(root, "a"))) == ["x.json"]
  storage.rmtree(storage.join(root, "a"))
  assert not storage.exists(storage.join(root, "a"))
  storage.rmtree(storage.join(root, "a"))  # Missing: fine.


def test_file_sha256_streams_past_a_chunk(tmp_path, monkeypatch):
  path = str(tmp_path / "big.bin")
  data = np.random.default_rng(0).bytes((1 << 20) * 2 + 7)
  open(path, "wb").write(data)
  # Streamed: the whole file is never read at once.
  monkeypatch.setattr(storage, "read_bytes", None)
  assert wd.file_sha256(path) == hashlib.sha256(data).hexdigest()
  with pytest.raises(FileNotFoundError):
    wd.file_sha256(str(tmp_path / "missing.bin"))


def test_decide_once_single_process():
  assert storage.decide_once(lambda: True) is True
  assert storage.decide_once(lambda: 0) is False


_WORKER = textwrap.dedent("""
    import sys
    import jax
    jax.distributed.initialize(sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]))
    from mrmc_jax.runner import storage
    # Each process sees a different answer; all get process 0's.
    a = storage.decide_once(lambda: jax.process_index() == 0)
    b = storage.decide_once(lambda: jax.process_index() == 1)
    print("decided", a, b, flush=True)
""")


def test_decide_once_broadcasts_process_0s_answer():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  procs = [subprocess.Popen(
      ["timeout", "-k", "5", "120", sys.executable, "-c", _WORKER,
       f"127.0.0.1:{port}", str(i)], env=env, cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=150)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  for out in outs:
    assert "decided True False" in out, out


def test_hosts_that_disagree_are_one_line():
  digests = np.zeros((4, 32), np.uint8)
  storage.check_digests_agree(digests, "the core-set mask")  # All agree.
  digests[2, 5] = 1
  with pytest.raises(ValueError, match=(
      r"the core-set mask differs between hosts: process\(es\) \[2\] of 4 "
      r"computed another one than process 0")) as e:
    storage.check_digests_agree(digests, "the core-set mask")
  assert "\n" not in str(e.value)
  # One process: nothing to compare, nothing gathered.
  storage.check_hosts_agree(np.ones(7, bool), "the core-set mask")
