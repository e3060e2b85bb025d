"""End-to-end tests of the attribution runner on digits."""

import json
import os

import numpy as np
import pytest

from mrmc_jax.configs import attribution as attribution_config
from mrmc_jax.runner import attribution
from mrmc_jax.runner import loop
from mrmc_jax.runner import workdir as wd




@pytest.mark.slow
def test_digits_end_to_end_writes_report_and_resumes(tmp_path, monkeypatch):
  # Random core-sets need no warm-up (experiment's tests cover it); MRMC
  # scores of the probes still come from this run's trajectories.
  config = attribution_config.get_config(
      "dataset.name='digits',attribution.num_probes=6,attribution.epochs=2,"
      "attribution.ratios='0.5',attribution.method='random',"
      "train.batch_size=128")
  workdir = str(tmp_path / "attr")
  report = attribution.run_attribution(config, workdir)
  for name in ("full", "coreset_0.5", "full_order1"):
    for f in (f"matrices/{name}.npy", f"heatmaps/{name}.png",
              f"trajectories/{name}.npy", f"summaries/{name}.json"):
      assert os.path.exists(os.path.join(workdir, f)), f
    assert np.load(os.path.join(workdir, f"matrices/{name}.npy")).shape == (
        6, 6)
    # Every probe was trained on once per epoch in every setting.
    traj = np.load(os.path.join(workdir, f"trajectories/{name}.npy"))
    assert np.isfinite(traj).all() and traj.shape == (6, 2)
    assert not os.path.exists(os.path.join(workdir, "checkpoints", name))
  assert os.path.exists(os.path.join(workdir, "heatmaps", "all.png"))
  with open(os.path.join(workdir, "report.json")) as f:
    stored = json.load(f)
  assert stored["stability_error"].keys() == {"coreset_0.5"}
  assert stored["symmetry_error"].keys() == {"full", "coreset_0.5",
                                             "full_order1"}
  # The reference run differs from `full` only in the data order.
  assert stored["order_noise_floor"].keys() == {"full_order1"}
  assert 0 < stored["order_noise_floor"]["full_order1"]["all_entries"] < 2
  assert stored["side_by_side"][0]["paper"] == 0.26
  assert 0 <= stored["stability_error"]["coreset_0.5"]["all_entries"] < 2
  for k in ("mrmc_score_vs_contribution", "self_attribution_vs_contribution",
            "received_vs_contribution"):
    assert k in stored["spearman"]["full"]
  assert "stability_error" in stored["formulas"]
  # The probes lie in the core-set.
  mask = np.load(os.path.join(workdir, "coresets/ratio_0.5/coreset/mask.npy"))
  assert mask[stored["probe_ids"]].all()
  # Resume: finished settings are read back, not trained again.
  def boom(*a, **k):
    raise AssertionError("a finished setting was redone")
  monkeypatch.setattr(attribution, "make_attributed_train_step", boom)
  again = attribution.run_attribution(config, workdir)
  assert again["stability_error"] == report["stability_error"]


def test_bad_config_fails_before_work(tmp_path):
  config = attribution_config.get_config("dataset.name='digits'")
  config.attribution.ratios = "0.5,1.5"
  with pytest.raises(ValueError, match="attribution.ratios entry"):
    attribution.run_attribution(config, str(tmp_path / "x"))
  config = attribution_config.get_config(
      "dataset.name='digits',train.optimizer='adam'")
  with pytest.raises(ValueError, match="use sgd"):
    attribution.run_attribution(config, str(tmp_path / "y"))
  assert not os.path.exists(tmp_path / "x")
  assert not os.path.exists(tmp_path / "y")


def _small_config(**fields):
  arg = ("dataset.name='digits',attribution.num_probes=4,"
         "attribution.epochs=2,attribution.ratios='0.5',"
         "attribution.method='random',attribution.reference_runs=0,"
         "train.batch_size=256")
  return attribution_config.get_config(
      ",".join([arg] + [f"{k}={v!r}" for k, v in fields.items()]))


def _outputs(workdir):
  return {f"{k}/{n}.npy": np.load(os.path.join(workdir, k, f"{n}.npy"))
          for k in ("matrices", "trajectories") for n in ("full",
                                                          "coreset_0.5")}


