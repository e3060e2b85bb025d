"""The loss-reduction attribution measurement behind experiments/attribution.py.

Trains on full data and on core-sets with the library's attributed step
(`mrmc_jax.attribution.make_attributed_train_step`), through the runner's
one epoch loop, and writes the matrices, heatmaps and `report.json`.
"""

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax import methods
from mrmc_jax import scoring
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import validation
from mrmc_jax.attribution import choose_probes
from mrmc_jax.attribution import FORMULAS
from mrmc_jax.attribution import init_attribution
from mrmc_jax.attribution import make_attributed_train_step
from mrmc_jax.attribution import matrix_summary
from mrmc_jax.attribution import normalise
from mrmc_jax.attribution import probe_criterion
from mrmc_jax.attribution import stability_error
from mrmc_jax.attribution import symmetry_error
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import fields
from mrmc_jax.runner import loop
from mrmc_jax.runner import storage
from mrmc_jax.runner import plots
from mrmc_jax.runner import stages
from mrmc_jax.runner import workdir as wd

# Paper, relative errors on 50 CIFAR-100 examples over 10 epochs.
PAPER = {
    "setup": "50 CIFAR-100 examples, ResNet-18, 10 epochs (ICML 2025)",
    "stability_error": {"coreset_0.3": 0.27, "coreset_0.5": 0.26,
                        "coreset_0.7": 0.22},
    "symmetry_error": {"coreset_0.3": 0.16, "coreset_0.5": 0.19,
                       "coreset_0.7": 0.22, "full": 0.24},
}



def plot_heatmaps(matrices: Mapping[str, np.ndarray], probe_labels: np.ndarray,
                  out_dir: str, titles: Optional[Mapping[str, str]] = None
                  ) -> None:
  """One heatmap per setting plus `all.png`, on ONE colour scale.

  Each matrix is Frobenius-normalised; the symmetric colour range is the
  99th percentile of |off-diagonal entries| over all settings, so the
  cross terms are visible and the (larger) diagonal saturates. Probes are
  in the given order (by class); lines mark class boundaries.
  """

  titles = titles or {}
  hats = {k: normalise(v) for k, v in matrices.items()}
  off = np.concatenate([h[~np.eye(h.shape[0], dtype=bool)]
                        for h in hats.values()])
  vmax = float(np.percentile(np.abs(off), 99)) if off.size else 1.0
  vmax = vmax if vmax > 0 else 1.0
  labels = np.asarray(probe_labels)
  bounds = np.flatnonzero(np.diff(labels)) + 0.5
  starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1])
  ends = np.concatenate([starts[1:], [labels.size]])
  centres = (starts + ends - 1) / 2

  def draw(ax, name, hat, ylabel=True):
    im = ax.imshow(hat, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                   interpolation="nearest")
    for b in bounds:
      ax.axhline(b, color="k", lw=0.4)
      ax.axvline(b, color="k", lw=0.4)
    ax.set_xticks(centres, [str(c) for c in labels[starts]], fontsize=7)
    ax.set_yticks(centres, [str(c) for c in labels[starts]], fontsize=7)
    ax.set_title(titles.get(name, name), fontsize=9)
    ax.set_xlabel("i (receiver), class")
    if ylabel:
      ax.set_ylabel("j (contributor), class")
    return im

  cbar = "A / ||A||_F (same scale in all panels; clipped)"
  for name, hat in hats.items():
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    im = draw(ax, name, hat)
    fig.colorbar(im, ax=ax, label=cbar)
    plots.save(fig, os.path.join(out_dir, f"{name}.png"))
  fig, axes = plt.subplots(1, len(hats), figsize=(4.2 * len(hats) + 1, 4.6),
                           squeeze=False, layout="constrained")
  for k, (ax, (name, hat)) in enumerate(zip(axes[0], hats.items())):
    im = draw(ax, name, hat, ylabel=k == 0)
  fig.colorbar(im, ax=list(axes[0]), label=cbar, shrink=0.8)
  plots.save(fig, os.path.join(out_dir, "all.png"))


# --------------------------------------------------------------------------
# The measurement (reads the config).


