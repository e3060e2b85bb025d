"""Comparison harness: methods x ratios x seeds from one config.

One warm-up per seed serves every method and ratio (`warmup/seed_<s>/`).
Each cell (method spec, ratio, seed) selects from that warm-up, trains a
fresh model on its core-set and writes `cells/<method>/ratio_<r>/seed_<s>/
summary.json`; a cell with a summary is never redone, so a killed harness
resumes where it stopped, and a finished cell keeps no checkpoints.

The workdir's identity is `grid.json` (`config.grid_identity`): the config
less the grid's methods, ratios and seeds. A grid extended by a method, a
ratio, a seed or `full` therefore reuses the warm-ups and finished cells of
the workdir; each warm-up and cell carries a stamp of what it was computed
from. A workdir of `experiments/main.py` is refused. After every cell the
harness rewrites:
  `results.csv`    one row per finished cell;
  `results.md`     test accuracy mean +- std over seeds per method and ratio,
                   with the full-data reference, selection times, each
                   cell's total cost and the reuses after which selection
                   pays off (`runner.cost`), and under label noise the
                   flipped examples each core-set kept and, per class
                   label, their share of its examples of that label;
  `accuracy.png`   accuracy against ratio, one line per method;
  `cost.png`       accuracy against total cost (seconds), every method,
                   full data and Random as references.
"""

import csv
import dataclasses
import io
import os
import re
from typing import Any, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import ml_collections
import numpy as np

from mrmc_jax import methods
from mrmc_jax import validation
from mrmc_jax.data import noise as noise_lib
from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import plots
from mrmc_jax.runner import storage
from mrmc_jax.runner import cost as cost_lib
from mrmc_jax.runner import stages
from mrmc_jax.runner import workdir as wd

FIELDS = ("method", "ratio", "seed", "test_accuracy", "num_selected",
          "num_examples", "selection_seconds", "selection_compile_seconds",
          "train_seconds", "warmup_seconds", "warmup_epochs", "train_steps",
          "full_steps_per_epoch", "cost_epochs", "cost_seconds",
          "num_flipped", "num_flipped_selected", "flipped_selected",
          "coreset_noise", "flipped_share_by_class")


def slug(spec: str) -> str:
  """A folder name for a method spec."""
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec).strip("_")


def _as_list(value) -> list:
  if isinstance(value, str):
    return [v.strip() for v in value.split(",") if v.strip()]
  return list(value)


def plan(config: ml_collections.ConfigDict
         ) -> tuple[list[str], list[float], list[int]]:
  """The method specs, ratios and seeds of `config.compare`, checked."""
  specs = _as_list(config.compare.methods)
  try:
    ratios = [float(r) for r in _as_list(config.compare.ratios)]
    seeds = [int(s) for s in _as_list(config.compare.seeds)]
  except (TypeError, ValueError) as e:
    raise ValueError(f"compare.ratios={config.compare.ratios!r} and "
                     f"compare.seeds={config.compare.seeds!r}: {e}; use "
                     "comma-separated numbers.") from None
  if not specs or not ratios or not seeds:
    raise ValueError("compare.methods, compare.ratios and compare.seeds must "
                     "each name at least one value.")
  opts = config_lib.selection_options(config)
  for spec in specs:
    config_lib.check_spec(spec, opts, config.selection.warmup_epochs,
                          name="compare.methods entry")
  for r in ratios:
    validation.check_ratio(r, "compare.ratios entry")
  for s in seeds:
    validation.check_seed(s, "compare.seeds entry")
  return specs, ratios, seeds


def cells(specs: Sequence[str], ratios: Sequence[float],
          seeds: Sequence[int]) -> list[tuple[str, float, int]]:
  """All (spec, ratio, seed) cells; `full` runs once per seed at ratio 1."""
  out = []
  for seed in seeds:
    for spec in specs:
      for ratio in ([1.0] if config_lib.ratio_free(spec) else ratios):
        out.append((spec, ratio, seed))
  return out


def run_comparison(config: ml_collections.ConfigDict,
                   workdir: str) -> list[dict[str, Any]]:
  """Runs (or resumes, or extends) every cell and returns the result rows.

  Every cell's spec, ratio and seed is checked before the workdir is
  claimed.
  """
  config_lib.validate_config(config)
  specs, ratios, seeds = plan(config)
  identity = config_lib.grid_identity(config)
  wd.check_workdir(workdir, "compare", identity)
  with wd.lock(workdir):
    return _run_comparison(config, workdir, identity, specs, ratios, seeds)


