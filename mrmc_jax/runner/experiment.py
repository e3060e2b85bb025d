"""The main job: warm up, score, select, train on the core-set, evaluate.

`train_and_evaluate(config, workdir)` reads the config (through
`runner.config`) and passes explicit arguments on. Stages and what each
leaves in the workdir (every file written atomically, by process 0):

1. Warm-up (methods that need it; `runner.warmup`): `warmup/artefacts.npz`,
   checkpoints in `checkpoints/warmup`.
2. Selection: `coreset/scores.npy`, `mask.npy`, `indices.npy`,
   `selection.json`, and plots in `plots/`.
3. Core-set training of a fresh model (`checkpoints/train`), evaluated on
   the test split after each epoch; metrics in `metrics.jsonl` and `tb/`.
4. `summary.json` and a printed result table.

Rerunning with the same workdir resumes: finished stages are read back, and
an interrupted stage restarts from its last epoch checkpoint. The data order
and augmentation of an epoch depend only on (seed, epoch), so a resumed run
gives the same trajectories and the same mask as an uninterrupted one. The
run holds the workdir's lock throughout; every stage output carries a stamp
of the config and data it was computed from (docs/reliability.md).
"""

import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Iterator, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mrmc_jax import data as data_lib
from mrmc_jax import methods
from mrmc_jax import scoring
from mrmc_jax import train_step
from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import context as context_lib
from mrmc_jax.runner import loop
from mrmc_jax.runner import plots
from mrmc_jax.runner import warmup
from mrmc_jax.runner import workdir as wd

Context = context_lib.Context


def evaluate(ctx: Context, eval_fn, variables, split) -> dict[str, float]:
  """Mean loss and accuracy over a split (padded last batch masked)."""
  acc = loop.zeros_on(ctx.mesh)
  for batch in ctx.eval_batches(split):
    acc = _eval_sums(eval_fn, variables, acc, batch)
  return loop.means(acc)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _eval_sums(eval_fn, variables, acc, batch):
  return acc + loop.sums(eval_fn(variables, batch))


def data_fingerprint(ctx: Context) -> dict[str, Any]:
  """`data.fingerprint` of the context's loaded data (every example)."""
  return data_lib.fingerprint(ctx.data)


