"""The stages every job composes: load, warm-up, select, train, evaluate.

Each stage is a value (`Stage`): its stamp (what its output is computed
from: the config fields marked as affecting it in `runner.fields`, its
explicit inputs, and the stamp of the stage it reads), its output files,
its done-check (the stored output is read back and verified against its
content hashes and stamp) and its run. One `run_stage` runs every stage:
on every call, finished job or not, the outputs it returns are verified,
and damage takes the recompute path with one warning naming the file.
Every done-check ends in `decide`, the one place where a multi-process job
takes process 0's answer. `run_cell` is the select -> train -> summary
cell that `main` (one cell) and `compare` (a grid) share.

What each stage leaves in its workdir (every file written atomically, by
process 0):
  warm-up: `warmup/artefacts.npz`, checkpoints in `checkpoints/warmup`
    (on a multi-process job of a row-by-row method, `rows_only`, the
    checkpoints only: each host takes its rows from the last one);
  select: `coreset/scores.npy`, `indices.npy`, `selection.json` (timing,
    stamp, and the SHA-256 of each array file), `mask.npy` (last: it marks
    the selection complete), and plots in `plots/` when asked;
  train: checkpoints in `checkpoints/train` whose stamp includes the
    mask's hash, metrics in `metrics.jsonl` and `tb/`;
  a job's summary (`write_summary`) carries its stamp and content hash.
"""

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mrmc_jax import data as data_lib
from mrmc_jax import methods
from mrmc_jax import models
from mrmc_jax import selection as selection_lib
from mrmc_jax import sharded_selection
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import validation
from mrmc_jax.data import noise as noise_lib
from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import context as context_lib
from mrmc_jax.runner import fields
from mrmc_jax.runner import loop
from mrmc_jax.runner import plots
from mrmc_jax.runner import storage
from mrmc_jax.runner import warmup as warmup_lib
from mrmc_jax.runner import workdir as wd

Context = context_lib.Context


def decide(done: bool) -> bool:
  """Whether a stage is done: the one decision every done-check ends in.

  Every process reads the workdir; with several processes, process 0's
  answer is the job's, so that all of them take the same path.
  """
  if jax.process_count() > 1:
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(done)))
  return done


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage as a value: what `run_stage` needs to read or make its outputs.

  Attributes:
    name: the stage's name (`warmup`, `select`, `train`).
    stamp: what its outputs are computed from (the config fields of its
      mark in `runner.fields`, its explicit inputs, and the stamp of the
      stage it reads); every output carries it.
    outputs: the files it leaves, the last one marking it complete.
    read: the done-check: the outputs read back and verified (stamp and
      content hashes), or None if the stage has not finished. Raises
      `workdir.CorruptFileError` naming a damaged file, and
      `workdir.ConfigMismatchError` for outputs of another stamp.
    run: computes the outputs from the stage's inputs, writes them
      (process 0, atomically, the completing file last) and returns them.
    redo: what a damaged output leads to, in words (for the warning).
  """
  name: str
  stamp: str
  outputs: tuple[str, ...]
  read: Callable[[], Any]
  run: Callable[[], Any]
  redo: str


def run_stage(stage: Stage) -> Any:
  """The stage's outputs: read back and verified, or computed.

  Every call verifies every output it returns, whether the job finished or
  not: a damaged output is never returned but recomputed from what it
  depends on, with one warning naming the file. Process 0's answer
  (`decide`) says which path every process takes.

  Raises:
    workdir.ConfigMismatchError: the outputs are of another stamp.
  """
  try:
    got = stage.read()
  except wd.CorruptFileError as e:
    logging.warning("%s; %s.", e, stage.redo)
    got = None
  if decide(got is not None):
    return got
  return stage.run()


def _damaged(path: str, why: str) -> wd.CorruptFileError:
  return wd.CorruptFileError(f"{path} {why}")


def read_verified_json(path: str) -> dict[str, Any]:
  """A stage's JSON record (a dict); `CorruptFileError` naming it if not."""
  try:
    got = wd.read_json(path)
  except FileNotFoundError:
    raise _damaged(path, "is missing") from None
  except wd.CorruptFileError:
    raise _damaged(path, "is damaged (not valid JSON)") from None
  if not isinstance(got, dict):
    raise _damaged(path, "is damaged (not a JSON object)")
  return got


