"""Preemption at any step: mid-epoch checkpoints, SIGTERM saves, stats cache.

What docs/reliability.md ("Preemption") promises, on the tiny digits config
of tests/test_reliability.py (warm-up: 12 steps per epoch, 3 epochs; core-set
training: 4 steps per epoch, 3 epochs):
  * `train.checkpoint_every_steps` changes nothing in the results;
  * kill -9 after a mid-epoch checkpoint resumes from it (the progress bar
    starts at its step) with every id visited once per epoch, the same mask,
    scores, accuracy and metrics rows as an uninterrupted run;
  * SIGTERM mid-epoch saves a checkpoint at the step it arrives (also with
    `checkpoint_every_steps=0`), exits 143, and the rerun is identical;
  * a relaunch reads the input statistics from the workdir;
  * on 2 processes x 4 devices, SIGTERM to process 1 alone saves the same
    step on both, both exit 143, and the relaunch selects the one-device
    mask;
  * a signal while the process shuts down still exits 143/130;
  * the pod configs checkpoint by steps.
"""

import json
import os
import shutil

import numpy as np
import pytest

from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.data import stats
from mrmc_jax.runner import context
from mrmc_jax.runner import experiment
from mrmc_jax.runner import loop
from tests import multihost
from tests import test_scaleout as scaleout
from tests.test_scaleout import one_device_run  # pylint: disable=unused-import
from tests.test_reliability import config_flag
from tests.test_reliability import metric_epochs
from tests.test_reliability import run_cli
from tests.test_reliability import tiny_config

# End-to-end runs of a minute or more: `make test-slow` (CI runs both).
pytestmark = pytest.mark.slow

WARMUP_STEPS = 12  # per epoch: 1438 examples / 128


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run without mid-epoch checkpoints."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  summary = experiment.train_and_evaluate(tiny_config(), workdir)
  return workdir, summary


def assert_same_results(run, summary, reference):
  ref, ref_summary = reference
  for name in ("mask.npy", "scores.npy"):
    np.testing.assert_array_equal(
        np.load(os.path.join(run, "coreset", name)),
        np.load(os.path.join(ref, "coreset", name)))
  for key in ("test_accuracy", "test_loss", "num_selected"):
    assert summary[key] == ref_summary[key], key
  with np.load(os.path.join(run, "warmup", "artefacts.npz")) as art:
    # Every id recorded exactly once in every warm-up epoch.
    np.testing.assert_array_equal(art["visits"],
                                  np.ones_like(art["visits"]))
  for stage in ("warmup", "train"):
    rows, ref_rows = metric_epochs(run, stage), metric_epochs(ref, stage)
    assert [r["epoch"] for r in rows] == [1, 2, 3], rows
    for key in ("step", "learning_rate", "train_loss", "train_accuracy"):
      assert [r[key] for r in rows] == [r[key] for r in ref_rows], key


def step_checkpoints(run, stage):
  path = os.path.join(run, "checkpoints", stage + loop.STEPS_SUFFIX)
  return sorted(int(s) for s in os.listdir(path) if s.isdigit())


def test_step_checkpoints_do_not_change_results(tmp_path, reference,
                                                monkeypatch):
  saved = []
  save = loop.save_checkpoint

  def counting_save(mngr, step, tree):
    saved.append((os.path.basename(str(mngr.directory)), int(step)))
    save(mngr, step, tree)

  monkeypatch.setattr(loop, "save_checkpoint", counting_save)
  run = str(tmp_path / "run")
  summary = experiment.train_and_evaluate(
      tiny_config(**{"train.checkpoint_every_steps": 5}), run)
  steps = [s for d, s in saved if d == "warmup.steps"]
  assert steps == [5, 10, 17, 22, 29, 34], saved
  assert [s for d, s in saved if d == "train.steps"] == []  # 4 steps/epoch
  assert_same_results(run, summary, reference)
  # Each epoch checkpoint removes the mid-epoch ones it supersedes.
  assert step_checkpoints(run, "warmup") == []


