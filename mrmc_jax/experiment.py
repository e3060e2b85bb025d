"""The main job: warm up, score, select, train on the core-set, evaluate.

`train_and_evaluate(config, workdir)` is the only function here that reads
the config; it passes explicit arguments to the library. Stages and what
each leaves in the workdir (every file written atomically, by process 0):

1. Warm-up (methods that need it): `selection.warmup_epochs` epochs on all
   data, recording per-example statistics from the training forward pass
   (`selection.loss_source="train"`) or from a separate evaluation pass over
   the training set after each epoch (`"eval"`). Checkpointed with orbax
   after every epoch (`checkpoints/warmup`); artefacts in `warmup/`.
2. Selection: `coreset/scores.npy`, `mask.npy`, `indices.npy`,
   `selection.json`, and plots in `plots/`.
3. Core-set training of a fresh model (`checkpoints/train`), evaluated on
   the test split after each epoch; metrics in `metrics.jsonl` and `tb/`.
4. `summary.json` and a printed result table.

Rerunning with the same workdir resumes: finished stages are read back, and
an interrupted stage restarts from its last epoch checkpoint. The data order
and augmentation of an epoch depend only on (seed, epoch), so a resumed run
gives the same trajectories and the same mask as an uninterrupted one.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Optional

from absl import logging
from clu import periodic_actions
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from mrmc_jax import datasets
from mrmc_jax import input_pipeline
from mrmc_jax import losses
from mrmc_jax import methods
from mrmc_jax import metrics_io
from mrmc_jax import models
from mrmc_jax import optim
from mrmc_jax import plots
from mrmc_jax import scoring
from mrmc_jax import sharding
from mrmc_jax import streaming
from mrmc_jax import train_step
from mrmc_jax import trajectory
from mrmc_jax import validation
from mrmc_jax import workdir as wd

LOSS_SOURCES = ("train", "eval")
BUDGETS = ("epochs", "steps")
INPUTS = ("memory", "stream")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# --------------------------------------------------------------------------
# Config checks (before any expensive work).


def _allowed(value, allowed, name):
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not allowed: use one of "
                     f"{', '.join(map(str, allowed))}.")


LOCAL_DATASETS = ("digits", "mnist5k", "fashion_mnist_idx", "mnist_idx")


def check_dataset_name(name: str) -> None:
  """Accepts the local sources, `npz:`/`folder:`/`tfds:` and tfds names."""
  kind, sep, _ = name.partition(":")
  if name in LOCAL_DATASETS or kind in ("npz", "folder", "tfds"):
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if name.split("/")[0] not in tfds.list_builders():
    raise ValueError(f"dataset.name={name!r} is not allowed: use one of "
                     f"{', '.join(LOCAL_DATASETS)}, npz:<path>, "
                     "folder:<path>, or a tfds image-classification name "
                     "(cifar10, cifar100, mnist, fashion_mnist, imagenet2012).")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ValueError` (one line) on any bad field, before loading data."""
  sel, tr = config.selection, config.train
  methods.check_method(sel.method)
  if sel.method != "full":
    validation.check_ratio(sel.ratio, "selection.ratio")
  _allowed(config.model.name, models.MODEL_NAMES, "model.name")
  _allowed(config.model.dtype, tuple(DTYPES), "model.dtype")
  check_dataset_name(config.dataset.name)
  check_input(config)
  _allowed(sel.loss_source, LOSS_SOURCES, "selection.loss_source")
  _allowed(sel.score, scoring.SCORES, "selection.score")
  _allowed(tr.budget, BUDGETS, "train.budget")
  _allowed(tr.warmup_schedule, ("truncated", "own"), "train.warmup_schedule")
  _allowed(tr.optimizer, optim.OPTIMIZERS, "train.optimizer")
  _allowed(tr.schedule, optim.SCHEDULES, "train.schedule")
  for name in ("epochs", "batch_size", "eval_batch_size",
               "checkpoint_every_epochs"):
    v = tr[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"train.{name}={v!r} is not allowed: it must be an "
                       "int >= 1.")
  check_lr_warmup(config)
  opts = selection_options(config)
  methods.resolve(sel.method, opts)
  need = methods.needs([sel.method], opts)
  if "trajectory" in need:
    r = sel.warmup_epochs
    if isinstance(r, bool) or not isinstance(r, int) or r < 2:
      raise ValueError(f"selection.warmup_epochs={r!r} is not allowed: it "
                       "must be an int >= 2 (R epochs to fit).")
    if not 0 <= sel.skip_epochs <= r - 2:
      raise ValueError(f"selection.skip_epochs={sel.skip_epochs!r} is not "
                       f"allowed: it must be in [0, {r - 2}] with "
                       f"warmup_epochs={r}.")
  elif need and sel.warmup_epochs < 1:
    raise ValueError(f"selection.warmup_epochs={sel.warmup_epochs!r} is not "
                     f"allowed for {sel.method}: it must be >= 1.")
  try:
    sharding.mesh_devices(config.distributed.num_devices)
  except ValueError as e:
    raise ValueError(f"distributed.{e}") from None


