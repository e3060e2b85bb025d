"""Fault injection: kills, concurrent runs, damaged files and bad input.

What docs/reliability.md promises, tested on the tiny digits config:
  * kill -9 (and SIGINT, SIGTERM) at stage boundaries, inside checkpoint
    and file writes, and during start-up: the resumed run selects the same
    mask and reaches the same accuracy as an uninterrupted one, with exactly
    one metrics row per epoch (and one TensorBoard point); a truncated or
    bit-flipped checkpoint is skipped for the one before it; a damaged
    metrics.jsonl is rebuilt from the checkpoint's copy; no temporary files
    are left and every file has the umask's mode;
  * a diverging run (NaN loss) ends with one line before any selection;
  * two runs started together on one workdir: one is refused, the other's
    outputs are intact;
  * bad input of every kind: one line, exit status 2, and a workdir that
    existed is byte-for-byte untouched (one that did not is not created).
Subprocesses run `experiments/main.py` (through tests/fault_worker.py when a
signal is injected); the rest runs in this process.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax.runner import cli
from mrmc_jax.runner import compare
from mrmc_jax.runner import experiment
from mrmc_jax.runner import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "experiments", "main.py")
# The tiny config of tests/test_experiment.py, as a config string argument.
TINY = {"selection.warmup_epochs": 3, "train.epochs": 3,
        "train.batch_size": 128}


def tiny_config(**overrides):
  return base.set_fields(default.get_config(), {**TINY, **overrides})


def config_flag(**overrides):
  items = {**TINY, **overrides}
  return ("--config=" + os.path.join(ROOT, "configs", "default.py") + ":" +
          ",".join(f"{k}={v!r}" for k, v in items.items()))


def run_cli(args, worker_point=None, timeout=300, tmpdir=None):
  cmd = [sys.executable]
  env = dict(os.environ)
  if tmpdir is not None:
    env["TMPDIR"] = tmpdir
  if worker_point:
    cmd += [os.path.join(ROOT, "tests", "fault_worker.py"), worker_point,
            "--"]
  else:
    cmd += [MAIN]
  return subprocess.run(cmd + args, capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=env)


def snapshot(path):
  """{relative path: sha256} of every file under `path` (or of the file)."""
  if os.path.isfile(path):
    return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
  out = {}
  for dirpath, _, files in os.walk(path):
    for f in files:
      full = os.path.join(dirpath, f)
      out[os.path.relpath(full, path)] = hashlib.sha256(
          open(full, "rb").read()).hexdigest()
  return out


def metric_epochs(workdir, stage):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if r["stage"] == stage]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """An uninterrupted tiny run: the reference and a pre-existing workdir."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  summary = experiment.train_and_evaluate(tiny_config(), workdir)
  return workdir, summary