def check_recorded(record_path: str, hashes: Any,
                   paths: dict[str, str]) -> None:
  """Checks a stage's files against the SHA-256 its record holds.

  Args:
    record_path: the record (a stage's JSON file), named in the message.
    hashes: the record's `{key: SHA-256}` (anything else: none recorded).
    paths: `{key: path}` of the files to check.

  Raises:
    workdir.CorruptFileError: a file is missing or differs (named).
  """
  record = os.path.basename(record_path)
  for key, path in paths.items():
    if not storage.exists(path):
      raise _damaged(path, "is missing")
    recorded = hashes.get(key) if isinstance(hashes, dict) else None
    if recorded is None:
      raise _damaged(path, f"has no SHA-256 in {record} (the record is "
                     "damaged or from an older version)")
    if recorded != wd.file_sha256(path):
      raise _damaged(path, f"does not match its SHA-256 in {record}")


def run_fresh_on_mismatch(run: Callable[[], Any], checkpoint_dir: str,
                          what: str) -> Any:
  """`run()`, or, if its checkpoints are of another stamp, `run()` again
  from scratch once they are removed (one warning).

  The workdir's config and data were checked when it was claimed: such
  checkpoints were trained on another training set (their stamp holds it)
  and are never resumed from.
  """
  try:
    return run()
  except wd.ConfigMismatchError as e:
    logging.warning("%s; training %s again from scratch.", e, what)
    if wd.is_writer():
      storage.rmtree(checkpoint_dir)
      storage.rmtree(checkpoint_dir + loop.STEPS_SUFFIX)
    return run()


def array_sha256(array: np.ndarray) -> str:
  """SHA-256 of an array's `.npy` bytes (as `workdir.write_npy` writes)."""
  buf = io.BytesIO()
  np.save(buf, np.asarray(array))
  return hashlib.sha256(buf.getvalue()).hexdigest()


# --------------------------------------------------------------------------
# Load.


def load(config: ml_collections.ConfigDict, workdir: str
         ) -> tuple[Context, dict[str, Any]]:
  """The run's context (data, model, mesh) and its data fingerprint.

  With `dataset.label_noise` > 0 the training labels (and a validation
  split's, which is carved from them first) carry the noise of
  `dataset.label_noise_kind` (`data.noise`: symmetric, or class-conditional
  from look-alike pairs or a target matrix file); the flipped ids travel
  in `ctx.flipped`, and `keep_noise` writes them to `noise/flipped.npy`
  (and `noise/flipped_validation.npy`) once the workdir is claimed.
  """
  proxy = config.selection.warmup_model
  if proxy and proxy not in models.MODEL_NAMES:
    raise ValueError(f"selection.warmup_model={proxy!r} is not allowed: use "
                     f"one of {', '.join(models.MODEL_NAMES)} (or empty).")
  fraction = noise_lib.check_fraction(config.dataset.label_noise)
  validation.check_seed(config.dataset.label_noise_seed,
                        "dataset.label_noise_seed")
  matrix = _noise_matrix(config.dataset.label_noise_kind, fraction)
  if fraction > 0 and config.dataset.input != "memory":
    raise ValueError(f"dataset.label_noise={fraction} needs "
                     "dataset.input=memory: streamed splits are read by id "
                     "and cannot be relabelled.")
  ctx = context_lib.make_context(config, workdir)
  if fraction > 0:
    data, flipped, flipped_val = noise_lib.add_label_noise(
        ctx.data, fraction, config.dataset.label_noise_seed,
        targets=noise_targets(config.dataset.label_noise_kind, matrix,
                              ctx.data.num_classes, config.dataset.name),
        noisy_test=bool(config.dataset.validation_fraction))
    kept = {"flipped.npy": flipped}
    if flipped_val is not None:
      kept["flipped_validation.npy"] = flipped_val
    ctx = dataclasses.replace(ctx, data=data, flipped=kept)
  return ctx, data_fingerprint(ctx)