def _run_comparison(config, workdir, identity, specs, ratios, seeds):
  ctx0, data = stages.load(config, workdir)
  n = ctx0.data.train.num_examples
  for r in ratios:
    config_lib.check_coreset_size(r, n, name="compare.ratios entry")
  wd.claim(workdir, identity, data, job="compare")
  stages.keep_claimed(ctx0, workdir, data)
  opts0 = config_lib.selection_options(config)
  need = methods.needs(specs, opts0)
  flipped = stages.flipped_ids(workdir) if config.dataset.label_noise else None
  full_spe = input_pipeline.num_batches(n, config.train.batch_size)
  # One full-data training in full-data epochs (for the pay-off reuses).
  full_epochs = float(config.train.epochs)
  todo = cells(specs, ratios, seeds)
  stamps = {(spec, ratio, seed): stages.cell_stamps(
      config, seed, data, spec, ratio, opts0.replace(seed=seed))
            for spec, ratio, seed in todo}
  for seed in seeds:
    ctx = dataclasses.replace(
        ctx0, seed=seed, workdir=os.path.join(workdir, "warmup",
                                              f"seed_{seed}"))
    mine = [c for c in todo if c[2] == seed]
    # Verified on every run, finished cells or not (`stages.run_stage`).
    art = stages.warmup(ctx, config, need, stamps[mine[0]].warmup)
    opts = opts0.replace(seed=seed)
    cache: dict[str, Any] = {}
    for spec, ratio, _ in mine:
      st = stamps[(spec, ratio, seed)]
      cdir = _cell_dir(workdir, spec, ratio, seed)
      cctx = dataclasses.replace(ctx, workdir=cdir)

      def summary_fn(sel, result, spec=spec, ratio=ratio):
        row = {
            "method": spec, "ratio": ratio, "seed": seed,
            "test_accuracy": result["test_accuracy"],
            "num_selected": int(sel.mask.sum()),
            "num_examples": int(sel.mask.size),
            "selection_seconds": float(sel.timing["selection_seconds"]),
            "selection_compile_seconds": float(
                sel.timing.get("compile_seconds", 0.0)),
            "train_seconds": result["train_seconds"],
            "warmup_seconds": float(art.get("warmup_seconds", 0.0)),
            "warmup_epochs": (int(config.selection.warmup_epochs)
                              if methods.needs([spec], opts) else 0),
            "train_steps": int(result["train_steps"]),
            "full_steps_per_epoch": int(full_spe)}
        row.update({k: cost_lib.cell_cost(row)[k]
                    for k in ("cost_epochs", "cost_seconds")})
        if flipped is not None:
          row.update(noise_counts(sel.mask, flipped, ctx0.data.train.labels,
                                  ctx0.data.num_classes))
        return row

      row, computed = stages.run_cell(cctx, config, spec, art, ratio, opts,
                                      st, summary_fn, cache=cache)
      # Not needed again; also removes those of a cell killed just after
      # its summary was written.
      if wd.is_writer():
        storage.rmtree(os.path.join(cdir, "checkpoints"))
      if computed:
        write_reports(workdir, collect(workdir, todo, stamps), specs, ratios,
                      full_epochs)
        print(f"{spec} ratio={ratio} seed={seed}: test accuracy "
              f"{100 * row['test_accuracy']:.2f}%", flush=True)
  rows = collect(workdir, todo, stamps)
  write_reports(workdir, rows, specs, ratios, full_epochs)
  if wd.is_writer():
    print(storage.read_bytes(os.path.join(workdir, "results.md")).decode(),
          flush=True)
  return rows


def noise_counts(mask: np.ndarray, flipped: np.ndarray,
                 labels: Optional[np.ndarray] = None,
                 num_classes: Optional[int] = None) -> dict[str, Any]:
  """How many of the flipped training ids (int [F]) a core-set (bool [N])
  kept: `num_flipped`, `num_flipped_selected`, `flipped_selected` (their
  fraction of the flipped ids), `coreset_noise` (their share of the
  core-set) and, given the (noisy) training labels int [N], the
  `flipped_share_by_class` (per label c, the share of flipped examples
  among the kept examples labelled c; None where none is kept)."""
  kept = int(np.asarray(mask, bool)[np.asarray(flipped, np.int64)].sum())
  out = {"num_flipped": int(len(flipped)), "num_flipped_selected": kept,
         "flipped_selected": kept / max(len(flipped), 1),
         "coreset_noise": kept / max(int(np.sum(mask)), 1)}
  if labels is not None:
    share = noise_lib.flipped_share_by_class(mask, flipped, labels,
                                             num_classes)
    out["flipped_share_by_class"] = [None if np.isnan(x) else float(x)
                                     for x in share]
  return out