def test_setting_outputs_are_verified_when_read(tmp_path):
  workdir = str(tmp_path)
  losses = np.arange(6, dtype=np.float32).reshape(3, 2)
  matrix = np.eye(3, dtype=np.float32)
  assert attribution.read_setting(workdir, "full", "s1") is None
  attribution.write_setting(workdir, "full", "s1", losses, matrix,
                            {"steps": 4})
  got = attribution.read_setting(workdir, "full", "s1")
  assert got["summary"] == {"steps": 4}
  np.testing.assert_array_equal(got["matrix"], matrix)
  np.testing.assert_array_equal(got["losses"], losses)
  with pytest.raises(wd.ConfigMismatchError, match="summaries/full.json"):
    attribution.read_setting(workdir, "full", "s2")
  for damaged in ("trajectories", "matrices"):
    path = os.path.join(workdir, damaged, "full.npy")
    np.save(path, np.zeros(1))
    with pytest.raises(wd.CorruptFileError,
                       match=f"{path} does not match its SHA-256"):
      attribution.read_setting(workdir, "full", "s1")
    attribution.write_setting(workdir, "full", "s1", losses, matrix, {})
  # A summary without the record (an older version's) is not trusted.
  path = os.path.join(workdir, "summaries", "full.json")
  with open(path, "w") as f:
    json.dump({"steps": 4}, f)
  with pytest.raises(wd.CorruptFileError,
                     match="full.npy has no SHA-256 in full.json"):
    attribution.read_setting(workdir, "full", "s1")


@pytest.mark.slow
def test_damaged_setting_output_is_trained_again_with_one_warning(
    tmp_path, caplog):
  config = _small_config()
  workdir = str(tmp_path / "attr")
  attribution.run_attribution(config, workdir)
  before = _outputs(workdir)
  path = os.path.join(workdir, "matrices", "coreset_0.5.npy")
  with open(path, "r+b") as f:  # One flipped bit in the data.
    f.seek(-1, os.SEEK_END)
    byte = f.read(1)
    f.seek(-1, os.SEEK_END)
    f.write(bytes([byte[0] ^ 1]))
  caplog.clear()
  report = attribution.run_attribution(config, workdir)
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING"]
  assert len(warnings) == 1 and path in warnings[0], warnings
  assert "training setting coreset_0.5 again" in warnings[0]
  after = _outputs(workdir)
  for k, v in before.items():  # Deterministic: the same bytes again.
    np.testing.assert_array_equal(after[k], v, err_msg=k)
  assert report["settings"]["coreset_0.5"]["num_examples"] > 0
  caplog.clear()
  attribution.run_attribution(config, workdir)  # Intact: no warning.
  assert not [r for r in caplog.records if r.levelname == "WARNING"]


class _Killed(BaseException):
  """Stands for SIGKILL: nothing after it runs."""


@pytest.mark.slow
def test_killed_setting_resumes_from_its_step_checkpoint(tmp_path,
                                                         monkeypatch):
  # digits: 1,437 examples / 256 = 6 steps per full-data epoch.
  config = _small_config(**{"train.checkpoint_every_steps": 2,
                            "train.checkpoint_every_epochs": 5})
  ref = str(tmp_path / "ref")
  attribution.run_attribution(config, ref)
  run = str(tmp_path / "run")
  save = loop.save_checkpoint
  saved = []

  def killing_save(mngr, step, tree):
    save(mngr, step, tree)
    where = os.path.basename(str(mngr.directory))
    saved.append((where, step))
    if (where, step) == ("full" + loop.STEPS_SUFFIX, 8):
      raise _Killed()  # Epoch 2, step 2 of the full-data setting.

  monkeypatch.setattr(loop, "save_checkpoint", killing_save)
  with pytest.raises(_Killed):
    attribution.run_attribution(config, run)
  # Step checkpoints only: epoch checkpoints every 5 epochs.
  assert saved == [("full.steps", 2), ("full.steps", 4), ("full.steps", 8)]
  monkeypatch.setattr(loop, "save_checkpoint", save)
  starts = []
  resume_step = loop.resume_step

  def recording(tree):
    starts.append((int(np.asarray(tree["epoch_step"])[0]), resume_step(tree)))
    return starts[-1][1]

  monkeypatch.setattr(loop, "resume_step", recording)
  attribution.run_attribution(config, run)
  assert starts[0] == (1, 2), starts  # Resumed at epoch 2, step 2.
  got, want = _outputs(run), _outputs(ref)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  assert not os.path.exists(os.path.join(run, "checkpoints", "full.steps"))
