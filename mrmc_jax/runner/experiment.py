"""The main job: warm up, score, select, train on the core-set, evaluate.

`train_and_evaluate(config, workdir)` checks the config, claims the workdir
and composes the stages of `runner.stages` (see there for what each
leaves in the workdir), then writes `summary.json` and prints a result
table.

Rerunning with the same workdir resumes: finished stages are read back and
verified (a finished run's too: a damaged output is recomputed with one
warning naming it, never returned), and an interrupted stage restarts from
its last epoch checkpoint. The data order
and augmentation of an epoch depend only on (seed, epoch), so a resumed run
gives the same trajectories and the same mask as an uninterrupted one. The
run holds the workdir's lock throughout; every stage output carries a stamp
of the config and data it was computed from (docs/reliability.md).
"""

from typing import Any

import ml_collections
import numpy as np

from mrmc_jax import methods
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import stages
from mrmc_jax.runner import workdir as wd


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


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Runs the whole job in `workdir` and returns the summary dict.

  Everything that can be checked before loading the data is (the config,
  every method option, the workdir and its identity); the rest (the data,
  the core-set size) is checked before the warm-up, and the identity is
  written only then.

  Raises:
    ValueError: bad config, data or workdir (one line, nothing written).
  """
  config_lib.validate_config(config)
  config_lib.check_main(config)
  identity = config_lib.run_identity(config)
  wd.check_workdir(workdir, "main", identity)
  with wd.lock(workdir):
    return _train_and_evaluate(config, workdir, identity)


def _train_and_evaluate(config, workdir, identity):
  spec = config.selection.method
  ctx, data = stages.load(config, workdir)
  labels = ctx.data.train.labels
  ratio = 1.0 if config_lib.ratio_free(spec) else float(config.selection.ratio)
  config_lib.check_coreset_size(ratio, int(labels.shape[0]))
  wd.claim(workdir, identity, data)
  stages.keep_claimed(ctx, workdir, data)
  opts = config_lib.selection_options(config)
  stamps = stages.cell_stamps(config, config.seed, data, spec, ratio, opts)
  # Every stage's outputs are verified on every run, finished or not; a
  # damaged one is recomputed (one warning naming it), never returned.
  # On a multi-process job of a method that scores row by row, each host
  # keeps its own rows of the warm-up (nothing gathered).
  art = stages.warmup(ctx, config, methods.needs([spec], opts),
                      stamps.warmup,
                      rows_only=stages.rows_only([spec], opts))

  def summary_fn(sel, result):
    return {
        "method": spec,
        "ratio": ratio,
        "dataset": config.dataset.name,
        "model": config.model.name,
        "seed": config.seed,
        "num_examples": int(labels.shape[0]),
        "num_selected": int(sel.mask.sum()),
        "selected_per_class": np.bincount(
            labels[sel.mask], minlength=ctx.data.num_classes).tolist(),
        "warmup_seconds": float(art.get("warmup_seconds", 0.0)),
        "selection_seconds": float(sel.timing["selection_seconds"]),
        "selection_compile_seconds": float(
            sel.timing.get("compile_seconds", 0.0)),
        **result,
    }

  summary, _ = stages.run_cell(ctx, config, spec, art, ratio, opts, stamps,
                               summary_fn, plot=True)
  if wd.is_writer():
    print(format_table(summary), flush=True)
  return summary