def _finished(workdir, cell, stamp):
  """The cell's verified summary if it is finished, else None.

  Raises `ConfigMismatchError` if the cell was computed from something else.
  """
  cdir = _cell_dir(workdir, *cell)
  return stages.read_summary(os.path.join(cdir, "summary.json"), stamp)


def _cell_dir(workdir, spec, ratio, seed) -> str:
  return os.path.join(workdir, "cells", slug(spec), f"ratio_{ratio:g}",
                      f"seed_{seed}")


def collect(workdir: str, todo, stamps) -> list[dict[str, Any]]:
  """The summaries of the finished cells, in plan order."""
  rows = []
  for cell in todo:
    row = _finished(workdir, cell, stamps[cell].result)
    if row is not None:
      rows.append(row)
  return rows


def _stats(values):
  v = np.asarray(values, np.float64)
  return v.mean(), (v.std(ddof=1) if v.size > 1 else 0.0), v.size


def markdown_table(rows: list[dict[str, Any]], specs: Sequence[str],
                   ratios: Sequence[float],
                   full_epochs: Optional[float] = None) -> str:
  """Accuracy mean +- std (n seeds) per method and ratio, timings, costs.

  `full_epochs`: one full-data training in full-data epochs (the config's
  `train.epochs`), for the reuses to pay off when no `full` cell ran.
  """
  by = {}
  for r in rows:
    by.setdefault((r["method"], r["ratio"]), []).append(r)
  lines = ["| method | " + " | ".join(f"{x:g}" for x in ratios) + " |",
           "|---|" + "---|" * len(ratios)]
  for spec in specs:
    if config_lib.ratio_free(spec) and (spec, 1.0) in by:
      m, s, n = _stats([r["test_accuracy"] for r in by[(spec, 1.0)]])
      lines.append(f"| {spec} (all data) | " + " | ".join(
          [f"{100 * m:.2f} ± {100 * s:.2f} (n={n})"] * len(ratios)) + " |")
  for spec in specs:
    if config_lib.ratio_free(spec):
      continue
    cells_ = []
    for ratio in ratios:
      got = by.get((spec, ratio))
      if not got:
        cells_.append("—")
        continue
      m, s, n = _stats([r["test_accuracy"] for r in got])
      cells_.append(f"{100 * m:.2f} ± {100 * s:.2f} (n={n})")
    lines.append(f"| {spec} | " + " | ".join(cells_) + " |")
  lines += ["", "Selection time per method (seconds, median over ratios and "
            "seeds; excludes the warm-up and JAX compilation, whose total "
            "per method is listed apart):", "",
            "| method | selection s | compile s (total) | core-set training "
            "s (median) |",
            "|---|---|---|---|"]
  for spec in specs:
    got = [r for r in rows if r["method"] == spec]
    if got:
      compiled = sum(r.get("selection_compile_seconds", 0.0) for r in got)
      lines.append(
          f"| {spec} | {np.median([r['selection_seconds'] for r in got]):.3f}"
          f" | {compiled:.2f}"
          f" | {np.median([r['train_seconds'] for r in got]):.1f} |")
  warm = sorted({r["warmup_seconds"] for r in rows if r["warmup_seconds"]})
  if warm:
    lines += ["", f"Warm-up: {np.median(warm):.1f} s per seed (median), "
              "shared by every method and ratio."]
  lines += cost_table(rows, specs, ratios, full_epochs)
  lines += noise_table(rows, specs, ratios)
  return "\n".join(lines) + "\n"


def _median(rows, key):
  return float(np.median([r[key] for r in rows]))


def _full_costs(rows, specs, full_epochs):
  """One full-data training's cost: (epochs, seconds or None)."""
  full = [r for r in rows if config_lib.ratio_free(r["method"])
          and "train_steps" in r]
  if full:
    return (_median(full, "train_steps") / _median(full,
                                                   "full_steps_per_epoch"),
            _median(full, "train_seconds"))
  return full_epochs, None