def parse_ratios(value: Any) -> list[float]:
  """`"0.3,0.5,0.7"` (or a sequence) -> checked floats in (0, 1]."""
  items = ([v.strip() for v in value.split(",") if v.strip()]
           if isinstance(value, str) else list(value))
  try:
    ratios = [float(v) for v in items]
  except (TypeError, ValueError):
    raise ValueError(f"attribution.ratios={value!r} is not allowed: use "
                     "comma-separated numbers in (0, 1].") from None
  if not ratios or len(set(ratios)) != len(ratios):
    raise ValueError(f"attribution.ratios={value!r} is not allowed: name at "
                     "least one ratio, each once.")
  for r in ratios:
    validation.check_ratio(r, "attribution.ratios entry")
  return ratios


def setting_names(ratios: Sequence[float], reference_runs: int = 0
                  ) -> list[str]:
  """`full`, `coreset_<ratio>` in the given order, then `full_order<k>`."""
  return (["full"] + [f"coreset_{r:g}" for r in ratios]
          + [f"full_order{k}" for k in range(1, reference_runs + 1)])


def validate_config(config) -> None:
  """Raises `ValueError` (one line) on a bad field, before any work."""
  config_lib.validate_config(config)
  att = config.attribution
  validation.check_int(att.num_probes, "attribution.num_probes",
                                minimum=2)
  validation.check_int(att.epochs, "attribution.epochs")
  validation.check_int(att.seed, "attribution.seed", minimum=0)
  validation.check_int(att.reference_runs,
                                "attribution.reference_runs", minimum=0)
  parse_ratios(att.ratios)
  if config.train.optimizer != "sgd":
    raise ValueError(f"train.optimizer={config.train.optimizer!r} is not "
                     "allowed for the attribution: use sgd (the step size "
                     "of one example's gradient is defined for SGD with "
                     "momentum only).")
  config_lib.check_spec(att.method, config_lib.selection_options(config),
                        config.selection.warmup_epochs,
                        name="attribution.method")


def run_attribution(config, workdir: str) -> dict[str, Any]:
  """Measures stability and symmetry of the attribution; writes the report.

  Stages (each resumable; rerunning with the same workdir redoes nothing
  finished):
  1. One warm-up on all data if `attribution.method` needs it
     (`stages.warmup`, in `warmup/` and `checkpoints/warmup`).
  2. A core-set per ratio in `attribution.ratios` from that warm-up
     (`stages.select`, in `coresets/ratio_<r>/coreset/`).
  3. Probes: `attribution.num_probes` ids stratified by class among the
     examples present in every core-set (`probes.json`).
  4. Settings `full`, `coreset_<r>` and `attribution.reference_runs`
     reference runs `full_order<k>` (full data, data order seeded by
     `seed + k`): a fresh model (the same initialisation for all) trained
     `attribution.epochs` epochs on its training set with the attributed
     step, the optimiser and cosine schedule of `config.train` over the
     setting's own step count (as `train.budget="epochs"`). Each setting
     is a stage (`stages.run_stage`, stamped by `setting_stamp`): orbax
     checkpoints of (state, accumulator) every
     `train.checkpoint_every_epochs` epochs in `checkpoints/<setting>` and
     every `train.checkpoint_every_steps` steps (and at a signal) in
     `checkpoints/<setting>.steps`, so it resumes at any step; removed
     when the setting finishes; then `trajectories/<setting>.npy` (probe
     losses `[m, E]`), `summaries/<setting>.json` (with the stamp and the
     SHA-256 of both arrays) and, last, `matrices/<setting>.npy`, whose
     presence marks the setting finished. Every rerun verifies a finished
     setting's files; a damaged one is trained again, with one warning
     naming the file.
  5. `heatmaps/<setting>.png`, `heatmaps/all.png` and `report.json`.

  Args:
    config: a config like `configs/attribution.py`.
    workdir: the output folder (claimed like `experiment`'s).

  Returns:
    The report dict (as written to report.json).
  """

  validate_config(config)
  config_json = config_lib.run_identity(config)
  wd.check_workdir(workdir, "attribution", config_json)
  with wd.lock(workdir):
    return _run_attribution(config, workdir, config_json)