def check_input(config: ml_collections.ConfigDict) -> None:
  """`dataset.input`: "memory", or "stream" for tfds data sets only."""
  _allowed(config.dataset.input, INPUTS, "dataset.input")
  kind = config.dataset.name.partition(":")[0]
  if config.dataset.input == "stream" and (
      config.dataset.name in LOCAL_DATASETS or kind in ("npz", "folder")):
    raise ValueError(f"dataset.input='stream' is not allowed for "
                     f"dataset.name={config.dataset.name!r}: streaming reads "
                     "a tfds data set prepared as ArrayRecord.")


def check_lr_warmup(config: ml_collections.ConfigDict) -> None:
  """`train.lr_warmup_epochs`: in (0, epochs) with "warmup_cosine", else 0."""
  tr, sel = config.train, config.selection
  e = tr.lr_warmup_epochs
  if tr.schedule != "warmup_cosine":
    if e:
      raise ValueError(f"train.lr_warmup_epochs={e!r} is not allowed with "
                       f"train.schedule={tr.schedule!r}: use warmup_cosine.")
    return
  limit = tr.epochs
  if tr.warmup_schedule == "own":
    limit = min(limit, sel.warmup_epochs)
  if isinstance(e, bool) or not isinstance(e, (int, float)) or not (
      0 < e < limit):
    raise ValueError(f"train.lr_warmup_epochs={e!r} is not allowed: it must "
                     f"lie in (0, {limit}) with train.schedule="
                     "'warmup_cosine'.")


def selection_options(config: ml_collections.ConfigDict
                      ) -> methods.SelectionOptions:
  """The selection options of the config, as explicit arguments."""
  fields = {f.name for f in dataclasses.fields(methods.SelectionOptions)}
  kw = {k: v for k, v in config.selection.items() if k in fields}
  return methods.SelectionOptions(**kw, seed=config.seed)


# --------------------------------------------------------------------------
# Small helpers.


class _Progress:
  """A tqdm bar with ETA (process 0 only) plus CLU's steps/sec reports."""

  def __init__(self, total: int, desc: str, writer, initial: int = 0):
    self.bar = tqdm.tqdm(total=total, initial=initial, desc=desc,
                         disable=not wd.is_writer(), dynamic_ncols=True,
                         mininterval=1.0)
    self.report = periodic_actions.ReportProgress(
        num_train_steps=total, writer=writer, every_secs=60)
    self.step = initial

  def update(self):
    self.step += 1
    self.bar.update(1)
    self.report(self.step)

  def close(self):
    self.bar.close()