def _noise_matrix(kind: str, fraction: float) -> Optional[np.ndarray]:
  """Checks `dataset.label_noise_kind` before any data is loaded; the
  matrix of a "matrix:<path>" kind (`.npy`, else text), else None."""
  try:
    form, arg = noise_lib.parse_kind(kind)
  except ValueError as e:
    raise ValueError(f"dataset.{e}") from None
  if form == noise_lib.SYMMETRIC:
    return None
  if fraction == 0:
    raise ValueError(f"dataset.label_noise_kind={kind!r} is not allowed with "
                     "dataset.label_noise=0: set the fraction each class "
                     "flips (or leave the kind 'symmetric').")
  if form != "matrix":
    return None
  if not storage.exists(arg):
    raise ValueError(f"dataset.label_noise_kind={kind!r} is not allowed: no "
                     f"file {arg!r}.")
  raw = storage.read_bytes(arg)
  try:
    if arg.endswith(".npy"):
      return np.load(io.BytesIO(raw), allow_pickle=False)
    return np.loadtxt(io.StringIO(raw.decode()), delimiter=None
                      if b"," not in raw else ",", ndmin=2)
  except ValueError as e:
    raise ValueError(f"dataset.label_noise_kind={kind!r}: {arg!r} is not a "
                     f"numeric matrix ({e}).".replace("\n", " ")) from None


def noise_targets(kind: str, matrix: Optional[np.ndarray], num_classes: int,
                  dataset: str) -> Optional[np.ndarray]:
  """The target matrix of `dataset.label_noise_kind` (None: symmetric).

  Args:
    kind: the config's `dataset.label_noise_kind`.
    matrix: the file's matrix of a "matrix:<path>" kind (`_noise_matrix`).
    num_classes: C of the loaded data set.
    dataset: `dataset.name` (a named look-alike map is checked against it).
  """
  form, arg = noise_lib.parse_kind(kind)
  try:
    if form == "pairs":
      return noise_lib.pair_targets(arg, num_classes, dataset)
    if form == "matrix":
      return noise_lib.check_targets(matrix, num_classes, name=repr(arg))
  except ValueError as e:
    raise ValueError(f"dataset.{e}" if str(e).startswith("label_noise")
                     else f"dataset.label_noise_kind={kind!r}: {e}") from None
  return None


def keep_noise(ctx: Context, workdir: str) -> None:
  """Writes (or checks) the flipped ids of `ctx`, after `workdir.claim`."""
  for name, ids in ctx.flipped.items():
    _keep_flipped(workdir, name, ids)


def keep_claimed(ctx: Context, workdir: str, data: dict[str, Any]) -> None:
  """What every job keeps once `workdir.claim` has accepted `data`.

  The flipped ids (`keep_noise`) and the input statistics the load
  computed (`context.save_stats`), the streamed files' records and labels
  (`context.save_files`, `save_labels`), so that a relaunch of any job
  (main, compare, attribution) skips the statistics pass and reads no
  whole file.
  """
  keep_noise(ctx, workdir)
  context_lib.save_stats(ctx, data)
  context_lib.save_files(ctx)
  context_lib.save_labels(ctx)


def _keep_flipped(workdir: str, name: str, ids: np.ndarray) -> None:
  path = os.path.join(workdir, "noise", name)
  if not wd.is_writer():
    return
  if storage.exists(path):
    try:
      if np.array_equal(wd.read_npy(path), ids):
        return
      logging.warning("%s differs from the flipped ids of this config; "
                      "writing them again.", path)
    except wd.CorruptFileError as e:
      logging.warning("%s; writing the flipped ids again.", e)
  wd.write_npy(path, np.asarray(ids, np.int64))