def train_coreset(ctx: Context, ids: np.ndarray, *, epochs: int,
                  budget: str = "epochs", stamp: str = "") -> dict[str, Any]:
  """Trains a fresh model on `ids` and evaluates on the test split.

  Args:
    ctx: the run's context.
    ids: int `[K]` global ids of the core-set.
    epochs: training epochs (`budget="epochs"`), or full-data epochs' worth
      of steps (`budget="steps"`).
    budget: "epochs" or "steps".
    stamp: what the training is computed from, kept in its checkpoints.

  Returns:
    `train_seconds, train_steps, train_epochs, test_accuracy, test_loss`.
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
  tx = ctx.make_tx(total_steps, total_steps // epochs)
  plain_step = train_step.make_train_step(ctx.apply_fn, tx, with_stats=False)

  def step_fn(state, acc, batch):
    # Metrics are summed on device: no host sync and no eager op per step.
    state, m = plain_step(state, batch)
    return state, acc + jnp.stack([m["train_loss"], m["train_accuracy"],
                                   1.0])

  step_fn = jax.jit(step_fn, donate_argnums=(0, 1))
  eval_fn = train_step.make_eval_step(ctx.apply_fn)

  def epoch_fn(tree, epoch, tick):
    state = tree["state"]
    k = loop.resume_step(tree)  # > 0: resumed mid-epoch
    acc = tree["acc"] if k else loop.zeros_on(ctx.mesh)
    done = epoch * spe + k
    for batch in ctx.train_batches(epoch, ids=ids, start=k):
      if done >= total_steps:
        break
      state, acc = step_fn(state, acc, batch)
      done += 1
      tick({**tree, "state": state, "acc": acc})
    loss, accuracy, count = (float(x) for x in np.asarray(acc))
    return {**tree, "state": state, "acc": acc}, {
        "train_loss": loss / max(count, 1),
        "train_accuracy": accuracy / max(count, 1)}

  test = {}

  def after_epoch(tree, epoch):
    del epoch
    if ctx.data.test is None:
      return {}
    test.update(evaluate(ctx, eval_fn, tree["state"].variables,
                         ctx.data.test))
    return {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}

  tree = loop.run_epochs(
      stage="train", workdir=ctx.workdir,
      checkpoint_dir=os.path.join(ctx.workdir, "checkpoints", "train"),
      tree={"state": ctx.init_state(tx, seed_offset=1),
            "acc": loop.zeros_on(ctx.mesh),
            "seconds": np.zeros((), np.float64)},
      num_epochs=num_epochs, steps_per_epoch=spe, epoch_fn=epoch_fn,
      checkpoint_every=ctx.checkpoint_every, total_steps=total_steps,
      checkpoint_every_steps=ctx.checkpoint_every_steps,
      after_epoch=after_epoch, learning_rate=ctx.make_schedule(total_steps, total_steps // epochs),
      stamp=stamp)
  if not test and ctx.data.test is not None:
    test = evaluate(ctx, eval_fn, tree["state"].variables, ctx.data.test)
  return {"train_seconds": float(tree["seconds"]), "train_steps": total_steps,
          "train_epochs": num_epochs,
          "test_accuracy": test.get("accuracy", float("nan")),
          "test_loss": test.get("loss", float("nan"))}


def _write_selection(ctx, spec, ratio, scores, mask, art, opts, timing,
                     plot):
  out = os.path.join(ctx.workdir, "coreset")
  wd.write_npy(os.path.join(out, "scores.npy"), scores.astype(np.float32))
  wd.write_npy(os.path.join(out, "indices.npy"),
               np.flatnonzero(mask).astype(np.int64))
  if plot:
    _plot_selection(ctx, spec, ratio, scores, mask, art, opts)
  # The mask goes last: its presence marks the selection as complete.
  wd.write_json(os.path.join(out, "selection.json"), timing)
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
    # The trajectories of the highest- and lowest-scored examples (by the
    # method's own scores) with their fitted curves: one fit, for the plot.
    traj = methods.trajectory_view(art, opts)
    s = opts.skip_epochs
    losses_ = traj["loss"][:, s:]
    q, w = scoring.fit_exponential_decay(
        losses_, traj["visits"][:, s:] > 0,
        max_initial_ratio=opts.max_initial_ratio,
        epoch_offset=opts.epoch_offset + s)
    epochs = np.arange(losses_.shape[1]) + opts.epoch_offset + s
    fitted = np.asarray(scoring.fitted_curve(q, w, epochs))
    plots.trajectories(losses_, scores, fitted,
                       np.arange(losses_.shape[1]) + 1 + s,
                       os.path.join(ctx.workdir, "plots", "trajectories.png"))


def format_table(summary: dict[str, Any]) -> str:
  """A short result table."""
  rows = [("method", summary["method"]), ("ratio", summary["ratio"]),
          ("selected", f"{summary['num_selected']} / "
                       f"{summary['num_examples']}"),
          ("warm-up s", f"{summary['warmup_seconds']:.1f}"),
          ("selection s", f"{summary['selection_seconds']:.2f} (+ "
                          f"{summary['selection_compile_seconds']:.2f} "
                          "compiling)"),
          ("training s", f"{summary['train_seconds']:.1f}"),
          ("test accuracy", f"{100 * summary['test_accuracy']:.2f}%")]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


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


def _read_selection(out: str, stamp: str):
  """A finished selection's (scores, mask, timing), or None to redo it."""
  timing_path = os.path.join(out, "selection.json")
  try:
    timing = wd.read_json(timing_path)
    wd.check_stamp(timing_path, timing.get("stamp", ""), stamp)
    scores = wd.read_npy(os.path.join(out, "scores.npy"))
    mask = wd.read_npy(os.path.join(out, "mask.npy"))
  except (wd.CorruptFileError, FileNotFoundError, AttributeError) as e:
    # Selection is deterministic given the artefacts: recompute it.
    logging.warning("%s; selecting again from the warm-up artefacts.", e)
    return None
  if mask.dtype != bool or scores.shape != mask.shape:
    logging.warning("%s is damaged (%s %s, scores %s); selecting again from "
                    "the warm-up artefacts.", os.path.join(out, "mask.npy"),
                    mask.dtype, mask.shape, scores.shape)
    return None
  return scores, mask, timing