def _run_attribution(config, workdir, config_json):
  att = config.attribution
  ratios = parse_ratios(att.ratios)
  ctx, data = stages.load(config, workdir)
  labels = ctx.data.train.labels
  for r in ratios:
    config_lib.check_coreset_size(r, len(labels), name="attribution.ratios")
  wd.claim(workdir, config_json, data, job="attribution")
  stages.keep_claimed(ctx, workdir, data)
  opts = config_lib.selection_options(config)
  warm_stamp = stages.warmup_stamp(config, config.seed, data)
  art = stages.warmup(ctx, config, methods.needs([att.method], opts),
                      warm_stamp)
  masks, cache = {}, {}
  for r in ratios:
    cctx = dataclasses.replace(
        ctx, workdir=os.path.join(workdir, "coresets", f"ratio_{r:g}"))
    masks[r] = stages.select(
        cctx, att.method, art, r, opts,
        stages.selection_stamp(warm_stamp, config, att.method, r, opts),
        cache=cache).mask
  everywhere = np.logical_and.reduce(list(masks.values()))
  probes = choose_probes(labels, att.num_probes, att.seed,
                         np.flatnonzero(everywhere))
  probe_labels = labels[probes].astype(np.int32)
  probes_path = os.path.join(workdir, "probes.json")
  if storage.exists(probes_path):
    stored = wd.read_json(probes_path)["ids"]
    if stored != probes.tolist():
      raise RuntimeError(f"{probes_path} holds other probes than this run "
                         "chose; the workdir is inconsistent.")
  elif wd.is_writer():
    wd.write_json(probes_path, {
        "ids": probes.tolist(), "labels": probe_labels.tolist(),
        "num_candidates": int(everywhere.sum()),
        "candidates": "examples in every core-set of attribution.ratios"})
  probe_images = _probe_images(ctx, probes)

  # (name, training ids or None for all, seed of the data order).
  settings = [("full", None, config.seed)]
  names = setting_names(ratios, att.reference_runs)
  for r, name in zip(ratios, names[1:]):
    settings.append((name, np.flatnonzero(masks[r]), config.seed))
  for k in range(1, att.reference_runs + 1):
    settings.append((f"full_order{k}", None, config.seed + k))
  results, compiled = {}, {}
  eval_fn = jax.jit(train_step.make_eval_step(ctx.apply_fn))
  for name, ids, order_seed in settings:
    results[name] = _run_setting(
        ctx, name, ids, probes, probe_images, probe_labels, att.epochs,
        order_seed, compiled, eval_fn,
        setting_stamp(config, data, name, ids, order_seed, probes))
  report = _report(config, ctx, probes, probe_labels, everywhere, results,
                   ratios, methods.resolve(att.method, opts)[1])
  if wd.is_writer():
    sym = report["symmetry_error"]
    titles = {k: (f"{k}\nsymmetry error {sym[k]['all_entries']:.2f} "
                  f"(off-diagonal {sym[k]['off_diagonal']:.2f})")
              for k in results}
    plot_heatmaps({k: v["matrix"] for k, v in results.items()}, probe_labels,
                  os.path.join(workdir, "heatmaps"), titles)
    wd.write_json(os.path.join(workdir, "report.json"), report)
    print(format_report(report), flush=True)
  return report


def _probe_images(ctx, probes: np.ndarray) -> np.ndarray:
  """The probes' inputs as the pipeline preprocesses them (no augmentation)."""
  # One batch of exactly m rows, ascending ids; every process builds all of
  # it, since the probes are constants of the step.
  ds = input_pipeline.eval_dataset(ctx.data.train, batch_size=len(probes),
                                   mean=ctx.data.mean, std=ctx.data.std,
                                   ids=probes)
  batch = next(ds.as_numpy_iterator())
  pos = np.searchsorted(batch["id"], probes)
  return batch["image"][pos]