def flipped_ids(workdir: str) -> Optional[np.ndarray]:
  """The training ids whose labels were flipped (`load`), or None."""
  path = os.path.join(workdir, "noise", "flipped.npy")
  return wd.read_npy(path) if storage.exists(path) else None


def data_fingerprint(ctx: Context) -> dict[str, Any]:
  """`data.fingerprint` of the context's loaded data (every example).

  Streamed files enter as `context.file_records` checked them at load.
  """
  return data_lib.fingerprint(ctx.data, files=ctx.file_records or None)


# --------------------------------------------------------------------------
# Warm-up.


def warmup_stamp(config: ml_collections.ConfigDict, seed: int,
                 data: dict[str, Any]) -> str:
  """What a warm-up of seed `seed` computes from (the fields marked W)."""
  return wd.stamp(fields.affecting(config, fields.W), int(seed), data)


def rows_only(specs: Iterable[str], opts: methods.SelectionOptions) -> bool:
  """Whether the warm-up keeps each process's rows (no gather): a
  multi-process job whose methods all score row by row (`row_keys`) from
  the trajectories alone."""
  specs = list(specs)
  return (jax.process_count() > 1 and all(
      methods.row(s).row_keys is not None for s in specs) and
          methods.needs(specs, opts) <= warmup_lib.ROW_NEEDS)


def warmup(ctx: Context, config: ml_collections.ConfigDict,
           need: frozenset[str], stamp: str, *, rows_only: bool = False
           ) -> dict[str, np.ndarray]:
  """The warm-up artefacts the methods `need` ({} if none): read or run.

  With `rows_only` (`rows_only(...)`), this process's rows of the
  trajectories from the warm-up's run or its last checkpoint (verified
  there), and no artefacts file (`warmup.run_warmup`).
  """
  if not need:
    return {}
  if rows_only:
    return warmup_lib.run_warmup(
        warmup_context(ctx, config), need, stamp=stamp, rows_only=True,
        **config_lib.warmup_settings(config))
  return run_stage(Stage(
      "warmup", stamp,
      tuple(os.path.join(ctx.workdir, f) for f in warmup_lib.OUTPUTS),
      read=lambda: warmup_lib.read_artefacts(ctx.workdir, need, stamp),
      run=lambda: warmup_lib.run_warmup(
          warmup_context(ctx, config), need, stamp=stamp,
          **config_lib.warmup_settings(config)),
      # The warm-up is deterministic: the artefacts come out the same.
      redo="recomputing the warm-up artefacts from its last checkpoint"))


def warmup_context(ctx: Context, config: ml_collections.ConfigDict
                   ) -> Context:
  """The context the warm-up trains: `selection.warmup_model` if set."""
  name = config.selection.warmup_model
  if not name or name == config.model.name:
    return ctx
  model = models.create_model(name, ctx.data.num_classes,
                              dtype=config_lib.DTYPES[config.model.dtype])
  return dataclasses.replace(ctx, model=model,
                             apply_fn=train_step.module_apply_fn(model))


# --------------------------------------------------------------------------
# Selection.


def selection_stamp(warm_stamp: str, config: ml_collections.ConfigDict,
                    spec: str, ratio: float,
                    opts: methods.SelectionOptions) -> str:
  """What a selection computes from: the warm-up, spec, ratio, options.

  The options are the built-in methods' and those the method reads: a
  method registered elsewhere in the process (a plug-in, a test) does not
  change the stamps of the others.
  """
  name, resolved = methods.resolve(spec, opts)
  keep = (set(methods.option_readers(builtin_only=True)) |
          set(methods.get_method(name).options) | {"seed", "epochs"})
  declared = methods.declared()
  # An option at its `absent` value: the stamp of a version without it.
  values = {k: v for k, v in resolved.asdict().items()
            if k in keep and not declared[k].omitted(v)}
  return wd.stamp(warm_stamp, fields.affecting(config, fields.S), spec,
                  float(ratio), values)