def _checkpoint_manager(path: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(path),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


def _restore(mngr: ocp.CheckpointManager, target: Any) -> tuple[int, Any]:
  """Returns (completed epochs, tree) from the latest checkpoint, if any."""
  step = mngr.latest_step()
  if step is None:
    return 0, target
  tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
  logging.info("Resumed from %s at epoch %d.", mngr.directory, step)
  return int(step), tree


def _scatter_rows(buf: jax.Array, ids: jax.Array, mask: jax.Array,
                  values: jax.Array) -> jax.Array:
  """buf[ids] = values for unmasked rows; padding rows are dropped."""
  rows = jnp.where(mask, ids, buf.shape[0])
  return buf.at[rows].set(values.astype(buf.dtype), mode="drop")


def _sums(stats):
  m = stats["mask"].astype(jnp.float32)
  return jnp.stack([jnp.sum(stats["loss"] * m),
                    jnp.sum(stats["correct"].astype(jnp.float32) * m),
                    jnp.sum(m)])


def _means(acc) -> dict[str, float]:
  loss, correct, count = (float(x) for x in np.asarray(acc))
  count = max(count, 1.0)
  return {"loss": loss / count, "accuracy": correct / count}


@dataclasses.dataclass
class Context:
  """What every stage needs, derived once from the config (`make_context`).

  `workdir` is where the stage at hand keeps its checkpoints and outputs; the
  comparison harness points it at one folder per warm-up and per cell.
  """
  config: ml_collections.ConfigDict
  data: datasets.Dataset
  model: Any
  apply_fn: Callable
  mesh: Any
  workdir: str
  image_shape: tuple[int, ...]

  def train_batches(self, epoch: int, ids: Optional[np.ndarray] = None):
    tr = self.config.train
    ds = input_pipeline.train_dataset(
        self.data.train, batch_size=tr.batch_size, seed=self.config.seed,
        epoch=epoch, augment=tr.augment, mean=self.data.mean,
        std=self.data.std, ids=ids, process_index=jax.process_index(),
        process_count=jax.process_count())
    for b in ds.as_numpy_iterator():
      yield sharding.shard_batch(b, self.mesh)

  def eval_batches(self, split: datasets.ArraySplit):
    ds = input_pipeline.eval_dataset(
        split, batch_size=self.config.train.eval_batch_size,
        mean=self.data.mean, std=self.data.std,
        process_index=jax.process_index(),
        process_count=jax.process_count())
    for b in ds.as_numpy_iterator():
      yield sharding.shard_batch(b, self.mesh)

  def init_state(self, tx, seed_offset: int) -> train_step.TrainState:
    rng = jax.random.fold_in(jax.random.key(self.config.seed), seed_offset)
    variables = models.init_variables(self.model, rng, self.image_shape)
    state = train_step.create_train_state(variables, tx)
    return sharding.replicate(state, self.mesh)

  def schedule_options(self, total_steps: int,
                       steps_per_epoch: int) -> dict[str, Any]:
    """Arguments of `optim.make_schedule` for a stage of this length."""
    tr = self.config.train
    warmup_steps = 0
    if tr.schedule == "warmup_cosine":
      warmup_steps = max(1, int(tr.lr_warmup_epochs * steps_per_epoch))
    return dict(learning_rate=tr.learning_rate,
                total_steps=max(1, total_steps), schedule=tr.schedule,
                end_learning_rate=tr.end_learning_rate,
                warmup_steps=warmup_steps)

  def make_tx(self, total_steps: int, steps_per_epoch: int):
    tr = self.config.train
    return optim.make_optimizer(
        optimizer=tr.optimizer, momentum=tr.momentum, nesterov=tr.nesterov,
        weight_decay=tr.weight_decay,
        **self.schedule_options(total_steps, steps_per_epoch))


def evaluate(ctx: Context, eval_fn, variables, split) -> dict[str, float]:
  """Mean loss and accuracy over a split (padded last batch masked)."""
  acc = sharding.replicate(np.zeros(3, np.float32), ctx.mesh)
  for batch in ctx.eval_batches(split):
    acc = _eval_sums(eval_fn, variables, acc, batch)
  return _means(acc)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _eval_sums(eval_fn, variables, acc, batch):
  return acc + _sums(eval_fn(variables, batch))


# --------------------------------------------------------------------------
# Stage 1: warm-up.


def run_warmup(ctx: Context, need: frozenset[str]) -> dict[str, np.ndarray]:
  """Trains R epochs on all data and returns the warm-up artefacts."""
  art_path = os.path.join(ctx.workdir, "warmup", "artefacts.npz")
  if os.path.exists(art_path):
    art = wd.read_npz(art_path)
    if all(k in art for k in _artefact_keys(need)):
      logging.info("Warm-up artefacts found; skipping the warm-up.")
      return art
  sel, tr = ctx.config.selection, ctx.config.train
  n = ctx.data.train.num_examples
  r_epochs = sel.warmup_epochs
  spe = input_pipeline.num_batches(n, tr.batch_size)
  sched_epochs = tr.epochs if tr.warmup_schedule == "truncated" else r_epochs
  tx = ctx.make_tx(max(sched_epochs, r_epochs) * spe, spe)
  step_fn = train_step.make_train_step(ctx.apply_fn, tx, with_stats=True)
  eval_fn = train_step.make_eval_step(ctx.apply_fn)
  # The training-pass trajectory is always recorded (it is free); the
  # eval-pass one costs a forward pass over the training set per epoch and
  # is recorded only when a method asks for it.
  record_eval = "eval_trajectory" in need

  def warm_step(state, traj, acc, batch, epoch):
    state, stats = step_fn(state, batch)
    # The B rows are gathered before the scatter so that recording costs
    # O(B), not an all-reduce of the [N, R] buffer (sharding.all_gather).
    traj = trajectory.record(traj, sharding.all_gather(stats, ctx.mesh),
                             epoch)
    return state, traj, acc + _sums(stats)

  warm_step = jax.jit(warm_step, donate_argnums=(0, 1, 2))

  @_jit_donating_buffer
  def eval_record(variables, traj, batch, epoch):
    return trajectory.record(
        traj, sharding.all_gather(eval_fn(variables, batch), ctx.mesh), epoch)

  state = ctx.init_state(tx, seed_offset=0)
  empty = lambda: sharding.replicate(trajectory.init_trajectory(n, r_epochs),
                                     ctx.mesh)
  tree = {"state": state, "traj": empty(),
          "seconds": np.zeros((), np.float64)}
  if record_eval:
    tree["eval_traj"] = empty()
  mngr = _checkpoint_manager(os.path.join(ctx.workdir, "checkpoints",
                                          "warmup"))
  start, tree = _restore(mngr, tree)
  state, traj, seconds = tree["state"], tree["traj"], float(tree["seconds"])
  eval_traj = tree.get("eval_traj")
  writer = metrics_io.create_writer(ctx.workdir, "warmup")
  progress = _Progress(r_epochs * spe, "warm-up", writer, initial=start * spe)
  for epoch in range(start, r_epochs):
    t0 = time.perf_counter()
    # Placed on the mesh like warm_step's outputs: an uncommitted jnp array
    # on one device would give the first call other input shardings than
    # the rest (a second compilation), and cannot join a multi-host jit.
    acc = sharding.replicate(np.zeros(3, np.float32), ctx.mesh)
    e = sharding.replicate(np.int32(epoch), ctx.mesh)
    for batch in ctx.train_batches(epoch):
      state, traj, acc = warm_step(state, traj, acc, batch, e)
      progress.update()
    if record_eval:
      for batch in ctx.eval_batches(ctx.data.train):
        eval_traj = eval_record(state.variables, eval_traj, batch, e)
    # One host sync per epoch: every example must be recorded exactly once.
    for t in (traj, eval_traj) if record_eval else (traj,):
      trajectory.check_visits(
          sharding.to_host(t["visits"][:, epoch])[:, None])
    seconds += time.perf_counter() - t0
    m = _means(acc)
    writer.write_scalars(epoch + 1, {"train_loss": m["loss"],
                                     "train_accuracy": m["accuracy"],
                                     "epoch_seconds": time.perf_counter() - t0})
    if (epoch + 1) % tr.checkpoint_every_epochs == 0 or epoch + 1 == r_epochs:
      tree = {"state": state, "traj": traj, "seconds": np.float64(seconds)}
      if record_eval:
        tree["eval_traj"] = eval_traj
      mngr.save(epoch + 1, args=ocp.args.StandardSave(tree))
      mngr.wait_until_finished()
    _epoch_done("warmup", epoch + 1)
  progress.close()
  writer.flush()

  t0 = time.perf_counter()
  art = dict(sharding.to_host(traj))
  if record_eval:
    art.update({f"eval_{k}": v
                for k, v in sharding.to_host(eval_traj).items()})
  if "features" in need:
    art["features"] = _features(ctx, state)
  if "grad_norms" in need:
    art["grad_norms"] = _grad_norms(ctx, state)
  art["warmup_seconds"] = np.float64(seconds + time.perf_counter() - t0)
  if wd.is_writer():
    wd.write_npz(art_path, **art)
  mngr.close()
  return art


def _epoch_done(stage: str, epoch: int) -> None:
  """Called after each epoch's checkpoint; tests use it to simulate a kill."""
  del stage, epoch


def _jit_donating_buffer(fn):
  """jit with argument 1 (the buffer being filled) donated."""
  return jax.jit(fn, donate_argnums=(1,))


def _artefact_keys(need: frozenset[str]) -> list[str]:
  keys = ["warmup_seconds"]
  if "trajectory" in need:
    keys += list(trajectory.FIELDS) + ["visits"]
  if "eval_trajectory" in need:
    keys += [f"eval_{k}" for k in trajectory.FIELDS] + ["eval_visits"]
  if "features" in need:
    keys.append("features")
  if "grad_norms" in need:
    keys.append("grad_norms")
  return keys


def _features(ctx: Context, state) -> np.ndarray:
  """Penultimate features of every training example (eval mode)."""
  eval_fn = train_step.make_eval_step(ctx.apply_fn, with_features=True)
  n = ctx.data.train.num_examples
  buf = None

  @_jit_donating_buffer
  def collect(variables, buf, batch):
    out = sharding.all_gather(eval_fn(variables, batch), ctx.mesh)
    return _scatter_rows(buf, out["id"], out["mask"], out["features"])

  for batch in ctx.eval_batches(ctx.data.train):
    if buf is None:
      dim = jax.eval_shape(eval_fn, state.variables, batch)["features"].shape
      buf = sharding.replicate(np.zeros((n, dim[-1]), np.float32), ctx.mesh)
    buf = collect(state.variables, buf, batch)
  return sharding.to_host(buf)


def _grad_norms(ctx: Context, state) -> np.ndarray:
  """Per-example gradient norms (GraNd) at the end of warm-up."""
  def apply_eval(variables, x):
    return ctx.apply_fn(variables, x, train=False)[0]

  n = ctx.data.train.num_examples

  @_jit_donating_buffer
  def collect(variables, buf, batch):
    norms = losses.per_example_grad_norms(
        apply_eval, variables, batch["image"], batch["label"], batch["mask"])
    out = sharding.all_gather({"id": batch["id"], "mask": batch["mask"],
                               "norms": norms}, ctx.mesh)
    return _scatter_rows(buf, out["id"], out["mask"], out["norms"])

  buf = sharding.replicate(np.zeros((n,), np.float32), ctx.mesh)
  for batch in ctx.eval_batches(ctx.data.train):
    buf = collect(state.variables, buf, batch)
  return sharding.to_host(buf)


# --------------------------------------------------------------------------
# Stage 3: core-set training.


def train_coreset(ctx: Context, ids: np.ndarray) -> dict[str, Any]:
  """Trains a fresh model on `ids` and evaluates on the test split."""
  tr = ctx.config.train
  n_full = ctx.data.train.num_examples
  spe = input_pipeline.num_batches(len(ids), tr.batch_size)
  if tr.budget == "epochs":
    total_steps = tr.epochs * spe
  else:
    total_steps = tr.epochs * input_pipeline.num_batches(n_full, tr.batch_size)
  num_epochs = -(-total_steps // spe)
  # An "epoch" of the schedule is a core-set epoch (budget "epochs") or a
  # full-data epoch (budget "steps"): total_steps / train.epochs either way.
  tx = ctx.make_tx(total_steps, total_steps // tr.epochs)
  plain_step = train_step.make_train_step(ctx.apply_fn, tx, with_stats=False)

  def step_fn(state, acc, batch):
    # Metrics are summed on device: no host sync and no eager op per step.
    state, m = plain_step(state, batch)
    return state, acc + jnp.stack([m["train_loss"], m["train_accuracy"],
                                   1.0])

  step_fn = jax.jit(step_fn, donate_argnums=(0, 1))
  eval_fn = train_step.make_eval_step(ctx.apply_fn)

  state = ctx.init_state(tx, seed_offset=1)
  mngr = _checkpoint_manager(os.path.join(ctx.workdir, "checkpoints", "train"))
  start, tree = _restore(mngr, {"state": state,
                                "seconds": np.zeros((), np.float64)})
  state, seconds = tree["state"], float(tree["seconds"])
  writer = metrics_io.create_writer(ctx.workdir, "train")
  progress = _Progress(total_steps, "core-set training", writer,
                       initial=min(start * spe, total_steps))
  test = {}
  steps_done = start * spe
  for epoch in range(start, num_epochs):
    t0 = time.perf_counter()
    # On the mesh like the step's outputs, so the sum compiles once.
    acc = sharding.replicate(np.zeros(3, np.float32), ctx.mesh)
    for batch in ctx.train_batches(epoch, ids=ids):
      if steps_done >= total_steps:
        break
      state, acc = step_fn(state, acc, batch)
      steps_done += 1
      progress.update()
    loss, accuracy, count = (float(x) for x in np.asarray(acc))
    seconds += time.perf_counter() - t0
    scalars = {"train_loss": loss / max(count, 1),
               "train_accuracy": accuracy / max(count, 1),
               "epoch_seconds": time.perf_counter() - t0}
    if ctx.data.test is not None:
      test = evaluate(ctx, eval_fn, state.variables, ctx.data.test)
      scalars.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    writer.write_scalars(epoch + 1, scalars)
    if (epoch + 1) % tr.checkpoint_every_epochs == 0 or epoch + 1 == num_epochs:
      mngr.save(epoch + 1, args=ocp.args.StandardSave(
          {"state": state, "seconds": np.float64(seconds)}))
      mngr.wait_until_finished()
    _epoch_done("train", epoch + 1)
  progress.close()
  writer.flush()
  if not test and ctx.data.test is not None:
    test = evaluate(ctx, eval_fn, state.variables, ctx.data.test)
  mngr.close()
  return {"train_seconds": seconds, "train_steps": total_steps,
          "train_epochs": num_epochs,
          "test_accuracy": test.get("accuracy", float("nan")),
          "test_loss": test.get("loss", float("nan"))}


# --------------------------------------------------------------------------
# Stage 2 and the whole job.


def _write_selection(ctx, spec, ratio, scores, mask, art, opts, seconds,
                     plot):
  out = os.path.join(ctx.workdir, "coreset")
  labels = ctx.data.train.labels
  wd.write_npy(os.path.join(out, "scores.npy"), scores.astype(np.float32))
  wd.write_npy(os.path.join(out, "indices.npy"),
               np.flatnonzero(mask).astype(np.int64))
  if plot:
    _plot_selection(ctx, spec, ratio, scores, mask, art, opts)
  # The mask goes last: its presence marks the selection as complete.
  wd.write_json(os.path.join(out, "selection.json"),
                {"selection_seconds": seconds})
  wd.write_npy(os.path.join(out, "mask.npy"), mask.astype(bool))


def _plot_selection(ctx, spec, ratio, scores, mask, art, opts):
  labels = ctx.data.train.labels
  title = f"{spec} ratio={ratio}"
  plots.score_histogram(scores, mask, os.path.join(ctx.workdir, "plots",
                                                   "score_histogram.png"),
                        title)
  plots.selected_per_class(labels, mask, ctx.data.num_classes,
                           os.path.join(ctx.workdir, "plots",
                                        "selected_per_class.png"), title)
  name, opts = methods.resolve(spec, opts)
  if name in ("mrmc", "mrmc_r"):
    traj = methods.trajectory_view(art, opts)
    s = opts.skip_epochs
    losses_ = traj["loss"][:, s:]
    valid = traj["visits"][:, s:] > 0
    q, w = scoring.fit_exponential_decay(
        losses_, valid, max_initial_ratio=opts.max_initial_ratio,
        epoch_offset=opts.epoch_offset + s)
    epochs = np.arange(losses_.shape[1]) + opts.epoch_offset + s
    fitted = np.asarray(scoring.fitted_curve(q, w, epochs))
    plots.trajectories(losses_, methods.mrmc_from_artefacts(art, opts),
                       fitted, np.arange(losses_.shape[1]) + 1 + s,
                       os.path.join(ctx.workdir, "plots", "trajectories.png"))


def format_table(summary: dict[str, Any]) -> str:
  """A short result table."""
  rows = [("method", summary["method"]), ("ratio", summary["ratio"]),
          ("selected", f"{summary['num_selected']} / "
                       f"{summary['num_examples']}"),
          ("warm-up s", f"{summary['warmup_seconds']:.1f}"),
          ("selection s", f"{summary['selection_seconds']:.2f}"),
          ("training s", f"{summary['train_seconds']:.1f}"),
          ("test accuracy", f"{100 * summary['test_accuracy']:.2f}%")]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as stored in `config.json` and checked on resume.

  How a job is launched (coordinator port, process id, mesh size) is not
  part of what it computes: every process must match process 0's
  config.json, and a job relaunched on another port must resume.
  """
  config_json = json.loads(config.to_json_best_effort())
  config_json.pop("distributed", None)
  return config_json


def load_data(config: ml_collections.ConfigDict) -> datasets.Dataset:
  """The data set: held in memory, or streamed (`dataset.input`).

  Streamed splits are `streaming.StreamSplit`s: every process reads only its
  rows of each batch, and the statistics pass is split between processes.
  """
  image_size = (None if config.dataset.image_size is None else
                (config.dataset.image_size,) * 2)
  if config.dataset.input == "stream":
    name = config.dataset.name
    return streaming.open_dataset(
        name[len("tfds:"):] if name.startswith("tfds:") else name,
        config.dataset.data_dir, image_size=image_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
        allgather=multihost_utils.process_allgather)
  return datasets.load_dataset(config.dataset.name, config.dataset.data_dir,
                               image_size=image_size)


def make_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """Loads the data, builds the model and the mesh (after validation)."""
  data = load_data(config)
  model = models.create_model(config.model.name, data.num_classes,
                              dtype=DTYPES[config.model.dtype])
  mesh = sharding.make_mesh(
      sharding.mesh_devices(config.distributed.num_devices))
  sharding.check_batch_size(config.train.batch_size, mesh)
  sharding.check_batch_size(config.train.eval_batch_size, mesh)
  return Context(config=config, data=data, model=model,
                 apply_fn=train_step.module_apply_fn(model), mesh=mesh,
                 workdir=workdir, image_shape=data.train.image_shape)


def select_coreset(ctx: Context, spec: str, art: dict[str, np.ndarray],
                   ratio: float, opts: methods.SelectionOptions,
                   cache: Optional[dict[str, Any]] = None, plot: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, float]:
  """Selects (or reads back a finished selection) in `ctx.workdir/coreset`.

  Returns `(scores, mask, selection_seconds)`.
  """
  out = os.path.join(ctx.workdir, "coreset")
  if os.path.exists(os.path.join(out, "mask.npy")):
    return (np.load(os.path.join(out, "scores.npy")),
            np.load(os.path.join(out, "mask.npy")),
            wd.read_json(os.path.join(out, "selection.json")
                         )["selection_seconds"])
  t0 = time.perf_counter()
  scores, mask = methods.select(spec, art, ctx.data.train.labels, ratio,
                                num_classes=ctx.data.num_classes, opts=opts,
                                cache=cache)
  seconds = time.perf_counter() - t0
  if wd.is_writer():
    _write_selection(ctx, spec, ratio, scores, mask, art, opts, seconds, plot)
  return scores, mask, seconds


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Runs the whole job in `workdir` and returns the summary dict."""
  validate_config(config)
  wd.claim(workdir, run_identity(config))
  sel = config.selection
  ctx = make_context(config, workdir)
  opts = selection_options(config)
  labels = ctx.data.train.labels
  ratio = 1.0 if sel.method == "full" else float(sel.ratio)

  need = methods.needs([sel.method], opts)
  art = run_warmup(ctx, need) if need else {}
  _, mask, sel_seconds = select_coreset(ctx, sel.method, art, ratio, opts)
  result = train_coreset(ctx, np.flatnonzero(mask))
  summary = {
      "method": sel.method,
      "ratio": ratio,
      "dataset": config.dataset.name,
      "model": config.model.name,
      "seed": config.seed,
      "num_examples": int(labels.shape[0]),
      "num_selected": int(mask.sum()),
      "selected_per_class": np.bincount(
          labels[mask], minlength=ctx.data.num_classes).tolist(),
      "warmup_seconds": float(art.get("warmup_seconds", 0.0)),
      "selection_seconds": float(sel_seconds),
      **result,
  }
  if wd.is_writer():
    wd.write_json(os.path.join(workdir, "summary.json"), summary)
    print(format_table(summary), flush=True)
  return summary