def setting_stamp(config, data: dict[str, Any], name: str,
                  ids: Optional[np.ndarray], order_seed: int,
                  probes: np.ndarray) -> str:
  """What one setting's outputs are computed from.

  The fields marked as affecting training (`runner.fields`), the seed of
  the initialisation, the data fingerprint, the setting's training ids
  (None: all), the seed of its data order and the probes.
  """
  ids_sha = None if ids is None else stages.array_sha256(
      np.asarray(ids, np.int64))
  return wd.stamp(fields.affecting(config, fields.T), int(config.seed), data,
                  name, ids_sha, int(order_seed),
                  [int(p) for p in np.asarray(probes)])


# A setting's array outputs, keyed as in its summary's `sha256` record; the
# matrix goes last (its presence marks the setting as finished).
_SETTING_ARRAYS = ("trajectories", "matrices")


def _setting_paths(workdir: str, name: str) -> dict[str, str]:
  return {k: os.path.join(workdir, k, f"{name}.{ext}") for k, ext in (
      ("trajectories", "npy"), ("summaries", "json"), ("matrices", "npy"))}


def write_setting(workdir: str, name: str, stamp: str, losses: np.ndarray,
                  matrix: np.ndarray, summary: dict[str, Any]) -> None:
  """Writes a setting's outputs (process 0), the matrix last.

  Args:
    workdir: the job's folder.
    name: the setting.
    stamp: `setting_stamp`, kept in the summary.
    losses: float `[m, E]` probe losses per epoch.
    matrix: float `[m, m]` attribution matrix.
    summary: JSON-able facts of the training (counts, test metrics).
  """
  paths = _setting_paths(workdir, name)
  wd.write_npy(paths["trajectories"], losses)
  wd.write_json(paths["summaries"], {
      **summary, "stamp": stamp,
      "sha256": {"trajectories.npy": stages.array_sha256(losses),
                 "matrices.npy": stages.array_sha256(matrix)}})
  # The matrix goes last: its presence marks the setting as finished.
  wd.write_npy(paths["matrices"], matrix)


def read_setting(workdir: str, name: str, stamp: str
                 ) -> Optional[dict[str, Any]]:
  """A finished setting's outputs, verified, or None if not finished.

  Returns:
    `{"matrix": [m, m], "losses": [m, E], "summary": dict}`.

  Raises:
    workdir.CorruptFileError: a file of it is damaged (named), or its
      summary holds no SHA-256 record (written before outputs had one).
    workdir.ConfigMismatchError: it was computed from something else.
  """
  paths = _setting_paths(workdir, name)
  if not storage.exists(paths["matrices"]):
    return None
  record = stages.read_verified_json(paths["summaries"])
  stages.check_recorded(paths["summaries"], record.get("sha256"),
                        {f"{k}.npy": paths[k] for k in _SETTING_ARRAYS})
  wd.check_stamp(paths["summaries"], record.get("stamp"), stamp)
  summary = {k: v for k, v in record.items() if k not in ("stamp", "sha256")}
  return {"matrix": wd.read_npy(paths["matrices"]),
          "losses": wd.read_npy(paths["trajectories"]), "summary": summary}


def _run_setting(ctx, name: str, ids: Optional[np.ndarray],
                 probes: np.ndarray, probe_images: np.ndarray,
                 probe_labels: np.ndarray, epochs: int, order_seed: int,
                 compiled: dict[Any, Any], eval_fn, stamp: str
                 ) -> dict[str, Any]:
  """One setting as a stage: read back verified, or trained (`run_stage`).

  The initialisation always comes from `ctx.seed`; the data order of the
  epochs from `order_seed` (a reference run differs from `full` in that
  alone).
  """
  return stages.run_stage(stages.Stage(
      f"attribution_{name}", stamp,
      tuple(_setting_paths(ctx.workdir, name).values()),
      read=lambda: read_setting(ctx.workdir, name, stamp),
      run=lambda: _train_setting(
          ctx, name, ids, probes, probe_images, probe_labels, epochs,
          order_seed, compiled, eval_fn, stamp),
      # The training is deterministic: the outputs come out the same.
      redo=f"training setting {name} again"))