@dataclasses.dataclass(frozen=True)
class Selection:
  """A selection's outputs: scores float32 `[N]`, mask bool `[N]`, timing.

  `unchanged`: the mask is the one the workdir's later outputs (the
  summary) were computed from: read back verified, or recomputed with the
  SHA-256 that `selection.json` recorded. False for a new selection.
  """
  scores: np.ndarray
  mask: np.ndarray
  timing: dict[str, Any]
  unchanged: bool = True


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


@contextlib.contextmanager
def compile_seconds() -> Iterator[list[float]]:
  """Sums JAX's tracing, lowering and compilation time while inside.

  Yields a one-element list holding the running total in seconds.
  """
  total = [0.0]

  def listener(event, duration, **kwargs):
    del kwargs
    if event in _COMPILE_EVENTS:
      total[0] += duration

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield total
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


_SELECTION_FILES = ("scores.npy", "indices.npy", "mask.npy")


def read_selection(out: str, stamp: str) -> Optional[Selection]:
  """A finished, verified selection in `out`, or None if not finished.

  Raises:
    workdir.CorruptFileError: a file of it is damaged (named).
    workdir.ConfigMismatchError: it was computed from something else.
  """
  if not storage.exists(os.path.join(out, "mask.npy")):
    return None
  timing_path = os.path.join(out, "selection.json")
  timing = read_verified_json(timing_path)
  wd.check_stamp(timing_path, timing.get("stamp", ""), stamp)
  check_recorded(timing_path, timing.get("sha256", {}),
                 {name: os.path.join(out, name) for name in _SELECTION_FILES})
  scores = wd.read_npy(os.path.join(out, "scores.npy"))
  mask = wd.read_npy(os.path.join(out, "mask.npy"))
  return Selection(scores, mask, timing)


def _recorded_mask_sha256(out: str) -> Optional[str]:
  """The mask's SHA-256 that `selection.json` recorded, if it is readable."""
  try:
    got = read_verified_json(os.path.join(out, "selection.json"))
  except wd.CorruptFileError:
    return None
  hashes = got.get("sha256")
  return hashes.get("mask.npy") if isinstance(hashes, dict) else None


def select(ctx: Context, spec: str, art: dict[str, np.ndarray],
           ratio: float, opts: methods.SelectionOptions, stamp: str, *,
           cache: Optional[dict[str, Any]] = None,
           plot: bool = False) -> Selection:
  """Selects (or reads back a verified selection) in `ctx.workdir/coreset`.

  The timing holds `selection_seconds` (wall time less JAX compilation) and
  `compile_seconds`: the first selection of a method compiles, later ones
  reuse the compiled functions, and mixing the two would make the first
  cell of a method look slow.
  """
  out = os.path.join(ctx.workdir, "coreset")

  def run():
    recorded = _recorded_mask_sha256(out)
    with compile_seconds() as compiling:
      t0 = time.perf_counter()
      if "row_ids" in art:
        scores, mask = _select_rows(ctx, spec, art, ratio, opts)
      else:
        scores, mask = methods.select(spec, art, ctx.data.train.labels,
                                      ratio, num_classes=ctx.data.num_classes,
                                      opts=opts, cache=cache)
      wall = time.perf_counter() - t0
    scores = np.asarray(scores, np.float32)
    mask = np.asarray(mask, bool)
    indices = np.flatnonzero(mask).astype(np.int64)
    timing = {"selection_seconds": max(wall - compiling[0], 0.0),
              "compile_seconds": compiling[0], "stamp": stamp,
              "sha256": {"scores.npy": array_sha256(scores),
                         "indices.npy": array_sha256(indices),
                         "mask.npy": array_sha256(mask)}}
    if wd.is_writer():
      wd.write_npy(os.path.join(out, "scores.npy"), scores)
      wd.write_npy(os.path.join(out, "indices.npy"), indices)
      if plot:
        _plot_selection(ctx, spec, ratio, scores, mask, art, opts)
      # The mask goes last: its presence marks the selection as complete.
      wd.write_json(os.path.join(out, "selection.json"), timing)
      wd.write_npy(os.path.join(out, "mask.npy"), mask)
    return Selection(scores, mask, timing,
                     unchanged=recorded == timing["sha256"]["mask.npy"])

  return run_stage(Stage(
      "select", stamp, tuple(os.path.join(out, n) for n in (
          "scores.npy", "indices.npy", "selection.json", "mask.npy")),
      read=lambda: read_selection(out, stamp), run=run,
      # Selection is deterministic given the artefacts.
      redo="selecting again from the warm-up artefacts"))