def select_coreset(ctx: Context, spec: str, art: dict[str, np.ndarray],
                   ratio: float, opts: methods.SelectionOptions,
                   cache: Optional[dict[str, Any]] = None, plot: bool = True,
                   stamp: str = "") -> tuple[np.ndarray, np.ndarray,
                                             dict[str, float]]:
  """Selects (or reads back a finished selection) in `ctx.workdir/coreset`.

  Returns `(scores, mask, timing)`; timing holds `selection_seconds` (wall
  time less JAX compilation) and `compile_seconds`: the first selection of
  a method compiles, later ones reuse the compiled functions, and mixing
  the two would make the first cell of a method look slow.
  """
  out = os.path.join(ctx.workdir, "coreset")
  if os.path.exists(os.path.join(out, "mask.npy")):
    got = _read_selection(out, stamp)
    if got is not None:
      return got
  with compile_seconds() as compiling:
    t0 = time.perf_counter()
    scores, mask = methods.select(spec, art, ctx.data.train.labels, ratio,
                                  num_classes=ctx.data.num_classes, opts=opts,
                                  cache=cache)
    wall = time.perf_counter() - t0
  timing = {"selection_seconds": max(wall - compiling[0], 0.0),
            "compile_seconds": compiling[0], "stamp": stamp}
  if wd.is_writer():
    _write_selection(ctx, spec, ratio, scores, mask, art, opts, timing, plot)
  return scores, mask, timing


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Runs the whole job in `workdir` and returns the summary dict.

  Everything that can be checked before loading the data is (the config,
  the workdir and its identity); the rest (the data, the core-set size) is
  checked before the warm-up, and the identity is written only then.

  Raises:
    ValueError: bad config, data or workdir (one line, nothing written).
  """
  config_lib.validate_config(config)
  identity = config_lib.run_identity(config)
  wd.check_workdir(workdir, "main", identity)
  with wd.lock(workdir):
    return _train_and_evaluate(config, workdir, identity)


def _train_and_evaluate(config, workdir, identity):
  sel = config.selection
  ctx = context_lib.make_context(config, workdir)
  labels = ctx.data.train.labels
  ratio = 1.0 if sel.method == "full" else float(sel.ratio)
  if sel.method != "full":
    config_lib.check_coreset_size(ratio, int(labels.shape[0]))
  data = data_fingerprint(ctx)
  wd.claim(workdir, identity, data)
  context_lib.save_stats(ctx, data)  # A relaunch skips the statistics pass.
  opts = config_lib.selection_options(config)
  warm_stamp = wd.stamp(config_lib.warmup_identity(config, config.seed), data)
  sel_stamp = wd.stamp(warm_stamp, sel.method, ratio,
                       dataclasses.asdict(opts))
  run_stamp = wd.stamp(identity, data)
  summary_path = os.path.join(workdir, "summary.json")
  if os.path.exists(summary_path):
    # A finished run is read back: no stage (and no checkpoint) is needed.
    try:
      summary = wd.read_json(summary_path)
    except wd.CorruptFileError as e:
      logging.warning("%s; finishing the run again.", e)
    else:
      wd.check_stamp(summary_path, summary.get("stamp"), run_stamp)
      if wd.is_writer():
        print(format_table(summary), flush=True)
      return summary

  need = methods.needs([sel.method], opts)
  art = (warmup.run_warmup(ctx, need, stamp=warm_stamp,
                           **config_lib.warmup_settings(config))
         if need else {})
  _, mask, timing = select_coreset(ctx, sel.method, art, ratio, opts,
                                   stamp=sel_stamp)
  result = train_coreset(ctx, np.flatnonzero(mask),
                         epochs=config.train.epochs,
                         budget=config.train.budget, stamp=run_stamp)
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
      "selection_seconds": float(timing["selection_seconds"]),
      "selection_compile_seconds": float(timing.get("compile_seconds", 0.0)),
      **result,
      "stamp": run_stamp,
  }
  if wd.is_writer():
    wd.write_json(summary_path, summary)
    print(format_table(summary), flush=True)
  return summary
