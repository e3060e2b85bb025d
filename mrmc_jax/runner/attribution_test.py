"""End-to-end tests of the attribution runner on digits."""

import json
import os

import numpy as np
import pytest

from configs import attribution as attribution_config
from mrmc_jax.runner import attribution




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
