"""Scale-out: the same statistics and core-set on 1 device, 8 and 2 processes.

pytest sees 8 simulated CPU devices (conftest.py); a 1-device mesh is
`make_mesh(jax.devices()[:1])`. Losses may differ in the last bits (the
gradient is summed in another order across devices), so they are compared
with a tolerance; the core-set mask must be identical.

The two-process test starts two local JAX processes on CPU (gloo
collectives, jax's default for CPU) through `tests/multihost_worker.py`,
which runs `experiments/main.py` and records what each process read and
wrote; every process runs under `timeout`.
"""

import collections
import contextlib
import functools
import json
import os

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax import models
from mrmc_jax import scoring
from mrmc_jax import selection
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import trajectory
from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.data import sources
from mrmc_jax.data import splits
from mrmc_jax.runner import experiment
import multihost  # pylint: disable=g-bad-import-order


# 203 = 6 * 32 + 11: the last batch is mostly padding, and 5 of the 8
# devices get only padding rows in it.
N, BATCH, EPOCHS = 203, 32, 4
# Losses near 0 are logsumexp(logits) - logit, whose rounding error is
# absolute (~ float32 eps * |logit|), hence atol beside rtol.
TOL = {"rtol": 1e-5, "atol": 1e-5}
# The tiny end-to-end job, as overrides of configs/default.py.
JOB = {"selection.warmup_epochs": 3, "train.epochs": 1,
       "train.batch_size": 128}


@functools.cache
def _digits() -> splits.Dataset:
  return sources.load_dataset("digits")


def _subset(n: int) -> splits.ArraySplit:
  train = _digits().train
  return splits.ArraySplit(train.images[:n], train.labels[:n])


