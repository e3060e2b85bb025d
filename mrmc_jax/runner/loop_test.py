"""Verified checkpoints, non-finite losses and metrics.jsonl repair."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax.runner import loop
from mrmc_jax.runner import metrics_io
from mrmc_jax.runner import workdir as wd


def _tree(value):
  return {"w": np.full((4, 3), value, np.float32),
          "seconds": np.zeros((), np.float64)}


def _save(tmp_path, stage, epoch, tree, rows=()):
  metrics = tmp_path / "metrics.jsonl"
  with open(metrics, "a") as f:
    f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
  mngr = loop.checkpoint_manager(str(tmp_path / "checkpoints" / stage))
  loop.save_checkpoint(mngr, epoch, tree)
  return mngr


def _flip_bit(path, offset=None):
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 1
    f.seek(0)
    f.write(data)


def _biggest_file(path):
  files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
           if f not in (loop.MANIFEST, loop.METRICS_COPY)]
  return max(files, key=os.path.getsize)


def test_bit_flip_falls_back_to_the_previous_checkpoint(tmp_path, caplog):
  _save(tmp_path, "s", 1, _tree(1.0))
  mngr = _save(tmp_path, "s", 2, _tree(2.0))
  manifest = wd.read_json(os.path.join(loop.step_dir(mngr, 2), loop.MANIFEST))
  assert loop.METRICS_COPY in manifest["files"]
  # A sound checkpoint restores, and restoring changes none of its files.
  loop.verify_checkpoint(loop.step_dir(mngr, 2))
  _flip_bit(_biggest_file(loop.step_dir(mngr, 2)))
  with caplog.at_level("WARNING"):
    epoch, tree = loop.restore(mngr, _tree(0.0))
  assert epoch == 1 and float(tree["w"][0, 0]) == 1.0
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1 and "s/2 cannot be restored" in warnings[0]
  assert "SHA-256 differs" in warnings[0], warnings
  assert mngr.all_steps() == [1]
  loop.verify_checkpoint(loop.step_dir(mngr, 1))


def test_a_checkpoint_of_another_structure_is_superseded(tmp_path, caplog):
  # A sound checkpoint of a smaller state (a warm-up that now keeps more
  # fields) is dropped with one warning, not retried as a read error.
  mngr = _save(tmp_path, "s", 1, _tree(1.0))
  bigger = {"w": jnp.zeros((4, 3)), "seconds": jnp.zeros(()),
            "margin": jnp.zeros((4,))}
  with caplog.at_level("WARNING"):
    epoch, tree = loop.restore(mngr, bigger)
  assert epoch == 0 and tree is bigger
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "another structure" in warnings[0], warnings
  assert mngr.all_steps() == []


def test_non_finite_or_unsealed_checkpoint_is_damage(tmp_path, caplog):
  _save(tmp_path, "nan", 1, _tree(1.0))
  nan = _save(tmp_path, "nan", 2, _tree(np.nan))
  unsealed = _save(tmp_path, "unsealed", 1, _tree(1.0))
  # Epoch 2 saved by orbax, but the process ended before its manifest.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  unsealed.save(2, args=ocp.args.StandardSave(_tree(2.0)))
  unsealed.wait_until_finished()
  with caplog.at_level("WARNING"):
    assert loop.restore(nan, _tree(0.0))[0] == 1
    assert loop.restore(unsealed, _tree(0.0))[0] == 1
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 2, messages
  assert "NaN or infinite" in messages[0] and "no sha256.json" in messages[1]


def test_nan_outside_the_state_is_no_damage(tmp_path):
  # A stage's own records may hold NaN (the attribution's losses of epochs
  # still to come); only the parameters and optimizer state must be finite.
  tree = {"state": _tree(1.0), "record": np.full((3,), np.nan, np.float32)}
  mngr = _save(tmp_path, "s", 1, tree)
  epoch, got = loop.restore(mngr, {"state": _tree(0.0),
                                   "record": np.zeros((3,), np.float32)})
  assert epoch == 1 and np.isnan(got["record"]).all()
  tree["state"] = _tree(np.nan)
  mngr = _save(tmp_path, "s", 2, tree)
  assert loop.restore(mngr, tree)[0] == 1


def test_read_errors_are_retried_and_never_delete(tmp_path, monkeypatch):
  _save(tmp_path, "s", 1, _tree(1.0))
  mngr = _save(tmp_path, "s", 2, _tree(2.0))
  monkeypatch.setattr(loop, "READ_RETRY_SECONDS", 0.0)
  read = []
  sha256 = wd.file_sha256
  monkeypatch.setattr(wd, "file_sha256",
                      lambda path: read.append(path) or sha256(path))
  # Each file of the newest checkpoint is read once; the older one not.
  assert loop.restore(mngr, _tree(0.0))[0] == 2
  assert sorted(read) == sorted(set(read)) and read, read
  assert all(os.sep + "2" + os.sep in p for p in read), read
  # A storage error (not damage) on the first try: retried, restored.
  verify = loop.verify_checkpoint
  errors = [OSError("503 Service Unavailable")]

  def flaky(path):
    if errors:
      raise errors.pop()
    verify(path)

  monkeypatch.setattr(loop, "verify_checkpoint", flaky)
  epoch, tree = loop.restore(mngr, _tree(0.0))
  assert epoch == 2 and float(tree["w"][0, 0]) == 2.0
  # One that lasts: one line, and every checkpoint is kept.
  def down(path):
    raise OSError("503 Service Unavailable")

  monkeypatch.setattr(loop, "verify_checkpoint", down)
  with pytest.raises(OSError, match=r"s/2 cannot be read \(OSError: 503 "
                     r"Service Unavailable\) after 3 tries; it was kept"):
    loop.restore(mngr, _tree(0.0))
  assert mngr.all_steps() == [1, 2]


def test_non_finite_loss_names_epoch_and_learning_rate():
  loop.check_finite({"train_loss": 0.5, "train_accuracy": float("nan")},
                    "warmup epoch 1")
  with pytest.raises(loop.NonFiniteError, match=(
      r"train_loss is nan at warmup epoch 3 \(learning rate 1e\+06.*"
      r"train.learning_rate")):
    loop.check_finite({"train_loss": float("nan")}, "warmup epoch 3", 1e6)
  with pytest.raises(loop.NonFiniteError, match="loss holds 1 NaN"):
    loop.check_finite_arrays({"loss": np.array([1.0, np.inf]),
                              "visits": np.array([1, 1])}, "warm-up")


def _rows(stage, epochs):
  return [{"stage": stage, "epoch": e, "step": 10 * e, "train_loss": 1.0 / e}
          for e in epochs]


def _lines(rows):
  return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


@pytest.mark.parametrize("damage", ["truncate", "merge_lines", "delete"])
def test_damaged_metrics_rebuilt_from_the_checkpoint_copy(tmp_path, damage):
  path = str(tmp_path / "metrics.jsonl")
  durable = _lines(_rows("warmup", [1, 2, 3]) + _rows("train", [1, 2]))
  # Train epoch 3's row was committed, its checkpoint not saved.
  data = durable + _lines(_rows("train", [3]))
  if damage == "truncate":
    data = data[:len(durable) // 2]
  elif damage == "merge_lines":
    data = bytearray(data)
    data[data.index(b"\n")] ^= 1  # Rows 1 and 2 become one line.
    data = bytes(data)
  else:
    data = None
  if data is not None:
    open(path, "wb").write(data)
  rows, warning = metrics_io.resume_rows(path, "train", 2, durable)
  assert "rebuilt from that copy" in warning
  assert open(path, "rb").read() == durable
  assert [r["epoch"] for r in rows] == [1, 2]


def test_sound_metrics_keep_rows_up_to_the_checkpoint(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  durable = _lines(_rows("warmup", [1, 2]) + _rows("train", [1]))
  torn = _lines(_rows("train", [2, 3]))[:-7]  # A kill while appending.
  open(path, "wb").write(durable + torn)
  rows, warning = metrics_io.resume_rows(path, "train", 1, durable)
  assert warning is None and open(path, "rb").read() == durable
  assert [r["epoch"] for r in rows] == [1]


def test_damaged_metrics_without_a_copy_refused(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  data = bytearray(_lines(_rows("a", [1, 2, 3])))
  data[data.index(b"\n")] ^= 1
  open(path, "wb").write(bytes(data))
  with pytest.raises(wd.CorruptFileError, match="line 1 is damaged"):
    metrics_io.resume_rows(path, "b", 0, None)
  # Rows lost where the checkpoint says they exist.
  open(path, "wb").write(_lines(_rows("b", [1])))
  with pytest.raises(wd.CorruptFileError, match=r"holds epochs \[1\]"):
    metrics_io.resume_rows(path, "b", 2, None)


def test_durable_metrics_is_the_newest_sound_copy(tmp_path):
  _save(tmp_path, "warmup", 1, _tree(1.0), _rows("warmup", [1]))
  _save(tmp_path, "train", 1, _tree(1.0), _rows("train", [1]))
  want = _lines(_rows("warmup", [1]) + _rows("train", [1]))
  assert loop.durable_metrics(str(tmp_path / "checkpoints")) == want
  _flip_bit(str(tmp_path / "checkpoints" / "train" / "1" / loop.METRICS_COPY))
  assert loop.durable_metrics(str(tmp_path / "checkpoints")) == _lines(
      _rows("warmup", [1]))


def test_atomic_files_honour_the_umask_and_stale_temporaries_go(tmp_path):
  wd.write_json(str(tmp_path / "a.json"), {"x": 1})
  open(tmp_path / "b.txt", "w").close()
  assert (os.stat(tmp_path / "a.json").st_mode & 0o777 ==
          os.stat(tmp_path / "b.txt").st_mode & 0o777)
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / ".tmp-mask.npy1234").write_bytes(b"x")
  with wd.lock(str(tmp_path)):
    pass
  assert not (tmp_path / "sub" / ".tmp-mask.npy1234").exists()
  assert (tmp_path / "a.json").exists()


def _toy_stage(tmp_path, name, num_epochs=3, spe=4, starts=None, **kwargs):
  """A stage whose result depends on every step and their order."""

  def epoch_fn(tree, epoch, tick):
    k = loop.resume_step(tree)
    if starts is not None:
      starts.append((epoch, k))
    w, acc = tree["w"], (tree["acc"] if k else np.zeros(3, np.float32))
    for i in range(k, spe):
      w = (w * np.float32(1.1) + np.float32(epoch * spe + i)).astype(
          np.float32)
      acc = acc + np.float32([i, 1.0, 2.0])
      tick({**tree, "w": w, "acc": acc})
    return {**tree, "w": w, "acc": acc}, {"train_loss": float(acc[0])}

  return loop.run_epochs(
      stage="s", workdir=str(tmp_path / name),
      checkpoint_dir=str(tmp_path / name / "checkpoints" / "s"),
      tree={"w": np.zeros((4, 3), np.float32), "acc": np.zeros(3, np.float32),
            "seconds": np.zeros((), np.float64)},
      num_epochs=num_epochs, steps_per_epoch=spe, epoch_fn=epoch_fn,
      checkpoint_every=1, **kwargs)


def test_preemption_notice_saves_the_step_then_resume_is_exact(
    tmp_path, monkeypatch):
  ref = _toy_stage(tmp_path, "ref")
  # Orbax's preemption notice (the sync point all hosts reach) at the 6th
  # step this process takes: epoch 2, step 2.
  monkeypatch.setattr(loop, "_steps_taken", [0])
  monkeypatch.setattr(loop.ocp.CheckpointManager, "reached_preemption",
                      lambda self, step: step == 6)
  with pytest.raises(loop.cli.Interrupted) as e:
    _toy_stage(tmp_path, "run", checkpoint_every_steps=3)
  assert e.value.signum == loop.signal.SIGTERM
  steps = tmp_path / "run" / "checkpoints" / ("s" + loop.STEPS_SUFFIX)
  # Epoch 1's step-3 checkpoint was superseded by its epoch checkpoint.
  assert sorted(os.listdir(steps)) == ["6"]
  loop.verify_checkpoint(str(steps / "6"))
  monkeypatch.undo()
  starts = []
  got = _toy_stage(tmp_path, "run", checkpoint_every_steps=3, starts=starts)
  assert starts == [(1, 2), (2, 0)]  # Resumed at epoch 2, step 2.
  np.testing.assert_array_equal(got["w"], ref["w"])
  rows = metrics_io.read_rows(str(tmp_path / "run" / "metrics.jsonl"))
  ref_rows = metrics_io.read_rows(str(tmp_path / "ref" / "metrics.jsonl"))
  assert [(r["epoch"], r["train_loss"]) for r in rows] == [
      (r["epoch"], r["train_loss"]) for r in ref_rows] == [
          (1, 6.0), (2, 6.0), (3, 6.0)]
  assert os.listdir(steps) == []


def test_checkpoint_every_steps_must_be_a_non_negative_int(tmp_path):
  with pytest.raises(ValueError, match="checkpoint_every_steps=-1"):
    _toy_stage(tmp_path, "bad", checkpoint_every_steps=-1)


def test_sums_ignore_nan_on_rows_out_of_the_mask():
  # A label outside [0, C) under jit: NaN statistics, mask False.
  stats = {"loss": jnp.array([1.0, jnp.nan, 3.0]),
           "correct": jnp.array([True, False, False]),
           "mask": jnp.array([True, False, True])}
  np.testing.assert_allclose(loop.sums(stats), [4.0, 1.0, 2.0])


def test_the_epoch_function_resumes_stops_and_finishes():
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  seen = []

  def step(carried, acc, batch, e):
    seen.append((batch, int(e)))
    return {"state": carried["state"] + batch}, acc + jnp.array(
        [batch, 1.0, 1.0])

  def finish(tree, epoch):
    return {**tree, "done": epoch}, {"extra": 7.0}

  epoch_fn = loop.make_epoch_fn(
      step, lambda epoch, start: iter(range(start, 5)), mesh=mesh,
      steps_per_epoch=5, total_steps=9, finish=finish)
  ticks = []
  # Resumed at step 2 of epoch 1 with the sums of its first two steps:
  # steps 2 and 3 run (step 9 of the stage is its last), then `finish`.
  tree = {"state": 0.0, "acc": jnp.array([1.0, 2.0, 2.0]), "x": 1,
          "epoch_step": np.array([1, 2], np.int64)}
  tree, scalars = epoch_fn(tree, 1, ticks.append)
  assert seen == [(2, 1), (3, 1)] and tree["state"] == 5.0
  assert [t["state"] for t in ticks] == [2.0, 5.0] and tree["done"] == 1
  np.testing.assert_allclose(tree["acc"], [6.0, 4.0, 4.0])
  assert scalars == {"train_loss": 1.5, "train_accuracy": 1.0, "extra": 7.0}
  # A tree without `acc` never resumes mid-epoch: fresh sums, `tick()`.
  calls = []
  epoch_fn = loop.make_epoch_fn(
      step, lambda epoch, start: iter(range(start, 2)), mesh=mesh)
  tree, scalars = epoch_fn({"state": 0.0, "epoch_step": np.zeros(2, int)}, 0,
                           lambda *a: calls.append(a))
  assert calls == [(), ()] and "acc" not in tree
  assert scalars == {"train_loss": 0.5, "train_accuracy": 1.0}
