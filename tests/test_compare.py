"""The comparison harness on a tiny digits grid: outputs and resume."""

import csv
import os

import numpy as np
import pytest

from mrmc_jax.configs import default
from mrmc_jax.data import stats
from mrmc_jax.methods import boundary
from mrmc_jax.runner import cli
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
  config.compare.methods = "el2n,aum,ccs(difficulty=aum_prob),margin,kcenter"
  rows = compare.run_comparison(config, workdir)
  assert rows[0] == first[0]
  assert [r["method"] for r in rows[1:]] == [
      "aum", "ccs(difficulty=aum_prob)", "margin", "kcenter"]
  assert all(np.isfinite(r["test_accuracy"]) for r in rows)
  art = np.load(art_path)
  # The margin is positive exactly where the prediction is correct.
  np.testing.assert_array_equal(art["margin"] > 0, art["correct"])
  np.testing.assert_array_equal(art["p_margin"] > 0, art["correct"])
  assert art["uncertainty"].shape == (art["loss"].shape[0], 4)


@pytest.mark.slow
def test_boundary_records_its_distances_with_their_settings(tmp_path):
  workdir = str(tmp_path / "bnd")
  config = tiny("boundary,boundary(mode=nearest)")
  config.compare.seeds = "0"
  config.compare.ratios = "0.5"
  art_path = os.path.join(workdir, "warmup", "seed_0", "warmup",
                          "artefacts.npz")
  rows = compare.run_comparison(config, workdir)
  assert len(rows) == 2
  assert all(np.isfinite(r["test_accuracy"]) for r in rows)
  art = np.load(art_path)
  d = art["boundary"]
  assert d.shape == (art["loss"].shape[0],)
  np.testing.assert_array_equal(d, np.round(d))
  assert d.min() >= 0 and d.max() <= boundary.MAX_STEPS
  np.testing.assert_array_equal(art["boundary_settings"],
                                boundary.settings())


def test_bad_plan_fails_before_work(tmp_path):
  with pytest.raises(ValueError, match="'magic' is not allowed"):
    compare.run_comparison(tiny("random,magic"), str(tmp_path / "x"))
  with pytest.raises(ValueError, match="option 'bogus=1'"):
    compare.run_comparison(tiny("mrmc(bogus=1)"), str(tmp_path / "y"))
  assert not os.path.exists(tmp_path / "x")


@pytest.mark.slow
def test_a_users_method_from_outside_the_package(tmp_path):
  # tests/plugins/toy_method.py registers `toy`, with its own option; it shares
  # the warm-up with mrmc and is reported like the package's methods.
  config = tiny("mrmc,toy,toy(power=2.0)")
  config.selection.plugins = os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "plugins", "toy_method.py")
  config.compare.seeds = "0"
  workdir = str(tmp_path / "toy")
  rows = compare.run_comparison(config, workdir)
  assert [(r["method"], r["ratio"]) for r in rows] == [
      (m, r) for m in ("mrmc", "toy", "toy(power=2.0)")
      for r in (0.5, 0.2)]
  assert all(np.isfinite(r["test_accuracy"]) for r in rows)
  assert os.listdir(os.path.join(workdir, "warmup")) == ["seed_0"]
  md = open(os.path.join(workdir, "results.md")).read()
  assert "| toy |" in md and "| toy(power=2.0) |" in md
  masks = [np.load(os.path.join(workdir, "cells", d, "ratio_0.5", "seed_0",
                                "coreset", "mask.npy"))
           for d in ("toy", "toy_power=2.0")]
  # Squaring a positive score keeps its order: the same core-set.
  np.testing.assert_array_equal(masks[0], masks[1])
  # Its option is checked before any work, with its declaration's range.
  config.compare.methods = "toy(power=-1)"
  with pytest.raises(ValueError, match="power=-1 is not allowed"):
    compare.run_comparison(config, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize("method,match", [
    ("short_mask", "scores has shape (1338,), not (1438,)"),
    ("empty_mask", "selected 0 of 1438 examples, not 431"),
    ("wrong_count", "selected 434 of 1438 examples, not 431")])
def test_a_plugin_that_breaks_the_contract_is_one_line(tmp_path, capsys,
                                                       method, match):
  config = tiny(method)
  config.selection.plugins = os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "plugins",
      "broken_methods.py")
  config.compare.ratios = "0.3"
  config.compare.seeds = "0"
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(compare.run_comparison, config, str(tmp_path / "w"))
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert e.value.code == cli.USAGE_ERROR
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert f"method {method!r} broke the selection contract" in lines[0]
  assert match in lines[0], lines[0]