def _select_rows(ctx: Context, spec: str, art: dict[str, np.ndarray],
                 ratio: float, opts: methods.SelectionOptions
                 ) -> tuple[np.ndarray, np.ndarray]:
  """`methods.select` on this process's rows (`art["row_ids"]`): the
  method's `row_keys` where the rows lie, `sharded_selection.select_rows`
  across the hosts; the scores `[N]` come to every host (4 bytes each)."""
  name, opts = methods.resolve(spec, opts)
  method = methods.get_method(name)
  labels = ctx.data.train.labels
  n = int(labels.shape[0])
  selection_lib.check_nonzero_budget(ratio, n)
  rows = {k: v for k, v in art.items() if np.ndim(v) and k != "row_ids"}
  scores, keys, balanced = method.row_keys(rows, opts, ctx.data.num_classes)
  mask = sharded_selection.select_rows(
      keys, art["row_ids"], labels, ratio, num_classes=ctx.data.num_classes,
      mesh=ctx.mesh, class_balanced=balanced, tie_seed=opts.seed)
  where = sharding.rows_sharding(ctx.mesh)
  ids, scores = art["row_ids"], np.asarray(scores, np.float32)

  def block(index):
    want = np.arange(sharding.padded_rows(n, ctx.mesh))[index[0]]
    out = np.zeros(len(want), np.float32)
    real = want[want < n]
    out[:len(real)] = scores[np.searchsorted(ids, real)]
    return out

  every = sharding.to_host(jax.make_array_from_callback(
      (sharding.padded_rows(n, ctx.mesh),), where, block))[:n]
  return methods.check_output(method, (every, mask), n, ratio)


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
  curves = methods.get_method(name).curves
  if curves is not None and "row_ids" not in art:  # Not of some rows only.
    # A method that fits curves to the trajectories (its row's plot hook):
    # those of the highest- and lowest-scored examples with their fits.
    observed, fitted, epochs = curves(art, opts)
    plots.trajectories(observed, scores, fitted, epochs,
                       os.path.join(ctx.workdir, "plots", "trajectories.png"))


# --------------------------------------------------------------------------
# Training and evaluation.


def result_stamp(sel_stamp: str, config: ml_collections.ConfigDict) -> str:
  """What a trained core-set's result computes from (the fields marked T)."""
  return wd.stamp(sel_stamp, fields.affecting(config, fields.T))


def checkpoint_stamp(result: str, mask: np.ndarray) -> str:
  """The training checkpoints' stamp: the result's and the mask's hash."""
  return wd.stamp(result, array_sha256(np.asarray(mask, bool)))


def evaluate(ctx: Context, eval_fn, variables, split) -> dict[str, float]:
  """Mean loss and accuracy over a split (padded last batch masked)."""
  acc = loop.zeros_on(ctx.mesh)
  for batch in ctx.eval_batches(split):
    acc = _eval_sums(eval_fn, variables, acc, batch)
  return loop.means(acc)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _eval_sums(eval_fn, variables, acc, batch):
  return acc + loop.sums(eval_fn(variables, batch))


