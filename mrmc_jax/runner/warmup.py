"""Stage 1: R epochs on all data, recording per-example statistics.

The step is the library's public one: `make_train_step` fused with
`trajectory.make_recording_step(..., mesh=)`, so what users import is what
runs here. The training-pass trajectory is always recorded (it is free);
the eval-pass one (`loss_source="eval"`) costs a forward pass over the
training set per epoch and is recorded only when a method asks for it.
Features, gradient norms, the softmax uncertainty scores and the
distances to the decision boundary are collected at the end when a method
needs them; the margins (AUM) join the
trajectories when a method needs them. Artefacts go to `<workdir>/warmup/artefacts.npz`, their SHA-256 to
`artefacts.json` beside it; `read_artefacts` (the stage's done-check, see
`stages.warmup`) verifies both. The artefacts are gathered whole to every
host (`sharding.to_host`); the feature methods are refused before any
training when the features would not fit half a chip
(`check_feature_rows`). On a multi-process job of a method that scores row
by row (`Method.row_keys`: mrmc, el2n, forgetting, dyn_unc, aum),
`rows_only` keeps each process's own rows
instead: nothing is gathered and no `artefacts.npz` is written.
"""

import os
import time
from typing import Any, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax import losses
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import trajectory
from mrmc_jax.methods import decision_distance
from mrmc_jax.methods import uncertainty
from mrmc_jax.runner import context as context_lib
from mrmc_jax.runner import loop
from mrmc_jax.runner import storage
from mrmc_jax.runner import workdir as wd


def artefact_keys(need: frozenset[str]) -> list[str]:
  """The arrays `artefacts.npz` must hold for the needs of some methods."""
  keys = ["warmup_seconds"]
  traj_keys = list(trajectory.KEYS)
  if "margin" in need:
    traj_keys += list(trajectory.MARGIN_FIELDS)
  if "trajectory" in need:
    keys += traj_keys
  if "eval_trajectory" in need:
    keys += [f"eval_{k}" for k in traj_keys]
  keys += sorted(need & {"features", "grad_norms", "uncertainty",
                         "boundary"})
  if "boundary" in need:
    keys.append("boundary_settings")
  return keys


# The stage's files, relative to its workdir; the hashes go last.
OUTPUTS = ("warmup/artefacts.npz", "warmup/artefacts.json")


def _hash_path(art_path: str) -> str:
  return os.path.join(os.path.dirname(art_path), "artefacts.json")


def read_artefacts(workdir: str, need: frozenset[str],
                   stamp: str) -> Optional[dict[str, np.ndarray]]:
  """A finished warm-up's artefacts holding what `need` asks, or None.

  The stage's done-check (`stages.warmup`): verified against the SHA-256
  in `artefacts.json` and against `stamp`.

  Raises:
    workdir.CorruptFileError: `artefacts.npz` or `artefacts.json` is
      damaged (named); the warm-up is recomputed from its last checkpoint
      (or from scratch), deterministic, so the artefacts come out the same.
    workdir.ConfigMismatchError: they are of another stamp.
  """
  art_path = os.path.join(workdir, "warmup", "artefacts.npz")
  hash_path = _hash_path(art_path)
  if not storage.exists(art_path):
    return None
  if not storage.exists(hash_path):
    raise wd.CorruptFileError(f"{hash_path} is missing")
  try:
    stored = wd.read_json(hash_path)
  except wd.CorruptFileError:
    raise wd.CorruptFileError(f"{hash_path} is damaged (not valid JSON)"
                              ) from None
  if not isinstance(stored, dict) or not isinstance(stored.get("sha256"),
                                                    str):
    raise wd.CorruptFileError(f"{hash_path} is damaged (no SHA-256)")
  if stored["sha256"] != wd.file_sha256(art_path):
    raise wd.CorruptFileError(f"{art_path} does not match its SHA-256 in "
                              f"{hash_path}")
  art = wd.read_npz(art_path)
  wd.check_stamp(art_path, str(art.pop("stamp", "")), stamp)
  if all(k in art for k in artefact_keys(need)):
    return art
  return None