def cost_table(rows, specs, ratios, full_epochs=None) -> list[str]:
  """The total cost of each method and ratio and its pay-off (markdown)."""
  rows = [r for r in rows if "train_steps" in r]
  if not rows:
    return []
  f_epochs, f_seconds = _full_costs(rows, specs, full_epochs)
  lines = ["", "Total cost per cell (median over seeds): epochs-equivalent "
           "= R warm-up epochs on all data (only for a method that reads "
           "the warm-up) + the core-set training's steps / one full-data "
           "epoch's steps; seconds = warm-up + selection + core-set "
           "training, measured. A core-set pays off after k reuses, the "
           "smallest integer k with W + k C <= k F (W: warm-up + selection, "
           "paid once; C: one core-set training; F: one full-data "
           "training); for methods without warm-up W is the selection "
           "alone.", "",
           "| method | ratio | accuracy | cost (epochs) | cost (s) | "
           "pays off after (epochs) | pays off after (s) |",
           "|---|---|---|---|---|---|---|"]

  def payoff(oneoff, each, full):
    if full is None:
      return "—"
    k = cost_lib.reuses_to_pay_off(oneoff, each, full)
    return "never" if k is None else str(k)

  for spec in specs:
    for ratio in ([1.0] if config_lib.ratio_free(spec) else ratios):
      got = [r for r in rows if r["method"] == spec and r["ratio"] == ratio]
      if not got:
        continue
      c = [cost_lib.cell_cost(r) for r in got]
      med = {k: float(np.median([x[k] for x in c])) for k in c[0]}
      train_s = _median(got, "train_seconds")
      ratio_free = config_lib.ratio_free(spec)
      lines.append(
          f"| {spec} | {ratio:g} | "
          f"{100 * np.mean([r['test_accuracy'] for r in got]):.2f} | "
          f"{med['cost_epochs']:.1f} | {med['cost_seconds']:.1f} | "
          + ("— | — |" if ratio_free else
             f"{payoff(med['oneoff_epochs'], med['train_epochs_equivalent'], f_epochs)} | "
             f"{payoff(med['oneoff_seconds'], train_s, f_seconds)} |"))
  return lines


def noise_table(rows, specs, ratios) -> list[str]:
  """Under label noise: the flipped examples each core-set kept."""
  rows = [r for r in rows if "num_flipped" in r]
  if not rows:
    return []
  n_flipped = rows[0]["num_flipped"]
  share = n_flipped / rows[0]["num_examples"]
  lines = ["", f"Label noise: {n_flipped} flipped training labels "
           f"({100 * share:.1f}%). Per method and ratio, mean over seeds: "
           "the core-set's share of flipped examples (Random keeps about "
           f"{100 * share:.1f}%), and in brackets the fraction of all "
           "flipped examples it selected.", "",
           "| method | " + " | ".join(f"{x:g}" for x in ratios) + " |",
           "|---|" + "---|" * len(ratios)]
  for spec in specs:
    if config_lib.ratio_free(spec):
      continue
    cells_ = []
    for ratio in ratios:
      got = [r for r in rows if r["method"] == spec and r["ratio"] == ratio]
      cells_.append("—" if not got else
                    f"{100 * np.mean([r['coreset_noise'] for r in got]):.1f}%"
                    f" ({100 * np.mean([r['flipped_selected'] for r in got]):.1f}%)")
    lines.append(f"| {spec} | " + " | ".join(cells_) + " |")
  return lines + class_noise_tables(rows, specs, ratios)


def class_noise_tables(rows, specs, ratios) -> list[str]:
  """Per ratio: each method's flipped share per class label (markdown).

  A cell is the mean over seeds of the share of flipped examples among the
  core-set's examples labelled c (`noise_counts`); the largest share of a
  row is in bold. Cells written before the per-class share was recorded
  are left out.
  """
  rows = [r for r in rows if r.get("flipped_share_by_class") is not None]
  if not rows:
    return []
  num_classes = len(rows[0]["flipped_share_by_class"])
  lines = ["", "Flipped share per class label: among a core-set's examples "
           "labelled c, the share whose label was flipped (mean over seeds; "
           "the largest of each row in bold). A method that gathers one "
           "label's flipped examples trains that label on wrong ones."]
  for ratio in ratios:
    lines += ["", f"Ratio {ratio:g}:", "",
              "| method | " + " | ".join(str(c) for c in range(num_classes))
              + " |", "|---|" + "---|" * num_classes]
    for spec in specs:
      got = [r["flipped_share_by_class"] for r in rows
             if r["method"] == spec and r["ratio"] == ratio]
      if config_lib.ratio_free(spec) or not got:
        continue
      shares = np.array([[np.nan if x is None else x for x in g]
                         for g in got], np.float64)
      # The mean over the seeds that kept the label (NaN where none did).
      mean = np.array([col[~np.isnan(col)].mean() if (~np.isnan(col)).any()
                       else np.nan for col in shares.T])
      top = np.nanargmax(mean) if np.isfinite(mean).any() else -1
      cells_ = ["—" if np.isnan(m) else
                (f"**{100 * m:.1f}%**" if c == top else f"{100 * m:.1f}%")
                for c, m in enumerate(mean)]
      lines.append(f"| {spec} | " + " | ".join(cells_) + " |")
  return lines