def test_a_finished_cells_damaged_mask_is_recomputed(tmp_path, caplog):
  config = tiny("random,mrmc")
  config.compare.ratios = "0.3"
  config.compare.seeds = "0"
  workdir = str(tmp_path / "cmp")
  rows = compare.run_comparison(config, workdir)
  path = os.path.join(workdir, "cells", "mrmc", "ratio_0.3", "seed_0",
                      "coreset", "mask.npy")
  before = open(path, "rb").read()
  data = bytearray(before)
  data[-1] ^= 1
  open(path, "wb").write(bytes(data))
  caplog.clear()
  again = compare.run_comparison(config, workdir)
  warned = [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING"]
  assert len(warned) == 1 and path in warned[0], warned
  assert again == rows
  assert open(path, "rb").read() == before


@pytest.mark.slow
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
  assert "Flipped share per class label" in md and "Ratio 0.2:" in md
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


def test_load_stage_applies_class_conditional_noise(tmp_path):
  config = tiny("random")
  config.dataset.label_noise = 0.25
  config.dataset.label_noise_kind = "pairs:mnist"  # digits: 1-7 3-8 4-9 5-6
  ctx, data = compare.stages.load(config, str(tmp_path / "p"))
  clean = compare.stages.context_lib.make_context(
      config, str(tmp_path / "p")).data.train.labels
  ids = ctx.flipped["flipped.npy"]
  moves = set(zip(clean[ids].tolist(), ctx.data.train.labels[ids].tolist()))
  assert moves <= {(1, 7), (7, 1), (3, 8), (8, 3), (4, 9), (9, 4), (5, 6),
                   (6, 5)}
  for c in (1, 3, 4, 5, 6, 7, 8, 9):
    assert (clean[ids] == c).sum() == round(0.25 * (clean == c).sum())
  # A matrix file gives the same noise as the pairs it encodes.
  t = compare.stages.noise_lib.pair_targets("mnist", 10)
  np.savetxt(tmp_path / "t.csv", t, delimiter=",")
  config.dataset.label_noise_kind = f"matrix:{tmp_path / 't.csv'}"
  ctx2, data2 = compare.stages.load(config, str(tmp_path / "m"))
  np.testing.assert_array_equal(ctx2.flipped["flipped.npy"], ids)
  assert data2 == data


@pytest.mark.parametrize("kind,fraction,match", [
    ("pairs:cifar", 0.2, "label_noise_kind='pairs:cifar' is not allowed"),
    ("pairs:mnist", 0.0, "not allowed with dataset.label_noise=0"),
    ("pairs:fashion_mnist", 0.2, "written for fashion_mnist_idx"),
    ("matrix:no/such.npy", 0.2, "no file 'no/such.npy'"),
    ("matrix:SMALL", 0.2, r"shape \(2, 2\); .* 10 x 10"),
])
def test_bad_noise_kinds_are_refused(tmp_path, kind, fraction, match):
  np.save(tmp_path / "small.npy", np.array([[0., 1.], [1., 0.]]))
  config = tiny("random")
  config.dataset.label_noise = fraction
  config.dataset.label_noise_kind = kind.replace(
      "SMALL", str(tmp_path / "small.npy"))
  with pytest.raises(ValueError, match=match):
    compare.stages.load(config, str(tmp_path / "x"))


def test_noise_report_gives_the_flipped_share_per_class():
  mask = np.array([1, 1, 1, 1, 0, 0], bool)
  labels = np.array([0, 0, 1, 1, 2, 2])
  got = compare.noise_counts(mask, np.array([1, 2, 3, 4]), labels, 3)
  assert got["flipped_share_by_class"] == [0.5, 1.0, None]
  assert got["coreset_noise"] == 0.75
  rows = [dict(method="random", ratio=0.5, seed=s, num_examples=6,
               **compare.noise_counts(mask, f, labels, 3))
          for s, f in ((0, np.array([1, 2, 3])), (1, np.array([0, 1])))]
  md = "\n".join(compare.noise_table(rows, ["random"], [0.5]))
  # Label 0: 1/2 and 2/2 flipped; label 1: 2/2 and 0/2; label 2 none kept.
  assert "| random | **75.0%** | 50.0% | — |" in md


def test_plot_styles_and_labels_come_from_the_rows():
  from mrmc_jax import methods  # pylint: disable=g-import-not-at-top
  assert compare._label("full") == "full data"  # Its row's label.
  assert compare._label("mrmc(skip_epochs=2)") == "mrmc(skip_epochs=2)"
  assert methods.row("full").role == "reference"
  for spec, line in (("mrmc_r(rho=0.5)", "-"), ("mrmc_ra", "-"),
                     ("d2", "--"), ("random", "--")):
    assert compare._LINE[methods.row(spec).role] == line, spec
  assert compare._COST_STYLE[methods.row("random").role]["color"] == "gray"