@pytest.mark.slow
def test_kills_resume_to_the_same_mask_and_one_row_per_epoch(tmp_path,
                                                             finished,
                                                             caplog):
  ref, ref_summary = finished
  run = str(tmp_path / "run")
  args = [config_flag(), f"--workdir={run}"]
  tmpdir = str(tmp_path / "tmp")
  os.makedirs(tmpdir)
  # Each entry: the injected signal and where, the exit status it gives.
  for point, status in [
      ("term:at:0.2", 143),  # During start-up (imports).
      ("int:inside_checkpoint:warmup:1", 130),  # Orbax is saving.
      ("kill:inside_checkpoint:warmup:2", -9),
      ("kill:inside_write:scores.npy", -9),  # warm-up -> selection
      ("kill:inside_write:mask.npy", -9),
      ("term:after_checkpoint:train:1", 143),
      ("kill:after_checkpoint:train:2", -9)]:
    proc = run_cli(args, worker_point=point, tmpdir=tmpdir)
    assert proc.returncode == status, (point, proc.stderr[-3000:])
    if status > 0:
      # SIGINT and SIGTERM: one line, no traceback.
      assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
      lines = [l for l in proc.stderr.splitlines() if "error: " in l]
      assert len(lines) == 1 and lines[0].startswith("error: "), (
          proc.stderr[-3000:])
  assert not os.path.exists(os.path.join(run, "summary.json"))
  # Truncate the newest core-set training checkpoint (epoch 2): the resume
  # falls back to epoch 1's.
  step_dir = os.path.join(run, "checkpoints", "train", "2")
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  # And a bit flip in metrics.jsonl that merges warm-up rows 1 and 2.
  _flip_bit(os.path.join(run, "metrics.jsonl"), b"\n")
  with caplog.at_level("WARNING"):
    summary = experiment.train_and_evaluate(tiny_config(), run)
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING"]
  assert len(warnings) == 2, warnings
  assert "cannot be restored" in warnings[0] and "train/2" in warnings[0]
  assert "metrics.jsonl is damaged" in warnings[1], warnings

  for name in ("mask.npy", "scores.npy"):
    np.testing.assert_array_equal(
        np.load(os.path.join(run, "coreset", name)),
        np.load(os.path.join(ref, "coreset", name)))
  assert summary["test_accuracy"] == ref_summary["test_accuracy"]
  for stage, epochs in (("warmup", 3), ("train", 3)):
    rows = metric_epochs(run, stage)
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), rows
    ref_rows = metric_epochs(ref, stage)
    # Same step counting and learning rate as the uninterrupted run.
    assert [(r["step"], r["learning_rate"]) for r in rows] == [
        (r["step"], r["learning_rate"]) for r in ref_rows]
    assert [r["train_loss"] for r in rows] == [
        r["train_loss"] for r in ref_rows]
  # No temporary checkpoint folders are left behind, two checkpoints kept.
  assert sorted(os.listdir(os.path.join(run, "checkpoints", "warmup"))) == [
      "2", "3"]
  # No stale temporary files (a kill inside the write of mask.npy left one),
  # and every file with the mode the umask gives.
  umask = os.umask(0)
  os.umask(umask)
  for dirpath, _, names in os.walk(run):
    for name in names:
      assert not name.startswith(".tmp-"), os.path.join(dirpath, name)
      mode = os.stat(os.path.join(dirpath, name)).st_mode & 0o777
      assert mode == 0o666 & ~umask, (name, oct(mode))
  # Each run's temporary folder is removed at its exit, or by the next
  # start after a kill -9: only the last kill's is left.
  left = os.listdir(tmpdir)
  assert len(left) == 1 and left[0].startswith("mrmc-run-"), left
  # One TensorBoard point per epoch, however often the stage resumed.
  assert _tensorboard_steps(os.path.join(run, "tb", "train"),
                            "train_loss") == [
                                r["step"] for r in metric_epochs(ref, "train")]


def _flip_bit(path, byte=None):
  """Flips the lowest bit of the middle byte (or of the first `byte`)."""
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    i = len(data) // 2 if byte is None else data.index(byte)
    data[i] ^= 1
    f.seek(0)
    f.write(data)


def _tensorboard_steps(logdir, tag):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  steps = []
  for name in sorted(os.listdir(logdir)):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(logdir, name)):
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


def test_bit_flip_in_newest_checkpoint_falls_back(tmp_path, finished, caplog):
  ref, ref_summary = finished
  run = _copy(finished, tmp_path, "flipped")
  os.remove(os.path.join(run, "summary.json"))
  step_dir = os.path.join(run, "checkpoints", "train", "3")
  data = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
          if os.sep + "d" + os.sep in os.path.join(d, f)]
  _flip_bit(max(data, key=os.path.getsize))
  with caplog.at_level("WARNING"):
    summary = experiment.train_and_evaluate(tiny_config(), run)
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "train/3 cannot be restored" in warnings[0]
  assert "SHA-256 differs" in warnings[0], warnings
  for key in ("test_accuracy", "test_loss", "num_selected"):
    assert summary[key] == ref_summary[key], key
  assert [r["train_loss"] for r in metric_epochs(run, "train")] == [
      r["train_loss"] for r in metric_epochs(ref, "train")]