# The features are gathered whole to every host and chip at the end of the
# warm-up (`_collect_rows`), and the methods that read them (mrmc_r, d2,
# moderate, kcenter, herding) run on the whole `[N, D]` array on one chip:
# refused before the warm-up when it would take more than this share of a
# chip's memory (8 GiB of a 16 GiB v5e chip: N = 4,194,304 at D = 512).
FEATURE_SHARE = 0.5


def check_feature_rows(num_examples: int, dim: int,
                       bytes_limit: Optional[int]) -> None:
  """Refuses features `[N, D]` too large to gather to one chip (one line).

  Args:
    num_examples: N.
    dim: D, the model's feature width.
    bytes_limit: a chip's memory in bytes (`device_bytes_limit`); None
      (CPU: no limit reported) checks nothing.

  Raises:
    ValueError: `N * D * 4` bytes is more than `FEATURE_SHARE` of it.
  """
  if not bytes_limit:
    return
  need = int(num_examples) * int(dim) * 4
  if need > FEATURE_SHARE * bytes_limit:
    most = int(FEATURE_SHARE * bytes_limit) // (4 * int(dim))
    raise ValueError(
        f"N={num_examples} is not allowed for the methods that read the "
        f"features (mrmc_r, d2, moderate, kcenter, herding): features [N, "
        f"D={dim}] float32 ({need / 2**30:.1f} GiB) are gathered whole to "
        f"every host and chip, more than {FEATURE_SHARE:g} of a chip's "
        f"{bytes_limit / 2**30:.1f} GiB; they run up to N={most} here. "
        "Methods that read only the trajectory (mrmc, forgetting, el2n, "
        "...) run at this N.")


