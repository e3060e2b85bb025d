"""The comparison harness on a tiny digits grid: outputs and resume."""

import csv
import os

import numpy as np
import pytest

from configs import default
from mrmc_jax.data import stats
from mrmc_jax.runner import compare
from mrmc_jax.runner import context


def tiny(methods="full,random,mrmc,el2n,ccs,d2"):
  config = default.get_config()
  config.selection.warmup_epochs = 3
  config.train.epochs = 1
  config.train.batch_size = 128
  config.compare.methods = methods
  config.compare.ratios = "0.5,0.2"
  config.compare.seeds = "0,1"
  return config


@pytest.mark.slow
def test_grid_runs_once_and_resumes(tmp_path, monkeypatch):
  workdir = str(tmp_path / "cmp")
  rows = compare.run_comparison(tiny(), workdir)
  # full once per seed; 5 methods x 2 ratios x 2 seeds.
  assert len(rows) == 2 + 5 * 2 * 2
  for f in ("results.csv", "results.md", "accuracy.png"):
    assert os.path.exists(os.path.join(workdir, f))
  with open(os.path.join(workdir, "results.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(rows)
  md = open(os.path.join(workdir, "results.md")).read()
  assert "| full (all data) |" in md and "| mrmc |" in md
  assert "Selection time per method" in md
  # One warm-up per seed, shared by every method and ratio.
  assert sorted(os.listdir(os.path.join(workdir, "warmup"))) == [
      "seed_0", "seed_1"]
  # The input statistics are kept like main.py's.
  assert os.path.exists(os.path.join(workdir, context.STATS_FILE))
  # Resume: nothing is trained again, and no statistics pass runs.
  def boom(*a, **k):
    raise AssertionError("a finished cell was redone")
  monkeypatch.setattr(compare.stages, "train", boom)
  monkeypatch.setattr(stats, "compute_mean_std", boom)
  again = compare.run_comparison(tiny(), workdir)
  assert again == rows


@pytest.mark.slow
def test_method_spec_overrides_share_the_warmup(tmp_path):
  rows = compare.run_comparison(
      tiny("mrmc,mrmc(loss_source=eval),mrmc(skip_epochs=1;score=observed)"),
      str(tmp_path / "abl"))
  assert {r["method"] for r in rows} == {
      "mrmc", "mrmc(loss_source=eval)", "mrmc(skip_epochs=1;score=observed)"}
  assert all(np.isfinite(r["test_accuracy"]) for r in rows)


@pytest.mark.slow
def test_a_grid_extended_by_margin_and_uncertainty_methods(tmp_path):
  # The margins (AUM) and the softmax scores are recorded only when a
  # method reads them; extending a grid by such methods records them and
  # keeps the finished cells.
  workdir = str(tmp_path / "ext")
  config = tiny("el2n")
  config.compare.seeds = "0"
  config.compare.ratios = "0.5"
  art_path = os.path.join(workdir, "warmup", "seed_0", "warmup",
                          "artefacts.npz")
  first = compare.run_comparison(config, workdir)
  assert "margin" not in np.load(art_path).files
  config.compare.methods = "el2n,aum,ccs(ccs_score=aum_prob),margin,kcenter"
  rows = compare.run_comparison(config, workdir)
  assert rows[0] == first[0]
  assert [r["method"] for r in rows[1:]] == [
      "aum", "ccs(ccs_score=aum_prob)", "margin", "kcenter"]
  assert all(np.isfinite(r["test_accuracy"]) for r in rows)
  art = np.load(art_path)
  # The margin is positive exactly where the prediction is correct.
  np.testing.assert_array_equal(art["margin"] > 0, art["correct"])
  np.testing.assert_array_equal(art["p_margin"] > 0, art["correct"])
  assert art["uncertainty"].shape == (art["loss"].shape[0], 4)


def test_bad_plan_fails_before_work(tmp_path):
  with pytest.raises(ValueError, match="'magic' is not allowed"):
    compare.run_comparison(tiny("random,magic"), str(tmp_path / "x"))
  with pytest.raises(ValueError, match="option 'bogus=1'"):
    compare.run_comparison(tiny("mrmc(bogus=1)"), str(tmp_path / "y"))
  assert not os.path.exists(tmp_path / "x")


def test_a_users_method_from_outside_the_package(tmp_path):
  # tests/plugins/toy_method.py registers `toy`, with its own option; it shares
  # the warm-up with mrmc and is reported like the package's methods.
  config = tiny("mrmc,toy,toy(toy_power=2.0)")
  config.selection.plugins = os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "plugins", "toy_method.py")
  config.compare.seeds = "0"
  workdir = str(tmp_path / "toy")
  rows = compare.run_comparison(config, workdir)
  assert [(r["method"], r["ratio"]) for r in rows] == [
      (m, r) for m in ("mrmc", "toy", "toy(toy_power=2.0)")
      for r in (0.5, 0.2)]
  assert all(np.isfinite(r["test_accuracy"]) for r in rows)
  assert os.listdir(os.path.join(workdir, "warmup")) == ["seed_0"]
  md = open(os.path.join(workdir, "results.md")).read()
  assert "| toy |" in md and "| toy(toy_power=2.0) |" in md
  masks = [np.load(os.path.join(workdir, "cells", d, "ratio_0.5", "seed_0",
                                "coreset", "mask.npy"))
           for d in ("toy", "toy_toy_power=2.0")]
  # Squaring a positive score keeps its order: the same core-set.
  np.testing.assert_array_equal(masks[0], masks[1])
  # Its option is checked before any work, with its declaration's range.
  config.compare.methods = "toy(toy_power=-1)"
  with pytest.raises(ValueError, match="toy_power=-1 is not allowed"):
    compare.run_comparison(config, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")


def test_label_noise_and_cost_reports(tmp_path):
  config = tiny("full,random,el2n")
  config.compare.seeds = "0"
  config.dataset.label_noise = 0.2
  config.dataset.label_noise_seed = 4
  workdir = str(tmp_path / "noisy")
  rows = compare.run_comparison(config, workdir)
  flipped = np.load(os.path.join(workdir, "noise", "flipped.npy"))
  n = rows[0]["num_examples"]
  assert len(flipped) == round(0.2 * n)
  with open(os.path.join(workdir, "results.csv")) as f:
    table = list(csv.DictReader(f))
  for row in table:
    if row["method"] == "full":
      continue
    mask = np.load(os.path.join(
        workdir, "cells", row["method"], f"ratio_{float(row['ratio']):g}",
        "seed_0", "coreset", "mask.npy"))
    kept = int(mask[flipped].sum())
    assert int(row["num_flipped_selected"]) == kept
    assert float(row["flipped_selected"]) == pytest.approx(kept / len(flipped))
    assert float(row["coreset_noise"]) == pytest.approx(kept / mask.sum())
    # Cost: R warm-up epochs only for the method that reads the warm-up.
    r_epochs = 3 if row["method"] == "el2n" else 0
    assert int(row["warmup_epochs"]) == r_epochs
    assert float(row["cost_epochs"]) == pytest.approx(
        r_epochs + int(row["train_steps"]) / int(row["full_steps_per_epoch"]))
    assert float(row["cost_seconds"]) > float(row["train_seconds"])
  full = [r for r in table if r["method"] == "full"][0]
  assert float(full["cost_epochs"]) == pytest.approx(1.0)  # train.epochs=1
  md = open(os.path.join(workdir, "results.md")).read()
  assert f"Label noise: {len(flipped)} flipped" in md
  assert "pays off after" in md and "W + k C <= k F" in md
  assert os.path.exists(os.path.join(workdir, "cost.png"))
  # A different noise seed is another data set: refused in this workdir.
  config.dataset.label_noise_seed = 5
  with pytest.raises(Exception, match="label_noise_seed"):
    compare.run_comparison(config, workdir)


def test_bad_label_noise_fails_before_work(tmp_path):
  config = tiny("random")
  config.dataset.label_noise = 1.0
  with pytest.raises(ValueError, match="label_noise=1.0 is not allowed"):
    compare.run_comparison(config, str(tmp_path / "x"))


def test_a_smaller_warmup_model_selects_for_the_configured_one(tmp_path):
  config = tiny("moderate")
  config.compare.seeds = "0"
  config.compare.ratios = "0.5"
  config.selection.warmup_model = "mlp_small"
  workdir = str(tmp_path / "proxy")
  rows = compare.run_comparison(config, workdir)
  assert np.isfinite(rows[0]["test_accuracy"])
  art = np.load(os.path.join(workdir, "warmup", "seed_0", "warmup",
                             "artefacts.npz"))
  assert art["features"].shape[1] == 128  # the proxy's penultimate layer
  config.selection.warmup_model = "tiny_giant"
  with pytest.raises(ValueError, match="warmup_model='tiny_giant' is not"):
    compare.run_comparison(config, str(tmp_path / "bad"))


def test_label_noise_refuses_streamed_input_before_loading(tmp_path):
  config = tiny("random")
  config.dataset.label_noise = 0.2
  config.dataset.input = "stream"
  # The load stage refuses it before reading any data.
  with pytest.raises(ValueError, match="needs dataset.input=memory"):
    compare.stages.load(config, str(tmp_path / "s"))


def test_load_stage_noises_a_validation_split_and_stores_the_ids(tmp_path):
  config = tiny("random")
  config.dataset.validation_fraction = 0.2
  config.dataset.label_noise = 0.3
  workdir = str(tmp_path / "v")
  ctx, _ = compare.stages.load(config, workdir)
  # Nothing is written before the workdir is claimed; then the ids are kept.
  assert not os.path.exists(os.path.join(workdir, "noise"))
  compare.stages.keep_noise(ctx, workdir)
  clean = compare.stages.context_lib.make_context(config, workdir).data
  for name, noisy_split, clean_split in (
      ("flipped.npy", ctx.data.train, clean.train),
      ("flipped_validation.npy", ctx.data.test, clean.test)):
    ids = np.load(os.path.join(workdir, "noise", name))
    assert len(ids) == round(0.3 * clean_split.num_examples)
    np.testing.assert_array_equal(
        np.flatnonzero(noisy_split.labels != clean_split.labels), ids)
  np.testing.assert_array_equal(compare.stages.flipped_ids(workdir),
                                np.load(os.path.join(workdir, "noise",
                                                     "flipped.npy")))