def _train_setting(ctx, name, ids, probes, probe_images, probe_labels,
                   epochs, order_seed, compiled, eval_fn, stamp):
  """Trains one setting with the attributed step (resuming from its last
  epoch or step checkpoint) and writes its outputs."""
  n = ctx.data.train.num_examples if ids is None else len(ids)
  spe = input_pipeline.num_batches(n, ctx.batch_size)
  total_steps = epochs * spe
  if total_steps not in compiled:
    # Settings of equal length (full data and its reference runs) share the
    # compiled step: the schedule is a closure, so a new one recompiles.
    tx = ctx.make_tx(total_steps, spe)
    # The schedule inside tx (Context.make_tx passes these same fields).
    schedule = ctx.make_schedule(total_steps, spe)
    compiled[total_steps] = (tx, jax.jit(make_attributed_train_step(
        ctx.apply_fn, tx, schedule, probes, probe_images, probe_labels,
        momentum=float(ctx.optimizer["momentum"] or 0.0)),
                                         donate_argnums=(0, 1)))
  tx, step = compiled[total_steps]
  data_ctx = dataclasses.replace(ctx, seed=order_seed)

  # seed_offset=1 as stages.train: every setting starts from the
  # same initialisation, so the matrices differ only by the training set.
  # Kept on the host after the first setting (the step donates its input);
  # the SGD state at step 0 does not depend on the schedule.
  if "initial_state" not in compiled:
    compiled["initial_state"] = sharding.to_host(
        ctx.init_state(tx, seed_offset=1))

  def attributed_step(carried, acc, batch, e):
    del e
    state, attr, m = step(carried["state"], carried["attr"], batch)
    return {"state": state, "attr": attr}, acc + jnp.stack(
        [m["train_loss"], m["train_accuracy"], 1.0])

  def finish(tree, epoch):
    # One host sync per epoch: every probe must be trained on once per
    # epoch, or its row (and its loss trajectory) would be incomplete.
    attr = tree["attr"]
    visits = sharding.to_host(attr.visits)
    if not np.all(visits == epoch + 1):
      raise RuntimeError(
          f"setting {name}, epoch {epoch + 1}: probes visited "
          f"{sorted(set(visits.tolist()))} times, expected {epoch + 1}; "
          "a probe is missing from this training set.")
    return tree, {"probe_steps": float(sharding.to_host(attr.probe_steps))}

  epoch_fn = loop.make_epoch_fn(
      attributed_step,
      lambda epoch, start: data_ctx.train_batches(epoch, ids=ids,
                                                  start=start),
      mesh=ctx.mesh, carry=("state", "attr"), finish=finish)

  ckpt_dir = os.path.join(ctx.workdir, "checkpoints", name)
  tree = stages.run_fresh_on_mismatch(lambda: loop.run_epochs(
      stage=f"attribution_{name}", workdir=ctx.workdir,
      checkpoint_dir=ckpt_dir,
      tree={"state": sharding.replicate(compiled["initial_state"], ctx.mesh),
            "attr": sharding.replicate(init_attribution(len(probes), epochs),
                                       ctx.mesh),
            "acc": loop.zeros_on(ctx.mesh),
            "seconds": np.zeros((), np.float64)},
      num_epochs=epochs, steps_per_epoch=spe, epoch_fn=epoch_fn,
      checkpoint_every=ctx.checkpoint_every,
      checkpoint_every_steps=ctx.checkpoint_every_steps, stamp=stamp),
                                     ckpt_dir, f"setting {name}")
  state, seconds = tree["state"], float(tree["seconds"])
  test = {}
  if ctx.data.test is not None:
    test = stages.evaluate(ctx, eval_fn, state.variables, ctx.data.test)
  host = sharding.to_host(tree["attr"])
  losses, matrix = np.asarray(host.losses), np.asarray(host.matrix)
  summary = {
      "num_examples": int(n), "steps": int(host.steps),
      "probe_steps": int(host.probe_steps), "epochs": int(epochs),
      "order_seed": int(order_seed),
      "seconds": seconds, "test_accuracy": test.get("accuracy"),
      "test_loss": test.get("loss")}
  if wd.is_writer():
    write_setting(ctx.workdir, name, stamp, losses, matrix, summary)
    storage.rmtree(ckpt_dir)
    storage.rmtree(ckpt_dir + loop.STEPS_SUFFIX)
  return {"matrix": matrix, "losses": losses, "summary": summary}