def test_kill_and_sigterm_mid_epoch_resume_identically(tmp_path, reference):
  run = str(tmp_path / "run")
  args = [config_flag(**{"train.checkpoint_every_steps": 3}),
          f"--workdir={run}"]
  # kill -9 after warm-up epoch 2's checkpoint at step 6 (update 18).
  proc = run_cli(args, worker_point="kill:after_checkpoint:warmup.steps:18")
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert step_checkpoints(run, "warmup") == [15, 18]
  assert sorted(os.listdir(os.path.join(run, "checkpoints", "warmup"))) == [
      "1"]
  # Resumed at update 18 (not at epoch 1's 12); SIGTERM after update 27 is
  # taken at the first step that sees the watcher's flag (the next one on
  # an idle machine, a few later on a loaded one): its checkpoint is saved,
  # then exit 143.
  proc = run_cli(args, worker_point="term:after_checkpoint:warmup.steps:27")
  assert proc.returncode == 143, proc.stderr[-3000:]
  assert " 18/36 " in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if "error: " in l]
  assert len(lines) == 1 and "terminated" in lines[0], proc.stderr[-3000:]
  taken = step_checkpoints(run, "warmup")[-1]
  assert 28 <= taken < 36, step_checkpoints(run, "warmup")
  loop.verify_checkpoint(os.path.join(
      run, "checkpoints", "warmup" + loop.STEPS_SUFFIX, str(taken)))
  # Core-set training: kill -9 after update 7 (epoch 2, step 3).
  proc = run_cli(args, worker_point="kill:after_checkpoint:train.steps:7")
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert f" {taken}/36 " in proc.stderr, proc.stderr[-3000:]
  proc = run_cli(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert " 7/12 " in proc.stderr, proc.stderr[-3000:]
  with open(os.path.join(run, "summary.json")) as f:
    summary = json.load(f)
  assert_same_results(run, summary, reference)


def test_sigterm_saves_without_step_checkpoints(tmp_path, reference):
  # checkpoint_every_steps=0: SIGTERM right after warm-up epoch 1's
  # checkpoint is taken at the first step of epoch 2 that sees the
  # watcher's flag (the first one on an idle machine), saved first.
  run = str(tmp_path / "run")
  args = [config_flag(), f"--workdir={run}"]
  proc = run_cli(args, worker_point="term:after_checkpoint:warmup:1")
  assert proc.returncode == 143, proc.stderr[-3000:]
  [taken] = step_checkpoints(run, "warmup")
  assert WARMUP_STEPS < taken < 2 * WARMUP_STEPS, taken
  proc = run_cli(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f" {taken}/36 " in proc.stderr, proc.stderr[-3000:]
  with open(os.path.join(run, "summary.json")) as f:
    summary = json.load(f)
  assert_same_results(run, summary, reference)


def test_relaunch_reads_the_input_statistics(tmp_path, reference,
                                             monkeypatch):
  ref, ref_summary = reference
  config = tiny_config()
  with open(os.path.join(ref, context.STATS_FILE)) as f:
    record = json.load(f)
  data = context.load_data(config)  # The statistics pass.
  np.testing.assert_array_equal(np.float32(record["mean"]), data.mean)
  np.testing.assert_array_equal(np.float32(record["std"]), data.std)
  calls = []
  compute = stats.compute_mean_std
  monkeypatch.setattr(stats, "compute_mean_std",
                      lambda images: calls.append(1) or compute(images))
  # The relaunch loads the data without the statistics pass.
  assert experiment.train_and_evaluate(config, ref) == ref_summary
  assert calls == []
  # Other data never reuse them: another source, or a workdir whose data
  # (data.json) are not those the statistics were kept for.
  assert context.cached_stats(
      tiny_config(**{"dataset.image_size": 16}), ref) is None
  other = str(tmp_path / "other")
  os.makedirs(other)
  shutil.copy(os.path.join(ref, context.STATS_FILE), other)
  with open(os.path.join(ref, "data.json")) as f:
    fingerprint = json.load(f)
  with open(os.path.join(other, "data.json"), "w") as f:
    json.dump({**fingerprint, "num_train": 1}, f)
  assert context.cached_stats(config, other) is None
  got = context.cached_stats(config, ref)
  np.testing.assert_array_equal(got[0], data.mean)


def test_two_processes_resume_mid_epoch_at_the_same_step(tmp_path,
                                                         one_device_run):
  # Two processes x 2 devices, a mid-epoch checkpoint after every step; both
  # are killed before the second batch of warm-up epoch 2 (after update 13
  # was saved). The relaunch resumes both at step 1 of that epoch: each
  # process is fed the rest of its columns of the epoch's layout, and the
  # mask is the one-device run's.
  workdir, record = str(tmp_path / "run"), str(tmp_path / "record")
  flags = [f"--config.{k}={v}" for k, v in
           {**scaleout.JOB, "train.checkpoint_every_steps": 1}.items()]
  codes, out = multihost.launch(workdir, record, "a", flags,
                                "--kill_in_warmup_epoch=1")
  assert codes == [-9, -9], out[0][-3000:] + out[1][-3000:]
  assert step_checkpoints(workdir, "warmup") == [12 + 1]
  codes, out = multihost.launch(workdir, record, "b", flags)
  assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
  scaleout._same_run(  # pylint: disable=protected-access
      workdir, one_device_run, rows_only=True)
  batch = scaleout.JOB["train.batch_size"]
  n = 1438
  order = input_pipeline.epoch_order(n, 0, 1)
  steps = input_pipeline.num_batches(n, batch)
  want = np.full(steps * batch, input_pipeline.PAD_ID)
  want[:n] = order
  want = want.reshape(steps, batch)
  for p in range(2):
    fed = np.load(os.path.join(record, f"process_{p}_b.npz"))
    assert "warmup_0" not in fed
    np.testing.assert_array_equal(
        fed["warmup_1"], want[1:, p * batch // 2:(p + 1) * batch // 2])


def test_negative_checkpoint_every_steps_fails_before_work(tmp_path):
  run = str(tmp_path / "run")
  with pytest.raises(ValueError,
                     match=r"train.checkpoint_every_steps=-1 is not allowed"):
    experiment.train_and_evaluate(
        tiny_config(**{"train.checkpoint_every_steps": -1}), run)
  assert not os.path.exists(run)


@pytest.mark.parametrize("signalled", ["1", "0,1"])
def test_sigterm_to_one_or_all_processes_saves_on_all(tmp_path,
                                                     one_device_run,
                                                     signalled):
  # Two processes x 4 devices; SIGTERM to process 1 only (or to both), in
  # warm-up epoch 2 (a maintenance event on one host, or on all). JAX's
  # preemption notifier tells the other process; both save the same
  # mid-epoch step, both exit 143 (no heartbeat abort), and the relaunch
  # selects the one-device run's mask.
  workdir, record = str(tmp_path / "run"), str(tmp_path / "record")
  flags = [f"--config.{k}={v}" for k, v in scaleout.JOB.items()]
  codes, out = multihost.launch(workdir, record, "a", flags,
                                "--term_in_warmup_epoch=1",
                                f"--term_processes={signalled}",
                                "--batch_seconds=0.2", local_devices=4)
  assert codes == [143, 143], out[0][-3000:] + out[1][-3000:]
  for text in out:
    lines = [l for l in text.splitlines() if "error: " in l]
    assert len(lines) == 1 and "terminated" in lines[0], text[-3000:]
  with open(os.path.join(record, "sigterm_a.json")) as f:
    sent = json.load(f)["time"]
  assert max(multihost.LAST_ENDS) - sent < 60, (multihost.LAST_ENDS, sent)
  [taken] = step_checkpoints(workdir, "warmup")
  assert WARMUP_STEPS + 1 < taken < 2 * WARMUP_STEPS, taken
  loop.verify_checkpoint(os.path.join(
      workdir, "checkpoints", "warmup" + loop.STEPS_SUFFIX, str(taken)))
  print(f"SIGTERM to process(es) {signalled}; to both exits: "
        f"{max(multihost.LAST_ENDS) - sent:.1f} s; saved at update {taken}")
  codes, out = multihost.launch(workdir, record, "b", flags, local_devices=4)
  assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
  assert f" {taken}/36 " in out[0], out[0][-3000:]
  scaleout._same_run(  # pylint: disable=protected-access
      workdir, one_device_run, rows_only=True)


def test_a_signal_while_the_process_ends_is_not_dropped(reference):
  # The job has returned (a rerun of a finished workdir: its summary is
  # read back); SIGTERM or SIGINT while the process shuts down still ends it
  # with 143/130 and one line, nothing written.
  run, _ = reference
  before = {f: os.path.getmtime(os.path.join(run, f))
            for f in ("summary.json", "metrics.jsonl")}
  for point, status in (("term:at_exit", 143), ("int:at_exit", 130)):
    proc = run_cli([config_flag(), f"--workdir={run}"], worker_point=point)
    assert proc.returncode == status, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if "error: " in l]
    assert len(lines) == 1 and lines[0].startswith("error: "), (
        proc.stderr[-3000:])
  assert before == {f: os.path.getmtime(os.path.join(run, f))
                    for f in before}


def test_pod_configs_checkpoint_by_steps():
  from mrmc_jax.configs import imagenet  # pylint: disable=g-import-not-at-top
  from mrmc_jax.configs import imagenet_tpu  # pylint: disable=g-import-not-at-top
  assert imagenet_tpu.get_config().train.checkpoint_every_steps == 100
  assert imagenet.get_config().train.checkpoint_every_steps == 1000