def _label(spec: str) -> str:
  """A spec's legend label: its row's `label` for the bare name, else the
  spec."""
  row = methods.row(spec)
  return (row.label or spec) if spec == row.name else spec


# Line styles by `Method.role` (the reference is a horizontal line).
_LINE = {"proposed": "-", "peer": "--", "baseline": "--"}
_COST_STYLE = {"proposed": dict(ls="-"), "peer": dict(ls=":"),
               "baseline": dict(color="gray", ls="--", lw=2)}


def plot(rows, specs, ratios, path):
  """Accuracy against ratio, one line per method, std as error bars."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for spec in specs:
    got = [r["test_accuracy"] for r in rows if r["method"] == spec]
    if config_lib.ratio_free(spec) and got:
      ax.axhline(100 * np.mean(got), color="black", ls="--", lw=1,
                 label=_label(spec))
  for spec in specs:
    if config_lib.ratio_free(spec):
      continue
    xs, ms, ss = [], [], []
    for ratio in ratios:
      acc = [r["test_accuracy"] for r in rows
             if r["method"] == spec and r["ratio"] == ratio]
      if acc:
        m, s, _ = _stats(acc)
        xs.append(ratio)
        ms.append(100 * m)
        ss.append(100 * s)
    if xs:
      ax.errorbar(xs, ms, yerr=ss, marker="o", ms=3, capsize=2,
                  ls=_LINE.get(methods.row(spec).role, "--"),
                  label=_label(spec))
  ax.set_xlabel("selection ratio")
  ax.set_ylabel("test accuracy (%)")
  ax.legend(fontsize=7, ncol=2)
  ax.grid(alpha=0.3)
  plots.save(fig, path)


def plot_cost(rows, specs, ratios, path):
  """Accuracy against total cost in seconds (log axis), one marker per
  method and ratio (mean over seeds); full data and Random as references."""
  rows = [r for r in rows if "cost_seconds" in r]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for spec in specs:
    pts = []
    for ratio in ([1.0] if config_lib.ratio_free(spec) else ratios):
      got = [r for r in rows if r["method"] == spec and r["ratio"] == ratio]
      if got:
        pts.append((np.median([r["cost_seconds"] for r in got]),
                    100 * np.mean([r["test_accuracy"] for r in got]), ratio))
    if not pts:
      continue
    xs, ys, rs = zip(*pts)
    if config_lib.ratio_free(spec):
      ax.plot(xs, ys, marker="*", ms=12, color="black", ls="none",
              label=_label(spec))
      continue
    style = _COST_STYLE.get(methods.row(spec).role, dict(ls=":"))
    ax.plot(xs, ys, marker="o", ms=4, label=_label(spec), **style)
    for x, y, r in pts:
      ax.annotate(f"{r:g}", (x, y), fontsize=6, xytext=(2, 2),
                  textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("total cost: warm-up + selection + training (s)")
  ax.set_ylabel("test accuracy (%)")
  ax.legend(fontsize=7, ncol=2)
  ax.grid(alpha=0.3, which="both")
  plots.save(fig, path)


def write_reports(workdir, rows, specs, ratios,
                  full_epochs: Optional[float] = None) -> None:
  """results.csv, results.md, accuracy.png and cost.png from the cells."""
  if not wd.is_writer():
    return
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  wd.write_text(os.path.join(workdir, "results.csv"), buf.getvalue())
  wd.write_text(os.path.join(workdir, "results.md"),
                markdown_table(rows, specs, ratios, full_epochs))
  plot(rows, specs, ratios, os.path.join(workdir, "accuracy.png"))
  plot_cost(rows, specs, ratios, os.path.join(workdir, "cost.png"))