def _both_variants(metric, *matrices) -> dict[str, float]:
  return {
      "all_entries": metric(*matrices, include_diagonal=True),
      "off_diagonal": metric(*matrices, include_diagonal=False),
      "frobenius_all_entries": metric(*matrices, include_diagonal=True,
                                      norm="frobenius"),
      "frobenius_off_diagonal": metric(*matrices, include_diagonal=False,
                                       norm="frobenius"),
  }


def _report(config, ctx, probes, probe_labels, everywhere, results, ratios,
            opts) -> dict[str, Any]:
  att = config.attribution
  full = results["full"]["matrix"]
  stability, floor, symmetry, criterion, summaries = {}, {}, {}, {}, {}
  for name, res in results.items():
    a = res["matrix"]
    symmetry[name] = _both_variants(symmetry_error, a)
    if name.startswith("coreset_"):
      stability[name] = _both_variants(stability_error, a, full)
    elif name != "full":
      floor[name] = _both_variants(stability_error, a, full)
    traj = res["losses"]
    phi = None
    if traj.shape[1] >= 2:
      phi = np.asarray(scoring.mrmc_scores(
          traj, np.isfinite(traj), score=opts.score,
          max_initial_ratio=opts.max_initial_ratio,
          epoch_offset=opts.epoch_offset))
    criterion[name] = probe_criterion(a, phi)
    summaries[name] = {**res["summary"], **matrix_summary(a)}
  side = []
  for name in stability:
    side.append({"quantity": "stability_error", "setting": name,
                 **stability[name],
                 "paper": PAPER["stability_error"].get(name)})
  for name in floor:
    side.append({"quantity": "order_noise_floor", "setting": name,
                 **floor[name], "paper": None})
  for name in results:
    side.append({"quantity": "symmetry_error", "setting": name,
                 **symmetry[name], "paper": PAPER["symmetry_error"].get(name)})
  return {
      "dataset": config.dataset.name, "model": config.model.name,
      "method": att.method, "ratios": ratios, "epochs": att.epochs,
      "num_probes": len(probes), "probe_seed": att.seed, "seed": config.seed,
      "probe_ids": probes.tolist(), "probe_labels": probe_labels.tolist(),
      "num_probe_candidates": int(everywhere.sum()),
      "probe_candidates": "examples in every core-set of the ratios",
      "optimizer": {"name": config.train.optimizer,
                    "learning_rate": config.train.learning_rate,
                    "momentum": config.train.momentum,
                    "schedule": config.train.schedule,
                    "batch_size": config.train.batch_size},
      "formulas": FORMULAS,
      "settings": summaries,
      "stability_error": stability,
      "order_noise_floor": floor,
      "symmetry_error": symmetry,
      "spearman": criterion,
      "paper": PAPER,
      "side_by_side": side,
  }


def format_report(report: Mapping[str, Any]) -> str:
  """The side-by-side table as text."""
  lines = ["relative errors (l1 headline; Frobenius alternative):",
           f"{'quantity':<17} {'setting':<13} {'all':>7} {'off-diag':>9} "
           f"{'fro all':>8} {'fro off':>8} {'paper':>6}"]
  for row in report["side_by_side"]:
    paper = "-" if row["paper"] is None else f"{row['paper']:.2f}"
    lines.append(f"{row['quantity']:<17} {row['setting']:<13} "
                 f"{row['all_entries']:>7.3f} {row['off_diagonal']:>9.3f} "
                 f"{row['frobenius_all_entries']:>8.3f} "
                 f"{row['frobenius_off_diagonal']:>8.3f} {paper:>6}")
  lines.append("Spearman rho with the contribution to other probes "
               "(mrmc score / self A_jj / received):")
  for name, c in report["spearman"].items():
    vals = [c[k]["rho"] for k in ("mrmc_score_vs_contribution",
                                  "self_attribution_vs_contribution",
                                  "received_vs_contribution")]
    lines.append(f"  {name:<13} " + "  ".join(
        "   n/a" if v is None else f"{v:+.3f}" for v in vals))
  return "\n".join(lines)
