"""The whole loop on tiny configs: digits, and tfds mock data of CIFAR shape."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax.runner import experiment
from mrmc_jax.runner import loop
from mrmc_jax import selection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  config = default.get_config()
  config.selection.warmup_epochs = 3
  config.train.epochs = 2
  config.train.batch_size = 128
  return base.set_fields(config, overrides)


def test_digits_end_to_end(tmp_path):
  workdir = str(tmp_path / "run")
  summary = experiment.train_and_evaluate(tiny_config(), workdir)
  n = summary["num_examples"]
  assert summary["num_selected"] == selection.budget(0.3, n)
  for f in ("config.json", "summary.json", "metrics.jsonl",
            "coreset/scores.npy", "coreset/mask.npy", "coreset/indices.npy",
            "plots/score_histogram.png", "plots/selected_per_class.png",
            "plots/trajectories.png", "warmup/artefacts.npz"):
    assert os.path.exists(os.path.join(workdir, f)), f
  mask = np.load(os.path.join(workdir, "coreset/mask.npy"))
  scores = np.load(os.path.join(workdir, "coreset/scores.npy"))
  assert mask.dtype == bool and mask.shape == (n,)
  assert scores.dtype == np.float32 and np.all(np.isfinite(scores))
  np.testing.assert_array_equal(
      np.load(os.path.join(workdir, "coreset/indices.npy")),
      np.flatnonzero(mask))
  assert sum(summary["selected_per_class"]) == mask.sum()
  assert 0.5 < summary["test_accuracy"] <= 1.0
  with np.load(os.path.join(workdir, "warmup/artefacts.npz")) as art:
    # Every id seen exactly once in every warm-up epoch.
    np.testing.assert_array_equal(art["visits"], np.ones((n, 3), np.int32))
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  stages = [r["stage"] for r in rows if "train_loss" in r]
  assert stages.count("warmup") == 3 and stages.count("train") == 2
  # Rerunning a finished run resumes everything and changes nothing.
  again = experiment.train_and_evaluate(tiny_config(), workdir)
  assert again["test_accuracy"] == summary["test_accuracy"]
  np.testing.assert_array_equal(
      np.load(os.path.join(workdir, "coreset/mask.npy")), mask)


def test_a_users_method_runs_through_main(tmp_path):
  # The user's file is named in the config string, so its option becomes a
  # config field (selection.toy.power) like the package's options.
  toy = os.path.join(ROOT, "tests", "plugins", "toy_method.py")
  config = default.get_config(
      f"selection.plugins='{toy}',selection.method='toy',"
      "selection.toy.power=2.0,selection.warmup_epochs=3,train.epochs=1,"
      "train.batch_size=128")
  assert config.selection.toy.power == 2.0
  summary = experiment.train_and_evaluate(config, str(tmp_path / "toy"))
  assert summary["method"] == "toy"
  assert summary["num_selected"] == selection.budget(0.3,
                                                     summary["num_examples"])
  config.selection.toy.power = -1.0
  with pytest.raises(ValueError, match=r"^selection.toy.power=-1.0 is not"):
    experiment.train_and_evaluate(config, str(tmp_path / "bad"))


def _flip_byte(path, offset):
  data = bytearray(open(path, "rb").read())
  data[offset] ^= 1
  open(path, "wb").write(bytes(data))


def test_damaged_outputs_are_recomputed_never_used(tmp_path, caplog):
  # Issue: a flipped bit in coreset/mask.npy or a digit in summary.json was
  # used as is. Every stage output is verified against its content hash;
  # damage takes the recompute path with one warning naming the file.
  config = tiny_config(**{"train.epochs": 1})
  workdir = str(tmp_path / "run")
  summary = experiment.train_and_evaluate(config, workdir)
  mask_path = os.path.join(workdir, "coreset", "mask.npy")
  mask = np.load(mask_path)
  _flip_byte(mask_path, os.path.getsize(mask_path) - 1)
  assert np.load(mask_path).sum() != mask.sum()
  summary_path = os.path.join(workdir, "summary.json")
  text = open(summary_path).read()
  acc = json.dumps(summary["test_accuracy"])
  open(summary_path, "w").write(text.replace(acc, acc[:-1] + (
      "1" if acc[-1] != "1" else "2")))
  art_path = os.path.join(workdir, "warmup", "artefacts.npz")
  _flip_byte(art_path, os.path.getsize(art_path) // 2)
  again = experiment.train_and_evaluate(config, workdir)
  warned = " ".join(r.getMessage() for r in caplog.records
                    if r.levelname == "WARNING")
  for f in (summary_path, mask_path, art_path):
    assert f in warned, (f, warned)
  assert again["test_accuracy"] == summary["test_accuracy"]
  np.testing.assert_array_equal(np.load(mask_path), mask)
  stored = json.load(open(summary_path))
  assert stored["test_accuracy"] == summary["test_accuracy"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished tiny run (1 training epoch) and its summary."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  summary = experiment.train_and_evaluate(
      tiny_config(**{"train.epochs": 1}), workdir)
  return workdir, summary


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


# (file in the workdir, damage, the file the one warning names): each on a
# finished workdir, whose summary used to be returned without a look.
FINISHED_DAMAGE = [
    ("coreset/mask.npy", lambda p: _flip_byte(p, os.path.getsize(p) - 1),
     "coreset/mask.npy"),
    ("coreset/scores.npy", lambda p: _flip_byte(p, os.path.getsize(p) // 2),
     "coreset/scores.npy"),
    ("coreset/indices.npy", lambda p: _flip_byte(p, os.path.getsize(p) - 8),
     "coreset/indices.npy"),
    ("coreset/selection.json", _truncate, "coreset/selection.json"),
    ("warmup/artefacts.npz", _truncate, "warmup/artefacts.npz"),
    ("warmup/artefacts.json", _truncate, "warmup/artefacts.json"),
    ("warmup/artefacts.json",
     lambda p: open(p, "w").write(open(p).read().replace('"sha256": "',
                                                         '"sha256": "0')),
     "warmup/artefacts.json"),
]


@pytest.mark.parametrize("name,damage,named", FINISHED_DAMAGE,
                         ids=[f"{c[0]}-{i}" for i, c in
                              enumerate(FINISHED_DAMAGE)])
def test_a_finished_runs_damaged_output_is_recomputed(
    tmp_path, caplog, finished_run, name, damage, named):
  ref, ref_summary = finished_run
  workdir = str(tmp_path / "run")
  shutil.copytree(ref, workdir)
  path = os.path.join(workdir, name)
  before = open(path, "rb").read()
  damage(path)
  assert open(path, "rb").read() != before
  caplog.clear()
  summary = experiment.train_and_evaluate(tiny_config(**{"train.epochs": 1}),
                                          workdir)
  warned = [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING"]
  assert len(warned) == 1 and os.path.join(workdir, named) in warned[0], (
      warned)
  timing = ("seconds", "sha256")
  assert {k: v for k, v in summary.items() if not any(t in k for t in timing)
          } == {k: v for k, v in ref_summary.items()
                if not any(t in k for t in timing)}
  for f in ("coreset/mask.npy", "coreset/scores.npy", "coreset/indices.npy"):
    assert open(os.path.join(workdir, f), "rb").read() == open(
        os.path.join(ref, f), "rb").read(), f
  art = np.load(os.path.join(workdir, "warmup", "artefacts.npz"))
  ref_art = np.load(os.path.join(ref, "warmup", "artefacts.npz"))
  for k in ref_art.files:
    if k != "warmup_seconds":
      np.testing.assert_array_equal(art[k], ref_art[k], err_msg=k)
  # Verified again: the rerun of the repaired workdir warns no more.
  caplog.clear()
  experiment.train_and_evaluate(tiny_config(**{"train.epochs": 1}), workdir)
  assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_checkpoints_of_another_mask_are_never_resumed(tmp_path, caplog):
  # The train checkpoints' stamp holds the mask's hash: checkpoints trained
  # on another core-set are dropped with one warning and training restarts.
  from mrmc_jax.runner import stages  # pylint: disable=g-import-not-at-top
  config = tiny_config(**{"train.epochs": 1})
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(config, workdir)
  out = os.path.join(workdir, "coreset")
  mask = np.load(os.path.join(out, "mask.npy"))
  other = mask.copy()
  other[np.flatnonzero(mask)[0]] = False
  np.save(os.path.join(out, "mask.npy"), other)
  timing = json.load(open(os.path.join(out, "selection.json")))
  timing["sha256"]["mask.npy"] = stages.array_sha256(other)
  json.dump(timing, open(os.path.join(out, "selection.json"), "w"))
  os.remove(os.path.join(workdir, "summary.json"))
  summary = experiment.train_and_evaluate(config, workdir)
  warned = [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING"]
  assert any(os.path.join(workdir, "checkpoints", "train") in w and
             "from scratch" in w for w in warned), warned
  assert summary["num_selected"] == mask.sum() - 1
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows if r["stage"] == "train"] == [1]


def test_killed_warmup_resumes_to_identical_mask(tmp_path, monkeypatch):
  config = tiny_config(**{"train.epochs": 1})
  ref = str(tmp_path / "ref")
  experiment.train_and_evaluate(config, ref)

  class Killed(Exception):
    pass

  save = loop.save_checkpoint

  def kill_after_two(mngr, epoch, tree):
    save(mngr, epoch, tree)
    if os.path.basename(str(mngr.directory)) == "warmup" and epoch == 2:
      raise Killed()

  run = str(tmp_path / "run")
  monkeypatch.setattr(loop, "save_checkpoint", kill_after_two)
  with pytest.raises(Killed):
    experiment.train_and_evaluate(config, run)
  assert not os.path.exists(os.path.join(run, "coreset", "mask.npy"))
  monkeypatch.undo()
  experiment.train_and_evaluate(config, run)
  np.testing.assert_array_equal(np.load(os.path.join(run, "coreset/mask.npy")),
                                np.load(os.path.join(ref, "coreset/mask.npy")))
  np.testing.assert_array_equal(
      np.load(os.path.join(run, "coreset/scores.npy")),
      np.load(os.path.join(ref, "coreset/scores.npy")))


def test_eval_loss_source_and_mrmc_r(tmp_path):
  config = tiny_config(**{"selection.loss_source": "eval",
                          "selection.method": "mrmc_r",
                          "selection.mrmc_r.proxy_epochs": 2,
                          "train.epochs": 1})
  summary = experiment.train_and_evaluate(config, str(tmp_path / "r"))
  assert summary["method"] == "mrmc_r"
  with np.load(str(tmp_path / "r/warmup/artefacts.npz")) as art:
    assert art["features"].shape == (summary["num_examples"], 256)
    assert np.all(art["visits"] == 1)


@pytest.mark.parametrize("method", ["random", "full"])
def test_methods_without_warmup(tmp_path, method):
  config = tiny_config(**{"selection.method": method, "train.epochs": 1})
  summary = experiment.train_and_evaluate(config, str(tmp_path / method))
  assert summary["warmup_seconds"] == 0.0
  n = summary["num_examples"]
  assert summary["num_selected"] == (n if method == "full" else
                                     selection.budget(0.3, n))


def test_tfds_mock_cifar10_shape(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = tiny_config(**{"dataset.name": "cifar10", "model.name": "mlp",
                          "train.augment": True, "train.batch_size": 16,
                          "train.eval_batch_size": 16,
                          "selection.warmup_epochs": 2, "train.epochs": 1})
  with tfds.testing.mock_data(num_examples=40):
    summary = experiment.train_and_evaluate(config, str(tmp_path / "c"))
  assert summary["num_examples"] == 40
  assert summary["num_selected"] == 12
  with np.load(str(tmp_path / "c/warmup/artefacts.npz")) as art:
    assert np.all(art["visits"] == 1)


@pytest.mark.parametrize("key,value,match", [
    ("selection.method", "magic", r"selection.method='magic' is not allowed"),
    ("selection.ratio", 1.5, r"selection.ratio=1.5 is not allowed"),
    ("selection.ratio", 0.0, r"selection.ratio=0.0 is not allowed"),
    ("model.name", "vgg", r"model.name='vgg' is not allowed"),
    ("dataset.name", "no_such_set", r"dataset.name='no_such_set' is not"),
    ("selection.loss_source", "test", r"loss_source='test' is not allowed"),
    ("selection.skip_epochs", 2, r"skip_epochs=2 is not allowed"),
    ("selection.warmup_epochs", 1, r"warmup_epochs=1 is not allowed"),
    # Every method option, from its declaration, with the config's names,
    # whichever method runs (issue: refused only after the warm-up).
    ("selection.max_initial_ratio", float("nan"),
     r"^selection.max_initial_ratio=nan is not allowed: it must be a finite "
     r"number > 1\.$"),
    ("selection.epoch_offset", -3, r"^selection.epoch_offset=-3 is not"),
    ("selection.mrmc_r.rho", -1.0, r"^selection.mrmc_r.rho=-1.0 is not"),
    ("selection.ccs.strata", 0, r"^selection.ccs.strata=0 is not allowed"),
    ("selection.d2.k", 0, r"^selection.d2.k=0 is not allowed"),
    ("selection.dyn_unc.window", 0, r"^selection.dyn_unc.window=0 is not"),
    ("selection.el2n.last_epochs", 0, r"^selection.el2n.last_epochs=0 is"),
    ("selection.method", "mrmc(max_initial_ratio=-1)",
     r"max_initial_ratio=-1 is not allowed in method spec"),
    ("seed", 2**31, r"^seed=2147483648 is not allowed"),
])
def test_bad_config_fails_before_work(tmp_path, key, value, match):
  with pytest.raises(ValueError, match=match):
    experiment.train_and_evaluate(tiny_config(**{key: value}),
                                  str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")


def test_unknown_field_is_named(tmp_path):
  config = tiny_config()
  config.train.nosuch = 3
  with pytest.raises(ValueError, match=r"^unknown field train.nosuch"):
    experiment.train_and_evaluate(config, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")


def test_missing_files_say_how_to_get_them(tmp_path):
  config = tiny_config(**{"dataset.name": "mnist_idx",
                          "dataset.data_dir": str(tmp_path / "none")})
  with pytest.raises(FileNotFoundError, match="make data-mnist"):
    experiment.train_and_evaluate(config, str(tmp_path / "w"))


def test_cli_refuses_workdir_of_other_config(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"seed": 123}))
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
       "--config=" + os.path.join(ROOT, "configs", "default.py"),
       f"--workdir={workdir}"], capture_output=True, text=True, timeout=300,
      cwd=ROOT)
  assert proc.returncode == 2
  err = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "different config" in err[0], proc.stderr[-2000:]
  assert json.loads((workdir / "config.json").read_text()) == {"seed": 123}
  assert sorted(os.listdir(workdir)) == ["config.json"]


def test_validation_fraction_evaluates_a_split_of_train():
  from mrmc_jax.runner import context  # pylint: disable=g-import-not-at-top
  full = context.make_context(tiny_config(), "unused")
  held = context.make_context(
      tiny_config(**{"dataset.validation_fraction": 0.2}), "unused")
  n, m = full.data.train.num_examples, held.data.train.num_examples
  # The held-out rows leave train and become the evaluated split.
  assert m + held.data.test.num_examples == n
  assert abs(held.data.test.num_examples - 0.2 * n) <= full.data.num_classes
  assert held.data.test.num_examples != full.data.test.num_examples


def test_a_plugin_that_breaks_the_contract_is_one_line_in_main(tmp_path,
                                                               capsys):
  # Issue: main.py died in the plot code (IndexError) on a wrong-length
  # mask, and with ZeroDivisionError on an empty one.
  from mrmc_jax.runner import cli  # pylint: disable=g-import-not-at-top
  for method in ("short_mask", "empty_mask"):
    config = tiny_config(**{
        "selection.method": method,
        "selection.plugins": os.path.join(ROOT, "tests", "plugins",
                                          "broken_methods.py")})
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
      cli.run(experiment.train_and_evaluate, config, str(tmp_path / method))
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert e.value.code == cli.USAGE_ERROR
    assert len(lines) == 1 and lines[0].startswith(
        f"error: method {method!r} broke the selection contract"), lines