@pytest.mark.parametrize("method,stage", [("mrmc", "warmup"),
                                          ("random", "train")])
def test_diverging_training_is_one_line_before_selection(capsys, tmp_path,
                                                         method, stage):
  workdir = str(tmp_path / "w")
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(experiment.train_and_evaluate,
            tiny_config(**{"train.learning_rate": 1e6,
                           "selection.method": method}), workdir)
  err = capsys.readouterr().err
  # The progress bar of the epoch, then one line.
  lines = [l for l in err.replace("\r", "\n").splitlines()
           if l.strip() and not l.startswith(stage + ":")]
  assert e.value.code == cli.USAGE_ERROR and len(lines) == 1, err
  assert f"train_loss is nan at {stage} epoch 1 (learning rate" in lines[0]
  assert lines[0].startswith("error: ") and "train.learning_rate" in lines[0]
  if stage == "warmup":
    # Nothing selected from non-finite statistics, no rows, no checkpoint.
    assert not os.path.exists(os.path.join(workdir, "coreset"))
    assert not os.path.exists(os.path.join(workdir, "warmup"))
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


@pytest.mark.slow
def test_concurrent_start_refuses_one(tmp_path):
  workdir = str(tmp_path / "w")
  configs = {"random": config_flag(**{"selection.method": "random",
                                      "selection.ratio": 0.1,
                                      "train.epochs": 1}),
             "mrmc": config_flag(**{"train.epochs": 1})}
  procs = {k: subprocess.Popen([sys.executable, MAIN, v,
                                f"--workdir={workdir}"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
           for k, v in configs.items()}
  out = {k: (p.wait(timeout=300), p.stderr.read()) for k, p in procs.items()}
  winners = [k for k, (rc, _) in out.items() if rc == 0]
  losers = [k for k, (rc, _) in out.items() if rc != 0]
  assert len(winners) == 1 and len(losers) == 1, out
  rc, err = out[losers[0]]
  assert rc == 2 and "Traceback" not in err, err[-3000:]
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and ("in use" in lines[0] or
                              "different config" in lines[0]), err[-3000:]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["method"] == winners[0]
  n = summary["num_examples"]
  assert summary["num_selected"] == int((0.1 if winners[0] == "random"
                                         else 0.3) * n + 1e-9)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows if r["stage"] == "train"] == [1]


def _npz(tmp_path, name, **arrays):
  path = str(tmp_path / f"{name}.npz")
  np.savez(path, **arrays)
  return path


def _bad_data(tmp_path):
  """{case: dataset.name} for data that must be refused after loading."""
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
  y = np.arange(40) % 4
  good = _npz(tmp_path, "good", x_train=x, y_train=y)
  truncated = str(tmp_path / "truncated.npz")
  with open(good, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[: len(data) // 2])
  garbage = str(tmp_path / "garbage.npz")
  with open(garbage, "wb") as f:
    f.write(b"not an npz at all\n" * 10)
  empty = str(tmp_path / "empty.npz")
  open(empty, "wb").close()
  pickled = str(tmp_path / "pickled.npz")
  np.savez(pickled, x_train=x, y_train=np.array([object()] * 40))
  folder = tmp_path / "folder" / "train"
  for c in ("a", "b"):
    (folder / c).mkdir(parents=True)
    for i in range(3):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      png = tf.io.encode_png(x[i][..., None]).numpy()
      (folder / c / f"{i}.png").write_bytes(png)
  (folder / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  return {
      "more_images_than_labels": (
          "npz:" + _npz(tmp_path, "long", x_train=x, y_train=y[:30]),
          "40 images but y_train has 30 labels"),
      "more_labels_than_images": (
          "npz:" + _npz(tmp_path, "short", x_train=x[:30], y_train=y),
          "30 images but y_train has 40 labels"),
      "test_split_mismatch": (
          "npz:" + _npz(tmp_path, "test", x_train=x, y_train=y,
                        x_test=x[:5], y_test=y[:4]),
          "x_test has 5 images but y_test has 4"),
      "nan_labels": (
          "npz:" + _npz(tmp_path, "nan", x_train=x,
                        y_train=np.where(y == 1, np.nan, y)),
          "integer class ids"),
      "empty_labels": (
          "npz:" + _npz(tmp_path, "none", x_train=x[:0], y_train=y[:0]),
          "y_train is empty"),
      "num_classes_too_small": (
          "npz:" + _npz(tmp_path, "classes", x_train=x, y_train=y,
                        num_classes=2),
          "num_classes=2 but the labels go up to 3"),
      "truncated_npz": ("npz:" + truncated, "not a readable npz"),
      "garbage_npz": ("npz:" + garbage, "not a readable npz"),
      "empty_npz": ("npz:" + empty, "not a readable npz"),
      "pickled_npz": ("npz:" + pickled, "pickled.npz: cannot read"),
      "three_examples": (
          "npz:" + _npz(tmp_path, "three", x_train=x[:3], y_train=y[:3]),
          "core-set would be empty"),
      "corrupt_image": ("folder:" + str(tmp_path / "folder"),
                        "broken.png: cannot decode"),
  }


def _refused(capsys, job, config, workdir, match):
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(job, config, workdir)
  err = capsys.readouterr().err
  assert e.value.code == cli.USAGE_ERROR, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert match in lines[0], lines[0]


# (case, config overrides, expected part of the one line): each refused
# before any work, a finished workdir byte-for-byte untouched.
CONFIG_CASES = [
    ("spec_option_not_int", {"selection.method": "mrmc(skip_epochs=abc)"},
     "skip_epochs='abc'"),
    ("spec_option_out_of_range", {"selection.method": "mrmc(skip_epochs=9)"},
     "skip_epochs=9"),
    ("negative_seed", {"seed": -1}, "seed=-1 is not allowed"),
    ("seed_too_large", {"seed": 2**31}, "seed=2147483648 is not allowed"),
    ("nan_learning_rate", {"train.learning_rate": float("nan")},
     "train.learning_rate=nan is not allowed"),
    ("unknown_method", {"selection.method": "magic"}, "'magic' is not"),
    ("unclosed_spec", {"selection.method": "mrmc("},
     "method spec 'mrmc(' is not allowed"),
    ("other_config", {"selection.ratio": 0.2}, "different config"),
]


@pytest.mark.parametrize("case,overrides,match", CONFIG_CASES,
                         ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_refused_and_workdir_untouched(capsys, finished, case,
                                                  overrides, match):
  del case
  workdir = finished[0]
  before = snapshot(workdir)
  _refused(capsys, experiment.train_and_evaluate, tiny_config(**overrides),
           workdir, match)
  assert snapshot(workdir) == before


def test_bad_data_refused_and_nothing_written(capsys, tmp_path):
  cases = _bad_data(tmp_path)
  for case, (name, match) in cases.items():
    workdir = str(tmp_path / "w" / case)
    _refused(capsys, experiment.train_and_evaluate,
             tiny_config(**{"dataset.name": name,
                            "train.eval_batch_size": 128}), workdir, match)
    # A failed first run leaves nothing (no config.json to refuse the
    # corrected command).
    assert not os.path.exists(workdir), case
  # The ratio whose core-set is empty on the embedded digits set.
  _refused(capsys, experiment.train_and_evaluate,
           tiny_config(**{"selection.ratio": 0.0001}),
           str(tmp_path / "w" / "tiny_ratio"), "core-set would be empty")
  assert not os.path.exists(tmp_path / "w" / "tiny_ratio")


def _copy(finished, tmp_path, name):
  dst = str(tmp_path / name)
  shutil.copytree(finished[0], dst)
  return dst


def test_bad_workdirs_refused_and_untouched(capsys, tmp_path, finished):
  config = tiny_config()
  job = experiment.train_and_evaluate
  # A file.
  path = tmp_path / "file"
  path.write_text("keep")
  _refused(capsys, job, config, str(path), "is a file")
  assert path.read_text() == "keep"
  # Garbled config.json, named.
  w = _copy(finished, tmp_path, "garbled")
  with open(os.path.join(w, "config.json"), "w") as f:
    f.write("{not json")
  before = snapshot(w)
  _refused(capsys, job, config, w, "config.json is not valid JSON")
  assert snapshot(w) == before
  # Cut short: the advice is one that works (deleting it would only turn
  # the outputs into outputs of unknown origin).
  with open(os.path.join(w, "config.json"), "r+") as f:
    f.truncate(20)
  _refused(capsys, job, config, w, "use a new --workdir")
  _refused(capsys, job, config, w, "identity is lost")
  # Outputs whose config.json was deleted.
  w = _copy(finished, tmp_path, "anonymous")
  os.remove(os.path.join(w, "config.json"))
  before = snapshot(w)
  _refused(capsys, job, tiny_config(**{"selection.ratio": 0.2}), w,
           "but no config.json")
  assert snapshot(w) == before
  # Data that changed under a finished run (its stored fingerprint differs).
  w = _copy(finished, tmp_path, "data")
  stored = wd.read_json(os.path.join(w, "data.json"))
  stored["train_labels_sha256"] = "0" * 16
  wd.write_json(os.path.join(w, "data.json"), stored)
  before = snapshot(w)
  _refused(capsys, job, config, w, "train_labels_sha256")
  assert snapshot(w) == before
  # A data.json written before the test images were in the fingerprint:
  # its results cannot be shown to match them.
  w = _copy(finished, tmp_path, "older")
  stored = wd.read_json(os.path.join(w, "data.json"))
  del stored["test_images_sha256"]
  wd.write_json(os.path.join(w, "data.json"), stored)
  before = snapshot(w)
  _refused(capsys, job, config, w, "written before the data fingerprint "
           "covered the test images")
  assert snapshot(w) == before
  # A workdir in use by another run.
  w = _copy(finished, tmp_path, "busy")
  before = snapshot(w)
  with wd.lock(w):
    _refused(capsys, job, config, w, "in use by another run")
  assert snapshot(w) == before
  # A comparison's workdir; and a comparison refuses a main.py run.
  w = str(tmp_path / "grid")
  os.makedirs(w)
  wd.write_json(os.path.join(w, "grid.json"), {"seed": 0})
  before = snapshot(w)
  _refused(capsys, job, config, w, "holds a compare run")
  assert snapshot(w) == before
  before = snapshot(finished[0])
  _refused(capsys, compare.run_comparison, config, finished[0],
           "holds a main run")
  assert snapshot(finished[0]) == before
  # Read-only (root ignores permissions, so only checked as a user).
  if os.geteuid() != 0:
    w = _copy(finished, tmp_path, "readonly")
    os.chmod(w, 0o555)
    try:
      _refused(capsys, job, config, os.path.join(w, "sub"), "not writable")
    finally:
      os.chmod(w, 0o755)


def test_compare_checks_every_cell_first(capsys, tmp_path):
  config = tiny_config()
  config.compare.methods = "random,mrmc(skip_epochs=9)"
  _refused(capsys, compare.run_comparison, config, str(tmp_path / "c"),
           "skip_epochs=9")
  assert not os.path.exists(tmp_path / "c")


@pytest.mark.parametrize("script,args,match", [
    ("main.py", ["--workdir=W"], "--config"),
    ("compare.py", ["--workdir=W"], "--config"),
    ("main.py", ["--config=configs/nonexistent.py", "--workdir=W"],
     "nonexistent.py"),
    ("main.py", ["--config=configs/cifar10.py:quik", "--workdir=W"],
     "unknown preset 'quik'"),
])
def test_usage_errors_are_one_line(tmp_path, script, args, match):
  args = [a.replace("W", str(tmp_path / "w")) for a in args]
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", script), *args],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert proc.returncode == cli.USAGE_ERROR, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert match in lines[0], lines[0]
  assert not os.path.exists(tmp_path / "w")


@pytest.fixture(scope="module")
def main_flags():
  """experiments/main.py's flags, defined once in this process."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "workdir" not in flags.FLAGS:
    from mrmc_jax.runner import entry  # pylint: disable=g-import-not-at-top
    entry.define_flags("Config file (get_config()).")
  yield flags.FLAGS
  flags.FLAGS.unparse_flags()


def test_config_and_usage_errors_are_one_line(capsys, tmp_path, main_flags):
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n  pass\n")
  default = os.path.join(ROOT, "configs", "default.py")
  for argv, match in [
      ([f"--config={broken}"], "broken.py, line 1: invalid Python syntax"),
      ([f"--config={default}:nosuch"], "--config: unknown preset 'nosuch'"),
      ([f"--config={default}:train.nosuch=3"],
       "unknown field 'train.nosuch' (did you mean"),
      ([f"--config={default}", "--config.train.learning_rat=3"],
       "unknown field 'train.learning_rat' (did you mean "
       "'train.learning_rate'?)"),
      ([f"--config={default}", "extra"], "unexpected argument 'extra'"),
      (["--config.selection.ratio=0.3"],
       "--config.selection.ratio overrides a field of a config file, but "
       "no --config=<file> was given"),
  ]:
    main_flags.unparse_flags()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
      cli.parse_flags(["main.py", *argv, f"--workdir={tmp_path / 'w'}"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == cli.USAGE_ERROR, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0] and "Traceback" not in lines[0], lines[0]
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_compare_grid_extends_and_reuses(tmp_path, monkeypatch):
  workdir = str(tmp_path / "grid")
  config = tiny_config(**{"train.epochs": 1})
  config.compare.methods, config.compare.ratios = "random", "0.5"
  config.compare.seeds = "0"
  first = compare.run_comparison(config, workdir)
  cell = os.path.join(workdir, "cells", "random", "ratio_0.5", "seed_0")
  before = snapshot(cell)
  assert "checkpoints" not in os.listdir(cell)
  # Extended by a method, a ratio and full: the finished cell is reused.
  config.compare.methods, config.compare.ratios = "random,mrmc,full", "0.5,0.2"
  trained = []
  train = compare.stages.train
  monkeypatch.setattr(compare.stages, "train",
                      lambda ctx, *a, **k: trained.append(ctx.workdir) or
                      train(ctx, *a, **k))
  rows = compare.run_comparison(config, workdir)
  assert snapshot(cell) == before and cell not in trained
  assert len(trained) == 4 and rows[0] == first[0]
  assert len(rows) == 5
  md = open(os.path.join(workdir, "results.md")).read()
  assert "compile s" in md


@pytest.mark.slow
def test_images_changed_outside_any_sample_are_refused(capsys, tmp_path):
  """One pixel of the last image changed after a warm-up: refused, untouched.

  The data fingerprint hashes every training image, so a change anywhere
  (the old fingerprint sampled 256 rows) refuses the rerun instead of
  resuming a warm-up computed on other data.
  """
  from sklearn import datasets as sk  # pylint: disable=g-import-not-at-top
  digits = sk.load_digits()
  x = (digits.images * 15).astype(np.uint8)
  y = digits.target
  path = _npz(tmp_path, "digits", x_train=x[:600], y_train=y[:600],
              x_test=x[600:800], y_test=y[600:800])
  config = tiny_config(**{"dataset.name": f"npz:{path}",
                          "selection.warmup_epochs": 2, "train.epochs": 1})
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(config, workdir)
  x[599, 7, 7] ^= 1
  _npz(tmp_path, "digits", x_train=x[:600], y_train=y[:600],
       x_test=x[600:800], y_test=y[600:800])
  before = snapshot(workdir)
  _refused(capsys, experiment.train_and_evaluate, config, workdir,
           "train_images_sha256")
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_test_images_changed_after_a_kill_or_a_finish_are_refused(capsys,
                                                                  tmp_path):
  """Zeroed test images after a kill and after a finished run: refused.

  The test accuracy is computed from them, so neither the killed run's
  checkpoints nor the finished run's cached summary may be used on them
  (before they were in data.json: exit 0 and 7.56% instead of 96.22%).
  """
  from sklearn import datasets as sk  # pylint: disable=g-import-not-at-top
  digits = sk.load_digits()
  x = (digits.images * 15).astype(np.uint8)
  y = digits.target
  path = _npz(tmp_path, "digits", x_train=x[:600], y_train=y[:600],
              x_test=x[600:800], y_test=y[600:800])
  overrides = {"dataset.name": f"npz:{path}", "selection.warmup_epochs": 2,
               "train.epochs": 2}
  killed = str(tmp_path / "killed")
  proc = run_cli([config_flag(**overrides), f"--workdir={killed}"],
                 worker_point="kill:after_checkpoint:train:1")
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  config = tiny_config(**overrides)
  finished = str(tmp_path / "finished")
  experiment.train_and_evaluate(config, finished)
  _npz(tmp_path, "digits", x_train=x[:600], y_train=y[:600],
       x_test=np.zeros_like(x[600:800]), y_test=y[600:800])
  for workdir in (killed, finished):
    before = snapshot(workdir)
    _refused(capsys, experiment.train_and_evaluate, config, workdir,
             "test_images_sha256")
    assert snapshot(workdir) == before
def _jsonl(stage, epochs):
  return b"".join(json.dumps({"stage": stage, "epoch": e, "step": e},
                             sort_keys=True).encode() + b"\n"
                  for e in epochs)


def test_a_duplicated_metrics_row_is_repaired_from_the_copy(tmp_path):
  # Issue: a duplicated last row was refused ("no copy can rebuild them")
  # although the checkpoint's copy covers it.
  from mrmc_jax.runner import metrics_io  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "metrics.jsonl")
  durable = _jsonl("warmup", [1, 2]) + _jsonl("train", [1, 2])
  open(path, "wb").write(durable + _jsonl("train", [2]))
  rows, warning = metrics_io.resume_rows(path, "train", 2, durable)
  assert [r["epoch"] for r in rows] == [1, 2]
  assert "line 5 repeats epoch 2 of stage 'train'" in warning
  assert open(path, "rb").read() == durable
  # Without a copy it stays refused (nothing says which row is right).
  open(path, "wb").write(durable + _jsonl("train", [2]))
  with pytest.raises(wd.CorruptFileError, match=r"holds epochs \[1, 2, 2\]"):
    metrics_io.resume_rows(path, "train", 2, None)


def test_runtime_fields_are_out_of_the_identity(capsys, tmp_path, finished):
  # Issue: resuming without train.checkpoint_every_steps was refused, the
  # field being in the run identity although step checkpoints change no
  # result. A workdir that stored it (written before) resumes too.
  ref, ref_summary = finished
  w = _copy(finished, tmp_path, "runtime")
  identity = wd.read_json(os.path.join(w, "config.json"))
  assert "checkpoint_every_steps" not in identity["train"]
  identity["train"].update(checkpoint_every_steps=0,
                           checkpoint_every_epochs=1)
  wd.write_json(os.path.join(w, "config.json"), identity)
  summary = experiment.train_and_evaluate(
      tiny_config(**{"train.checkpoint_every_steps": 7,
                     "train.checkpoint_every_epochs": 2}), w)
  assert summary == ref_summary


def test_config_mismatch_names_a_command_that_works(capsys, tmp_path,
                                                    finished):
  w = _copy(finished, tmp_path, "edited")
  identity = wd.read_json(os.path.join(w, "config.json"))
  # A value that differs: resuming with the stored value works.
  _refused(capsys, experiment.train_and_evaluate,
           tiny_config(**{"train.epochs": 4}), w,
           "use a new --workdir, or --config.train.epochs=3 to resume it")
  # A garbled key no config has: only a new workdir works.
  identity["train"]["epohcs"] = identity["train"].pop("epochs")
  wd.write_json(os.path.join(w, "config.json"), identity)
  _refused(capsys, experiment.train_and_evaluate, tiny_config(), w,
           "(train.epohcs is not a config field); the run's identity is lost")
  # Valid JSON that is not an object.
  wd.write_json(os.path.join(w, "config.json"), [1])
  _refused(capsys, experiment.train_and_evaluate, tiny_config(), w,
           "config.json is damaged (not a JSON object)")


def test_a_full_disk_is_one_line(capsys, tmp_path, monkeypatch):
  # A write that finds the disk full (here: the selection's first file)
  # ends in one line that says so and how to resume, no traceback.
  import errno  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
  write = storage.write_atomic

  def full(path, fn):
    if path.endswith("scores.npy"):
      raise OSError(errno.ENOSPC, "No space left on device", path)
    return write(path, fn)

  monkeypatch.setattr(storage, "write_atomic", full)
  _refused(capsys, experiment.train_and_evaluate,
           tiny_config(**{"selection.method": "random"}),
           str(tmp_path / "w"), "no space left on the device of --workdir=")
  # Orbax's (tensorstore's) form of the same failure.
  line = cli._error_line(ValueError(  # pylint: disable=protected-access
      "RESOURCE_EXHAUSTED: Failed to write 4 bytes to file 6: No space left "
      "on device [os_error_code='28']"), "/w")
  assert line.startswith("no space left on the device of --workdir=/w (")
  assert line.endswith("free space, then rerun the same command to resume "
                       "from the last checkpoint.")


def test_library_threads_ignored_errors_stay_off_stderr(capfd):
  # Tensorstore completes orbax's futures on its own threads and reports a
  # failing callback as unraisable ("Event loop is closed" after a failed
  # save, printed before the one error line): quiet in library threads,
  # shown in the main thread.
  import asyncio  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  seen = []
  hook = cli._quiet_unraisable_in_library_threads(seen.append)  # pylint: disable=protected-access
  old, sys.unraisablehook = sys.unraisablehook, hook
  try:
    loop = asyncio.new_event_loop()
    loop.close()
    promise, future = ts.Promise.new()
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(print))
    worker = threading.Thread(target=promise.set_result, args=(1,))
    worker.start()
    worker.join()
    assert not seen
    hook(type("U", (), {"exc_type": RuntimeError,
                        "exc_value": RuntimeError("main")})())
    assert len(seen) == 1  # The main thread's go to the default hook.
  finally:
    sys.unraisablehook = old
  assert "Event loop is closed" not in capfd.readouterr().err


@pytest.mark.parametrize("message", [
    # gcsfs (aiohttp), for the runner's own files.
    "Cannot connect to host 127.0.0.1:1 ssl:default [Connect call failed]",
    # Tensorstore (curl), for orbax's arrays, after its bounded retries.
    'ABORTED: Error writing "state.params.dense_1.kernel/0.0" in OCDBT '
    "database at gs://b/w/checkpoints/train/1/: All 8 retry attempts "
    "failed: CURL error Could not connect to server [curl_code='7']",
])
def test_storage_that_stopped_answering_is_named(message):
  line = cli._error_line(ValueError(message), "gs://b/w")  # pylint: disable=protected-access
  assert line.startswith("the storage of --workdir=gs://b/w stopped "
                         "answering ("), line
  assert line.endswith("rerun the same command to resume from the last "
                       "checkpoint."), line


@pytest.mark.slow
def test_a_full_tmpfs_is_one_line(tmp_path):
  # A real full disk: a 3 MiB tmpfs (needs root; skipped elsewhere).
  mnt = tmp_path / "small"
  mnt.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                            str(mnt)], capture_output=True)
  if mounted.returncode != 0:
    pytest.skip("cannot mount a tmpfs here")
  try:
    proc = run_cli([config_flag(), f"--workdir={mnt / 'run'}"])
  finally:
    subprocess.run(["umount", str(mnt)], check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  # One error line and no traceback (orbax's closed asyncio loop, reported
  # by tensorstore's threads, used to print "Event loop is closed" ones).
  assert proc.stderr.count("error: ") == 1, proc.stderr[-3000:]
  assert "error: no space left on the device" in proc.stderr, (
      proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