def train(ctx: Context, ids: np.ndarray, *, epochs: int,
          budget: str = "epochs", stamp: str = "") -> dict[str, Any]:
  """Trains a fresh model on `ids` and evaluates on the test split.

  Args:
    ctx: the run's context.
    ids: int `[K]` global ids of the core-set (checked by the caller).
    epochs: training epochs (`budget="epochs"`), or full-data epochs' worth
      of steps (`budget="steps"`).
    budget: "epochs" or "steps" (checked by the config check).
    stamp: what the training is computed from (`checkpoint_stamp`), kept in
      its checkpoints.

  Returns:
    `train_seconds, train_steps, train_epochs, test_accuracy, test_loss`
    (NaN without a test split).
  """
  n_full = ctx.data.train.num_examples
  spe = input_pipeline.num_batches(len(ids), ctx.batch_size)
  if budget == "epochs":
    total_steps = epochs * spe
  else:
    total_steps = epochs * input_pipeline.num_batches(n_full, ctx.batch_size)
  num_epochs = -(-total_steps // spe)
  # An "epoch" of the schedule is a core-set epoch (budget "epochs") or a
  # full-data epoch (budget "steps"): total_steps / epochs either way.
  length = (total_steps, total_steps // epochs)
  tx = ctx.make_tx(*length)
  plain_step = train_step.make_train_step(ctx.apply_fn, tx, with_stats=False)

  def step_fn(state, acc, batch):
    # Metrics are summed on device: no host sync and no eager op per step.
    state, m = plain_step(state, batch)
    return state, acc + jnp.stack([m["train_loss"], m["train_accuracy"],
                                   1.0])

  step_fn = jax.jit(step_fn, donate_argnums=(0, 1))
  eval_fn = train_step.make_eval_step(ctx.apply_fn)

  def step(carried, acc, batch, e):
    del e
    state, acc = step_fn(carried["state"], acc, batch)
    return {"state": state}, acc

  epoch_fn = loop.make_epoch_fn(
      step, lambda epoch, start: ctx.train_batches(epoch, ids=ids,
                                                   start=start),
      mesh=ctx.mesh, steps_per_epoch=spe, total_steps=total_steps)

  def test_metrics(tree, epoch=None):
    del epoch
    if ctx.data.test is None:
      return {}
    m = evaluate(ctx, eval_fn, tree["state"].variables, ctx.data.test)
    return {"test_loss": m["loss"], "test_accuracy": m["accuracy"]}

  checkpoint_dir = os.path.join(ctx.workdir, "checkpoints", "train")

  def run():
    return loop.run_epochs(
        stage="train", workdir=ctx.workdir, checkpoint_dir=checkpoint_dir,
        tree={"state": ctx.init_state(tx, seed_offset=1),
              "acc": loop.zeros_on(ctx.mesh),
              "seconds": np.zeros((), np.float64)},
        num_epochs=num_epochs, steps_per_epoch=spe, epoch_fn=epoch_fn,
        checkpoint_every=ctx.checkpoint_every, total_steps=total_steps,
        checkpoint_every_steps=ctx.checkpoint_every_steps,
        after_epoch=test_metrics, learning_rate=ctx.make_schedule(*length),
        stamp=stamp)

  # Checkpoints of another core-set (their stamp holds the mask's hash)
  # are never resumed from.
  tree = run_fresh_on_mismatch(run, checkpoint_dir, "the core-set")
  # The last epoch's test metrics, evaluated again from the final state
  # (the evaluation is deterministic; a resumed finished stage has none).
  test = test_metrics(tree)
  return {"train_seconds": float(tree["seconds"]), "train_steps": total_steps,
          "train_epochs": num_epochs,
          "test_accuracy": test.get("test_accuracy", float("nan")),
          "test_loss": test.get("test_loss", float("nan"))}


# --------------------------------------------------------------------------
# Summaries: a job's (or a cell's) finished result.


def _content_sha256(summary: dict[str, Any]) -> str:
  body = {k: v for k, v in summary.items() if k != "sha256"}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()
                        ).hexdigest()


def write_summary(path: str, summary: dict[str, Any]) -> dict[str, Any]:
  """Writes `summary` (with its stamp) and its content hash; returns it."""
  summary = {**summary, "sha256": _content_sha256(summary)}
  if wd.is_writer():
    wd.write_json(path, summary)
  return summary


def _read_summary(path: str, stamp: str) -> Optional[dict[str, Any]]:
  """A finished summary, verified, or None (`Stage.read`)."""
  if not storage.exists(path):
    return None
  summary = read_verified_json(path)
  if summary.get("sha256") != _content_sha256(summary):
    raise _damaged(path, "does not match its SHA-256")
  wd.check_stamp(path, summary.get("stamp"), stamp)
  return summary


def read_summary(path: str, stamp: str) -> Optional[dict[str, Any]]:
  """A finished, verified summary, or None to finish the work again.

  A damaged summary gets one warning naming it.

  Raises:
    workdir.ConfigMismatchError: it was computed from something else.
  """
  try:
    summary = _read_summary(path, stamp)
  except wd.CorruptFileError as e:
    logging.warning("%s; finishing the work again.", e)
    summary = None
  return summary if decide(summary is not None) else None


@dataclasses.dataclass(frozen=True)
class CellStamps:
  """The stamps of one cell's stages (warm-up, selection, result)."""
  warmup: str
  selection: str
  result: str


def cell_stamps(config: ml_collections.ConfigDict, seed: int,
                data: dict[str, Any], spec: str, ratio: float,
                opts: methods.SelectionOptions) -> CellStamps:
  """The stamps of the cell (spec, ratio, seed): `opts` of that seed."""
  warm = warmup_stamp(config, seed, data)
  sel = selection_stamp(warm, config, spec, ratio, opts)
  return CellStamps(warm, sel, result_stamp(sel, config))


def run_cell(ctx: Context, config: ml_collections.ConfigDict, spec: str,
             art: dict[str, np.ndarray], ratio: float,
             opts: methods.SelectionOptions, stamps: CellStamps,
             summary_fn: Callable[[Selection, dict[str, Any]],
                                  dict[str, Any]], *,
             cache: Optional[dict[str, Any]] = None, plot: bool = False
             ) -> tuple[dict[str, Any], bool]:
  """One cell in `ctx.workdir`: select, train, write `summary.json`.

  The selection is verified (or recomputed) on every call, finished cell
  or not; the summary is read back only if it is intact and its mask is
  the verified one, else the core-set is trained (from its last
  checkpoint) and the summary written again.

  Args:
    ctx: the cell's context (its workdir holds `coreset/` and the summary).
    config: the job's config (the training fields).
    spec, ratio, opts: the method spec, core-set fraction and options.
    art: the warm-up artefacts (verified) the selection reads.
    stamps: the cell's stamps (`cell_stamps`).
    summary_fn: `(selection, train result) -> summary` (without stamp).
    cache: shared across the cells of one warm-up (`methods.select`).
    plot: draw the selection's plots when it is computed.

  Returns:
    `(summary, computed)`: the verified or written summary, and whether it
    was written now.
  """
  sel = select(ctx, spec, art, ratio, opts, stamps.selection, cache=cache,
               plot=plot)
  # Every host trains on the mask it computed: they must agree (one line).
  storage.check_hosts_agree(sel.mask, f"the core-set mask of {spec}")
  path = os.path.join(ctx.workdir, "summary.json")

  def run():
    result = train(ctx, np.flatnonzero(sel.mask), epochs=config.train.epochs,
                   budget=config.train.budget,
                   stamp=checkpoint_stamp(stamps.result, sel.mask))
    return write_summary(path, {**summary_fn(sel, result),
                                "stamp": stamps.result}), True

  def read():
    # A summary of a mask that was not verified is not returned (the mask
    # it was trained on is unknown): the training resumes from its
    # checkpoints if they hold this mask.
    got = _read_summary(path, stamps.result) if sel.unchanged else None
    return None if got is None else (got, False)

  return run_stage(Stage("train", stamps.result, (path,), read=read, run=run,
                         redo="finishing the work again"))