@contextlib.contextmanager
def count_compiles():
  """Counts XLA compilations by function name, e.g. `jit(warm_step)`."""
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      counts[kwargs.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _warmup(mesh, split, epochs=EPOCHS, corrupt=None):
  """Warm-up epochs as `runner.warmup.run_warmup` runs them, at library level.

  Args:
    mesh: the device mesh.
    split: the training examples.
    epochs: number of epochs R.
    corrupt: optional `corrupt(epoch, step, batch) -> batch` that alters a
      host batch before it is sharded (to fake a data-path bug).

  Returns:
    `(traj, info)`: the host trajectory `[N, R]` and a dict with `traces`
    (how often the step was traced), `compiles`, `stats_spec` (the
    PartitionSpec of the per-example stats of the step), `traj_replicated` and
    `buffer_collectives` (HLO lines of collectives on an `[N, R]` array).
  """
  data = _digits()
  model = models.create_model("mlp", data.num_classes)
  tx = optax.sgd(0.05, momentum=0.9)
  step_fn = train_step.make_train_step(train_step.module_apply_fn(model), tx)
  traces = []

  def warm_step(state, traj, batch, epoch):
    traces.append(1)
    state, stats = step_fn(state, batch)
    traj = trajectory.record(traj, sharding.all_gather(stats, mesh), epoch)
    return state, traj

  warm_step = jax.jit(warm_step, donate_argnums=(0, 1))
  variables = models.init_variables(model, jax.random.key(0),
                                    split.image_shape)
  state = sharding.replicate(train_step.create_train_state(variables, tx),
                             mesh)
  traj = sharding.replicate(
      trajectory.init_trajectory(split.num_examples, epochs), mesh)
  with count_compiles() as compiles:
    for epoch in range(epochs):
      e = sharding.replicate(np.int32(epoch), mesh)
      ds = input_pipeline.train_dataset(
          split, batch_size=BATCH, seed=0, epoch=epoch, augment=False,
          mean=data.mean, std=data.std)
      for k, batch in enumerate(ds.as_numpy_iterator()):
        if corrupt is not None:
          batch = corrupt(epoch, k, batch)
        batch = sharding.shard_batch(batch, mesh)
        state, traj = warm_step(state, traj, batch, e)
  hlo = warm_step.lower(state, traj, batch, e).compile().as_text()
  _, stats = jax.jit(step_fn).lower(state, batch).compile().output_shardings
  buffer = f"[{split.num_examples},{epochs}]"
  info = {"traces": len(traces), "compiles": compiles["jit(warm_step)"],
          "stats_spec": stats["loss"].spec,
          "traj_replicated": traj["loss"].sharding.is_fully_replicated,
          "buffer_collectives": [l.strip() for l in hlo.splitlines()
                                 if buffer in l and "all-" in l]}
  return sharding.to_host(traj), info


def _mask(loss: np.ndarray, labels: np.ndarray) -> np.ndarray:
  scores = scoring.mrmc_scores(loss)
  return np.asarray(selection.select_mask_host(scores, labels, 0.3,
                                          num_classes=10))


@pytest.mark.slow
def test_eight_devices_give_one_device_statistics_and_mask():
  assert jax.device_count() == 8
  split = _subset(N)
  one, _ = _warmup(sharding.make_mesh(jax.devices()[:1]), split)
  eight, info = _warmup(sharding.make_mesh(), split)
  # One trace, one compilation for all 4 * 7 steps: the epoch (traced) and
  # the donated state and trajectory keep their shardings from call to call.
  assert info["traces"] == 1 and info["compiles"] == 1, info
  # Statistics come back split by batch; the buffer they land in does not.
  assert info["stats_spec"] == P(sharding.DATA_AXIS)
  assert info["traj_replicated"]
  # Recording moves the B rows, never the [N, R] buffer, between devices.
  assert not info["buffer_collectives"], info["buffer_collectives"]
  for traj in (one, eight):
    np.testing.assert_array_equal(traj["visits"], np.ones((N, EPOCHS)))
  for field in ("loss", "p_true", "el2n"):
    np.testing.assert_allclose(eight[field], one[field], **TOL, err_msg=field)
  np.testing.assert_array_equal(eight["correct"], one["correct"])
  mask = _mask(one["loss"], split.labels)
  assert mask.sum() == selection.budget(0.3, N)
  np.testing.assert_array_equal(_mask(eight["loss"], split.labels), mask)


@pytest.mark.parametrize("fault", ["dropped", "duplicated"])
def test_lost_or_repeated_example_is_reported_on_eight_devices(fault):
  split = _subset(N)

  def corrupt(epoch, step, batch):
    if epoch == 1 and step == 2:
      batch = {k: v.copy() for k, v in batch.items()}
      if fault == "dropped":
        batch["mask"][29] = False  # as if a row never reached device 7
      else:
        batch["id"][29] = batch["id"][2]  # device 7 repeats device 0's row
    return batch

  order = input_pipeline.epoch_order(N, 0, 1)
  lost = int(order[2 * BATCH + 29])
  traj, _ = _warmup(sharding.make_mesh(), split, epochs=2, corrupt=corrupt)
  report = trajectory.visit_report(traj["visits"])
  assert list(report) == [1]
  np.testing.assert_array_equal(report[1]["missing"], [lost])
  np.testing.assert_array_equal(
      report[1]["duplicated"],
      [] if fault == "dropped" else [int(order[2 * BATCH + 2])])
  with pytest.raises(trajectory.VisitError, match=rf"first ids \[{lost}\]"):
    trajectory.check_visits(traj["visits"])


def test_experiment_stops_on_a_duplicated_example(tmp_path, monkeypatch):
  shard_batch = sharding.shard_batch

  def duplicating(local_batch, mesh):
    ids = local_batch["id"].copy()
    ids[-1] = ids[0]  # the last device repeats the first one's example
    return shard_batch({**local_batch, "id": ids}, mesh)

  monkeypatch.setattr(sharding, "shard_batch", duplicating)
  with pytest.raises(trajectory.VisitError, match="epoch 0"):
    experiment.train_and_evaluate(_config(), str(tmp_path / "w"))


def _config(**overrides):
  return base.set_fields(default.get_config(), {**JOB, **overrides})


@pytest.mark.parametrize("value", [0, 9])
def test_bad_num_devices_fails_before_work(tmp_path, value):
  with pytest.raises(ValueError,
                     match=rf"distributed.num_devices={value} is not allowed"):
    experiment.train_and_evaluate(
        _config(**{"distributed.num_devices": value}), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  """The tiny digits job on a 1-device mesh; returns its workdir."""
  workdir = str(tmp_path_factory.mktemp("one_device") / "run")
  experiment.train_and_evaluate(_config(**{"distributed.num_devices": 1}),
                                workdir)
  return workdir


def _same_run(workdir, ref, rows_only=False):
  np.testing.assert_array_equal(
      np.load(os.path.join(workdir, "coreset", "mask.npy")),
      np.load(os.path.join(ref, "coreset", "mask.npy")))
  if rows_only:
    # A multi-process run of MRMC keeps each host's rows of the warm-up:
    # nothing gathered, no artefacts file; the scores match.
    assert not os.path.exists(os.path.join(workdir, "warmup",
                                           "artefacts.npz"))
    np.testing.assert_allclose(
        np.load(os.path.join(workdir, "coreset", "scores.npy")),
        np.load(os.path.join(ref, "coreset", "scores.npy")), **TOL)
    return
  with np.load(os.path.join(workdir, "warmup", "artefacts.npz")) as art, \
       np.load(os.path.join(ref, "warmup", "artefacts.npz")) as want:
    np.testing.assert_array_equal(art["visits"], want["visits"])
    np.testing.assert_allclose(art["loss"], want["loss"], **TOL)


def test_experiment_on_eight_devices_selects_the_one_device_mask(
    tmp_path, one_device_run):
  workdir = str(tmp_path / "eight")
  with count_compiles() as compiles:
    experiment.train_and_evaluate(_config(), workdir)
  _same_run(workdir, one_device_run)
  # The warm-up step, the core-set step and the test-set sums compile once.
  assert compiles["jit(warm_step)"] == 1, compiles
  assert compiles["jit(step_fn)"] == 1, compiles
  assert compiles["jit(_eval_sums)"] == 1, compiles


def test_imagenet_tpu_config():
  from mrmc_jax.configs import imagenet_tpu  # pylint: disable=g-import-not-at-top
  config = imagenet_tpu.get_config()
  assert config.train.batch_size == 4096 and config.model.dtype == "bfloat16"
  assert config.train.learning_rate == pytest.approx(1.6)
  assert config.dataset.input == "stream"
  assert config.train.schedule == "warmup_cosine"
  assert config.train.lr_warmup_epochs == 5.0
  # TPU pods need no arguments: main.py passes these Nones through.
  assert config.distributed.initialize
  assert config.distributed.coordinator_address is None
  assert config.distributed.num_processes is None
  assert config.distributed.process_id is None
  # The learning rate follows a batch size given on the command line.
  assert imagenet_tpu.get_config("train.batch_size=1024"
                                 ).train.learning_rate == pytest.approx(0.4)


def _launch(workdir, record, tag, *worker_flags, processes=2,
            local_devices=2):
  return multihost.launch(
      workdir, record, tag, [f"--config.{k}={v}" for k, v in JOB.items()],
      *worker_flags, processes=processes, local_devices=local_devices)


@pytest.mark.slow
def test_two_processes_resume_and_select_the_one_device_mask(
    tmp_path, one_device_run):
  workdir, record = str(tmp_path / "run"), str(tmp_path / "record")
  # Killed after 2 of the 3 warm-up epochs, then relaunched (another port)
  # to resume from the orbax checkpoint every process saved and restores.
  codes, out = _launch(workdir, record, "a", "--stop_after_warmup_epoch=2")
  assert codes == [3, 3], out[0][-3000:] + out[1][-3000:]
  assert not os.path.exists(os.path.join(workdir, "coreset", "mask.npy"))
  codes, out = _launch(workdir, record, "b")
  assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
  _same_run(workdir, one_device_run, rows_only=True)

  # Each process fed its devices only its own half of every global batch,
  # with global ids: rows [p * B/2, (p + 1) * B/2).
  batch, n = JOB["train.batch_size"], _digits().train.num_examples
  fed = [{**np.load(os.path.join(record, f"process_{p}_a.npz")),
          **np.load(os.path.join(record, f"process_{p}_b.npz"))}
         for p in range(2)]
  for epoch in range(JOB["selection.warmup_epochs"]):
    order = input_pipeline.epoch_order(n, 0, epoch)
    steps = input_pipeline.num_batches(n, batch)
    want = np.full(steps * batch, input_pipeline.PAD_ID)
    want[:n] = order
    want = want.reshape(steps, batch)
    for p in range(2):
      np.testing.assert_array_equal(
          fed[p][f"warmup_{epoch}"],
          want[:, p * batch // 2:(p + 1) * batch // 2])
  assert fed[0]["train_0"].shape[1] == batch // 2

  # Only process 0 writes files, metrics and the result table.
  for p, tag in ((0, "a"), (0, "b"), (1, "a"), (1, "b")):
    with open(os.path.join(record, f"process_{p}_{tag}.json")) as f:
      info = json.load(f)
    assert info["process_count"] == 2 and info["device_count"] == 4
    if p == 1:
      assert info["written"] == [], info
  with open(os.path.join(record, "process_0_b.json")) as f:
    written = json.load(f)["written"]
  assert {"coreset/mask.npy", "summary.json"} <= set(written), written
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  # One row per warm-up epoch, none lost or repeated by the kill.
  assert [r["epoch"] for r in rows
          if r["stage"] == "warmup" and "train_loss" in r] == [1, 2, 3]
  assert "test accuracy" in out[0] and "test accuracy" not in out[1]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["el2n", "forgetting(per_class=True)"])
def test_two_processes_select_a_peer_row_by_row(tmp_path, spec):
  # A peer that scores row by row (`row_keys`), with one global budget or
  # per-class quotas: 2 processes take the rows path (no artefacts file)
  # and select the one-device run's mask.
  ref = str(tmp_path / "one")
  experiment.train_and_evaluate(
      _config(**{"distributed.num_devices": 1, "selection.method": spec}), ref)
  workdir, record = str(tmp_path / "two"), str(tmp_path / "record")
  codes, out = multihost.launch(
      workdir, record, "a",
      [f"--config.{k}={v}" for k, v in
       {**JOB, "selection.method": spec}.items()])
  assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
  _same_run(workdir, ref, rows_only=True)