def device_bytes_limit() -> Optional[int]:
  """The memory of this process's first chip in bytes (None on a CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats \
      else None


# What a warm-up of `rows_only` records: the trajectories, row by row.
ROW_NEEDS = frozenset({"trajectory", "eval_trajectory", "margin"})


def run_warmup(ctx: context_lib.Context, need: frozenset[str], *,
               epochs: int, schedule_epochs: int,
               stamp: str = "", rows_only: bool = False
               ) -> dict[str, np.ndarray]:
  """Trains `epochs` epochs on all data and returns the warm-up artefacts.

  Args:
    ctx: the run's context (its workdir holds this warm-up).
    need: what the methods need (`methods.needs`).
    epochs: R, the warm-up epochs.
    schedule_epochs: the length of the learning-rate schedule in epochs
      (the core-set training's for the "truncated" warm-up schedule).
    stamp: what the warm-up is computed from (`workdir.stamp`), kept in
      `artefacts.npz` and the checkpoints and checked when they are read.
    rows_only: return this process's rows of the trajectories only, with
      their ids under `row_ids` (`sharding.process_rows`), and write no
      `artefacts.npz`: nothing is gathered across the hosts (the rows are
      read from the warm-up's last checkpoint at a relaunch). `need` must
      be a subset of `ROW_NEEDS`.

  Returns:
    The artefacts (host arrays), as in `artefacts.npz` (less the stamp);
    with `rows_only`, `[n, R]` rows of this process and `row_ids` `[n]`.

  Raises:
    workdir.ConfigMismatchError: the artefacts or checkpoints are of
      another stamp.
  """
  art_path = os.path.join(ctx.workdir, "warmup", "artefacts.npz")
  n = ctx.data.train.num_examples
  spe = input_pipeline.num_batches(n, ctx.batch_size)
  tx = ctx.make_tx(max(schedule_epochs, epochs) * spe, spe)
  record_eval = "eval_trajectory" in need
  # The [N, R] trajectory is split by rows over the devices (O(N R /
  # devices) per chip); each device scatters the ids of its own range.
  recording = trajectory.make_recording_step(
      train_step.make_train_step(ctx.apply_fn, tx), mesh=ctx.mesh,
      sharded=True)

  def warm_step(state, traj, acc, batch, epoch):
    state, traj, stats = recording(state, traj, batch, epoch)
    return state, traj, acc + loop.sums(stats)

  warm_step = jax.jit(warm_step, donate_argnums=(0, 1, 2))
  eval_fn = train_step.make_eval_step(ctx.apply_fn)
  eval_record = jax.jit(
      lambda variables, traj, batch, epoch: trajectory.record(
          traj, eval_fn(variables, batch), epoch, mesh=ctx.mesh,
          sharded=True),
      donate_argnums=(1,))

  fields = trajectory.FIELDS + (
      trajectory.MARGIN_FIELDS if "margin" in need else ())

  def empty():
    return trajectory.init_trajectory(n, epochs, fields, mesh=ctx.mesh)

  tree = {"state": ctx.init_state(tx, seed_offset=0), "traj": empty(),
          "acc": loop.zeros_on(ctx.mesh), "seconds": np.zeros((), np.float64)}
  if "features" in need:
    # Refused before any training (see `FEATURE_SHARE`).
    check_feature_rows(n, _feature_dim(ctx, tree["state"]),
                       device_bytes_limit())
  if record_eval:
    tree["eval_traj"] = empty()

  def step(carried, acc, batch, e):
    state, traj, acc = warm_step(carried["state"], carried["traj"], acc,
                                 batch, e)
    return {"state": state, "traj": traj}, acc

  def finish(tree, epoch):
    if record_eval:
      e = sharding.replicate(np.int32(epoch), ctx.mesh)
      eval_traj = tree["eval_traj"]
      for batch in ctx.eval_batches(ctx.data.train):
        eval_traj = eval_record(tree["state"].variables, eval_traj, batch, e)
      tree = {**tree, "eval_traj": eval_traj}
    # One scalar host sync per epoch: every example recorded exactly once
    # (counted on device; the [N] column comes to the host only to name
    # the culprits).
    for key in ("traj", "eval_traj") if record_eval else ("traj",):
      visits = tree[key]["visits"]
      if int(trajectory.epoch_visit_errors(visits, epoch, n)):
        trajectory.check_visits(
            sharding.to_host(visits[:, epoch])[:n, None], first_epoch=epoch)
    return tree, {}

  epoch_fn = loop.make_epoch_fn(
      step, lambda epoch, start: ctx.train_batches(epoch, start=start),
      mesh=ctx.mesh, carry=("state", "traj"), finish=finish)

  tree = loop.run_epochs(
      stage="warmup", workdir=ctx.workdir,
      checkpoint_dir=os.path.join(ctx.workdir, "checkpoints", "warmup"),
      tree=tree, num_epochs=epochs, steps_per_epoch=spe, epoch_fn=epoch_fn,
      checkpoint_every=ctx.checkpoint_every,
      checkpoint_every_steps=ctx.checkpoint_every_steps,
      learning_rate=ctx.make_schedule(max(schedule_epochs, epochs) * spe, spe),
      stamp=stamp)

  t0 = time.perf_counter()
  state = tree["state"]
  if rows_only:
    return _process_rows(tree, n, record_eval, t0)
  art = {k: v[:n] for k, v in sharding.to_host(tree["traj"]).items()}
  if record_eval:
    art.update({f"eval_{k}": v[:n]
                for k, v in sharding.to_host(tree["eval_traj"]).items()})
  if "features" in need:
    art["features"] = _features(ctx, state)
  if "grad_norms" in need:
    art["grad_norms"] = _grad_norms(ctx, state)
  if "uncertainty" in need:
    art["uncertainty"] = _uncertainty(ctx, state)
  if "boundary" in need:
    art["boundary"] = _boundary(ctx, state)
    art["boundary_settings"] = decision_distance.settings()
  art["warmup_seconds"] = np.float64(float(tree["seconds"]) +
                                     time.perf_counter() - t0)
  loop.check_finite_arrays(art, "the warm-up's per-example statistics")
  if wd.is_writer():
    wd.write_npz(art_path, **art, stamp=np.array(stamp))
    # The stage file: the artefacts' content hash, checked when read back.
    wd.write_json(_hash_path(art_path), {"sha256": wd.file_sha256(art_path),
                                         "stamp": stamp})
  return art


def _process_rows(tree: dict[str, Any], n: int, record_eval: bool,
                  t0: float) -> dict[str, np.ndarray]:
  """This process's rows of the trajectories (ids < n), with `row_ids`."""
  art = {}
  for key, prefix in (("traj", ""), ("eval_traj", "eval_")):
    if key == "eval_traj" and not record_eval:
      continue
    for k, v in tree[key].items():
      ids, rows = sharding.process_rows(v)
      real = ids < n
      art[prefix + k] = rows[real]
      art["row_ids"] = ids[real]
  art["warmup_seconds"] = np.float64(float(tree["seconds"]) +
                                     time.perf_counter() - t0)
  # Every process decides alike: the non-finite counts of all the rows.
  keys = sorted(k for k in art if np.issubdtype(art[k].dtype, np.inexact))
  bad = np.array([int((~np.isfinite(art[k])).sum()) for k in keys], np.int64)
  if jax.process_count() > 1:
    bad = multihost_utils.process_allgather(bad).sum(axis=0)
  loop.check_finite_arrays(
      {k: np.full(int(b), np.nan) for k, b in zip(keys, bad)},
      "the warm-up's per-example statistics")
  return art


def _collect_rows(ctx: context_lib.Context, state: Any, rows_fn,
                  width: tuple[int, ...]) -> np.ndarray:
  """`[N, *width]` per-example values of every training example, by id.

  `rows_fn(variables, batch) -> [B, *width]` runs inside one jitted call
  with the scatter into a buffer split by rows over the devices (the
  one-field trajectory).
  """
  n = ctx.data.train.num_examples

  def collect(variables, buf, batch):
    stats = {"id": batch["id"], "mask": batch["mask"],
             "value": rows_fn(variables, batch)}
    return trajectory.record({"value": buf, "visits": visits}, stats, 0,
                             mesh=ctx.mesh, sharded=True)["value"]

  rows = sharding.padded_rows(n, ctx.mesh)
  where = sharding.rows_sharding(ctx.mesh)
  visits = sharding.zeros((rows, 1), np.int32, where)
  collect = jax.jit(collect, donate_argnums=(1,))
  buf = sharding.zeros((rows, 1, *width), np.float32, where)
  for batch in ctx.eval_batches(ctx.data.train):
    buf = collect(state.variables, buf, batch)
  return sharding.to_host(buf)[:n, 0]


def _feature_dim(ctx: context_lib.Context, state: Any) -> int:
  """D, the width of the model's penultimate features (shapes only)."""
  eval_fn = train_step.make_eval_step(ctx.apply_fn, with_features=True)
  batch = next(iter(ctx.eval_batches(ctx.data.train)))
  return int(jax.eval_shape(eval_fn, state.variables, batch
                            )["features"].shape[-1])


def _features(ctx: context_lib.Context, state: Any) -> np.ndarray:
  """Penultimate features `[N, D]` of every training example (eval mode)."""
  eval_fn = train_step.make_eval_step(ctx.apply_fn, with_features=True)
  return _collect_rows(
      ctx, state, lambda v, b: eval_fn(v, b)["features"],
      (_feature_dim(ctx, state),))


def _uncertainty(ctx: context_lib.Context, state: Any) -> np.ndarray:
  """DeepCore's uncertainty scores `[N, 4]` at the end of warm-up (eval
  mode; columns `methods.uncertainty.COLUMNS`)."""
  def rows(variables, batch):
    logits, _ = ctx.apply_fn(variables, batch["image"], train=False,
                             mask=batch["mask"])
    return uncertainty.uncertainty_columns(logits)

  return _collect_rows(ctx, state, rows, (len(uncertainty.COLUMNS),))


def _boundary(ctx: context_lib.Context, state: Any) -> np.ndarray:
  """Distances `[N]` to the decision boundary at the end of warm-up, in
  sign-gradient steps (eval mode; `methods.decision_distance.boundary_distance` with
  its `STEP_SIZE` and `MAX_STEPS`)."""
  def apply_eval(variables, x):
    return ctx.apply_fn(variables, x, train=False)[0]

  return _collect_rows(
      ctx, state, lambda v, b: decision_distance.boundary_distance(
          apply_eval, v, b["image"], b["label"]).astype(np.float32), ())


def _grad_norms(ctx: context_lib.Context, state: Any) -> np.ndarray:
  """Per-example gradient norms `[N]` (GraNd) at the end of warm-up."""
  def apply_eval(variables, x):
    return ctx.apply_fn(variables, x, train=False)[0]

  return _collect_rows(
      ctx, state, lambda v, b: losses.per_example_grad_norms(
          apply_eval, v, b["image"], b["label"], b["mask"]), ())
