"""The runner with `dataset.input="stream"` on a tiny ArrayRecord tfds set.

On one process the stream feeds the very batches of the in-memory path, so
the warm-up trajectory, the mask and the test accuracy are identical. On two
processes (jax.distributed on CPU, every process under `timeout`), killed
with SIGKILL in the middle of a warm-up epoch and relaunched, every id is
visited once per epoch and the mask is the one-process mask.
"""

import collections
import functools
import json
import os
import shutil
import signal

import numpy as np
import pytest

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax.data import fingerprints
from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.data import stream
from mrmc_jax.data import stream_test as streaming_test
from mrmc_jax.runner import context
from mrmc_jax.runner import experiment
from mrmc_jax.runner import workdir as wd
import multihost  # pylint: disable=g-bad-import-order

N = streaming_test.N_TRAIN
JOB = {"dataset.name": "tfds:digits32", "model.name": "mlp", "train.augment": True,
       "selection.warmup_epochs": 3, "train.epochs": 1,
       "train.batch_size": 32, "train.eval_batch_size": 32}
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _config(**overrides):
  return base.set_fields(default.get_config(), {**JOB, **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  streaming_test.write_digits32(path)
  return str(path)


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("memory") / "run")
  summary = experiment.train_and_evaluate(
      _config(**{"dataset.data_dir": data_dir}), workdir)
  return workdir, summary


def _load(workdir):
  with np.load(os.path.join(workdir, "warmup", "artefacts.npz")) as art:
    art = dict(art)
  return art, np.load(os.path.join(workdir, "coreset", "mask.npy"))


def test_stream_equals_memory(tmp_path, data_dir, memory_run):
  workdir = str(tmp_path / "stream")
  summary = experiment.train_and_evaluate(
      _config(**{"dataset.data_dir": data_dir, "dataset.input": "stream"}),
      workdir)
  art, mask = _load(workdir)
  want_art, want_mask = _load(memory_run[0])
  np.testing.assert_array_equal(mask, want_mask)
  np.testing.assert_array_equal(art["visits"], np.ones((N, 3), np.int32))
  for key in ("loss", "visits"):
    np.testing.assert_array_equal(art[key], want_art[key], err_msg=key)
  assert summary["test_accuracy"] == memory_run[1]["test_accuracy"]
  assert summary["num_selected"] == memory_run[1]["num_selected"]


def _stream_files(data_dir):
  data = stream.open_dataset("digits32", data_dir)
  return [*data.train.files, *data.test.files]


def test_relaunch_checks_the_files_by_metadata_and_a_sample(
    tmp_path, data_dir, monkeypatch):
  data_dir = shutil.copytree(data_dir, tmp_path / "tfds",
                             copy_function=shutil.copy2)
  config = _config(**{"dataset.data_dir": str(data_dir),
                      "dataset.input": "stream", "train.augment": False,
                      "selection.warmup_epochs": 2})
  workdir = str(tmp_path / "run")
  summary = experiment.train_and_evaluate(config, workdir)
  kept = json.load(open(os.path.join(workdir, "data_files.json")))["files"]
  assert [(r["split"], r["records"]) for r in kept] == [
      ("train", N), ("test", streaming_test.N_TEST)]
  data = json.load(open(os.path.join(workdir, "data.json")))
  assert [r["sha256"] for r in data["train_files"] + data["test_files"]] == [
      r["sha256"] for r in kept]
  assert np.load(os.path.join(workdir, "data_labels.npz"))["train"].shape == (
      N,)
  calls = collections.Counter()
  for module, name in ((fingerprints, "_hash_file"),
                       (fingerprints, "_block_digest"), (stream, "scan")):
    real = getattr(module, name)
    monkeypatch.setattr(module, name, functools.partial(
        lambda real, name, *a, **k: calls.update([name]) or real(*a, **k),
        real, name))
  # A relaunch: no file hashed whole, one sampled block of each (tiny)
  # file, no record read for statistics or labels.
  assert experiment.train_and_evaluate(config, workdir) == summary
  assert calls == {"_block_digest": 2}
  # A full re-hash is a launch option, not part of the run's identity.
  calls.clear()
  config.dataset.rehash_files = True
  assert experiment.train_and_evaluate(config, workdir) == summary
  assert calls == {"_hash_file": 2}
  # Kept labels that are not those of data.json are not used.
  path = os.path.join(workdir, context.LABELS_FILE)
  good = dict(np.load(path))
  assert set(context.cached_labels(config, workdir)) == {"train", "test"}
  np.savez(path, train=good["train"][::-1], test=good["test"])
  assert context.cached_labels(config, workdir) is None
  np.savez(path, **good)
  # Test images changed under kept size and modification time: the sampled
  # block differs, the file is hashed again, the rerun refused.
  config.dataset.rehash_files = False
  images, labels = streaming_test._digits32()  # pylint: disable=protected-access
  images = images.copy()
  images[N + 5, 9, 9, 0] ^= 1
  other = tmp_path / "other"
  stream.write_arrays("digits32", other,
                      {"train": (images[:N], labels[:N]),
                       "test": (images[N:], labels[N:])},
                      image_shape=(32, 32, 1), num_classes=10)
  name = os.path.basename(_stream_files(data_dir)[1])
  path = data_dir / "digits32" / "1.0.0" / name
  st = os.stat(path)
  new = (other / "digits32" / "1.0.0" / name).read_bytes()
  assert len(new) == st.st_size and new != path.read_bytes()
  path.write_bytes(new)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  with pytest.raises(wd.ConfigMismatchError, match="test_files"):
    experiment.train_and_evaluate(config, workdir)


@pytest.mark.parametrize("overrides,match", [
    ({"dataset.input": "disk"}, r"dataset.input='disk' is not allowed"),
    ({"dataset.input": "stream", "dataset.data_dir": "gs://b/tfds"},
     r"dataset.data_dir='gs://b/tfds'.*mount the bucket"),
    ({"dataset.input": "stream", "dataset.name": "digits"},
     r"dataset.input='stream' is not allowed for dataset.name='digits'"),
])
def test_bad_input_fails_before_work(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    experiment.train_and_evaluate(_config(**overrides), str(tmp_path / "b"))
  assert not os.path.exists(tmp_path / "b")


def _launch(workdir, record, tag, data_dir, *worker_flags):
  return multihost.launch(
      workdir, record, tag,
      [f"--config.{k}={v}" for k, v in JOB.items()] +
      [f"--config.dataset.data_dir={data_dir}", "--config.dataset.input=stream"],
      *worker_flags)


@pytest.mark.slow
def test_two_processes_killed_mid_warmup_resume_to_the_one_process_mask(
    tmp_path, data_dir, memory_run):
  workdir, record = str(tmp_path / "run"), str(tmp_path / "record")
  codes, out = _launch(workdir, record, "a", data_dir,
                       "--kill_in_warmup_epoch=1")
  assert codes == [-signal.SIGKILL] * 2, out[0][-3000:] + out[1][-3000:]
  assert not os.path.exists(os.path.join(workdir, "coreset", "mask.npy"))
  codes, out = _launch(workdir, record, "b", data_dir)
  assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]

  # Each process kept its own rows of the warm-up (no artefacts file).
  assert not os.path.exists(os.path.join(workdir, "warmup", "artefacts.npz"))
  _, want_mask = _load(memory_run[0])
  mask = np.load(os.path.join(workdir, "coreset", "mask.npy"))
  np.testing.assert_array_equal(mask, want_mask)
  np.testing.assert_allclose(
      np.load(os.path.join(workdir, "coreset", "scores.npy")),
      np.load(os.path.join(memory_run[0], "coreset", "scores.npy")), **TOL)

  # The relaunch restarted epoch 1 from the checkpoint of epoch 0: in each
  # epoch it ran, the two processes together fed every id exactly once,
  # each its own half of every global batch, in the order of (seed, epoch).
  fed = [dict(np.load(os.path.join(record, f"process_{p}_b.npz")))
         for p in range(2)]
  assert sorted(k for k in fed[0] if k.startswith("warmup")) == [
      "warmup_1", "warmup_2"]
  batch = JOB["train.batch_size"]
  for epoch in (1, 2):
    both = np.concatenate([fed[0][f"warmup_{epoch}"],
                           fed[1][f"warmup_{epoch}"]], axis=1)
    steps = input_pipeline.num_batches(N, batch)
    want = np.full(steps * batch, input_pipeline.PAD_ID)
    want[:N] = input_pipeline.epoch_order(N, 0, epoch)
    np.testing.assert_array_equal(both, want.reshape(steps, batch))
  # Core-set epoch: the selected ids, each once.
  both = np.concatenate([fed[0]["train_0"], fed[1]["train_0"]], axis=1)
  np.testing.assert_array_equal(np.sort(both[both >= 0]),
                                np.flatnonzero(mask))
