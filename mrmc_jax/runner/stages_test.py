"""Tests for stages.py: content hashes and the summary done-check."""

import json
import os
import tempfile

import numpy as np
import pytest

from mrmc_jax.runner import stages
from mrmc_jax.runner import workdir as wd


def test_array_hash_is_the_written_files():
  for a in (np.arange(5, dtype=np.int64), np.array([True, False]),
            np.zeros(3, np.float32)):
    buf_hash = stages.array_sha256(a)
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "a.npy")
      wd.write_npy(path, a)
      assert wd.file_sha256(path) == buf_hash


def test_summary_round_trip_damage_and_other_stamp(tmp_path):
  path = str(tmp_path / "summary.json")
  assert stages.read_summary(path, "s1") is None
  written = stages.write_summary(path, {"test_accuracy": 0.5, "stamp": "s1"})
  assert stages.read_summary(path, "s1") == written
  with pytest.raises(wd.ConfigMismatchError):
    stages.read_summary(path, "s2")
  # A changed digit no longer matches the content hash: finished again.
  stored = json.load(open(path))
  stored["test_accuracy"] = 0.6
  open(path, "w").write(json.dumps(stored))
  assert stages.read_summary(path, "s1") is None
  open(path, "w").write("{")
  assert stages.read_summary(path, "s1") is None


def test_decide_on_one_process():
  assert stages.decide(True) is True and stages.decide(False) is False


def test_run_stage_reads_verified_outputs_and_recomputes_damaged_ones(
    caplog):
  calls = []

  def stage(read):
    return stages.Stage("s", "stamp", ("out",), read=read,
                        run=lambda: calls.append("run") or "computed",
                        redo="computing it again")

  assert stages.run_stage(stage(lambda: "stored")) == "stored"
  assert stages.run_stage(stage(lambda: None)) == "computed"
  assert calls == ["run"]

  def damaged():
    raise wd.CorruptFileError("out is damaged")

  caplog.clear()
  assert stages.run_stage(stage(damaged)) == "computed"
  warned = [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING"]
  assert warned == ["out is damaged; computing it again."]

  def other():
    raise wd.ConfigMismatchError("out was computed from another config")

  with pytest.raises(wd.ConfigMismatchError):
    stages.run_stage(stage(other))
  assert calls == ["run", "run"]


def test_checkpoints_of_another_stamp_go_with_their_step_checkpoints(
    tmp_path, caplog):
  # A kill mid-epoch leaves step checkpoints that no epoch checkpoint
  # supersedes; trained on another core-set, they go too (they were kept,
  # and the retry from scratch resumed from them and was refused again).
  ckpt = str(tmp_path / "checkpoints" / "train")
  for d in (ckpt, ckpt + stages.loop.STEPS_SUFFIX):
    os.makedirs(os.path.join(d, "4"))
  calls = []

  def run():
    calls.append(1)
    if os.path.exists(ckpt) or os.path.exists(ckpt + stages.loop.STEPS_SUFFIX):
      raise wd.ConfigMismatchError(f"{ckpt} was computed from another config")
    return "trained"

  assert stages.run_fresh_on_mismatch(run, ckpt, "the core-set") == "trained"
  assert len(calls) == 2
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "the core-set again from scratch" in (
      warnings[0])


def test_a_rows_plot_hook_draws_its_curves(tmp_path, monkeypatch):
  # The runner asks the row (`Method.curves`), never the method's name.
  import types  # pylint: disable=g-import-not-at-top
  from mrmc_jax import methods  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import common  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import registry  # pylint: disable=g-import-not-at-top
  seen = []

  def curves(art, opts):
    seen.append((art["x"], opts.seed))
    return np.ones((6, 3)), np.full((6, 3), 0.5), np.arange(3) + 1

  labels = np.array([0, 0, 0, 1, 1, 1])
  mask = np.array([True, False, True, False, True, False])
  for name, hook in (("curvy", curves), ("plain", None)):
    row = common.Method(name, frozenset(), common.COMMON, None, "x",
                        curves=hook)
    monkeypatch.setitem(registry._BY_NAME, name, row)
    ctx = types.SimpleNamespace(
        workdir=str(tmp_path / name), data=types.SimpleNamespace(
            train=types.SimpleNamespace(labels=labels), num_classes=2))
    stages._plot_selection(ctx, name, 0.5, np.arange(6.0), mask, {"x": 1},
                           methods.SelectionOptions(seed=4))
  assert seen == [(1, 4)]
  assert os.path.exists(tmp_path / "curvy" / "plots" / "trajectories.png")
  assert sorted(os.listdir(tmp_path / "plain" / "plots")) == [
      "score_histogram.png", "selected_per_class.png"]
