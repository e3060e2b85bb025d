"""Dense per-example, per-epoch statistics, filled by global example id.

A trajectory is a dict of arrays with `N` examples and `R` epochs:
  `loss`, `p_true`, `el2n`: float32 `[N, R]`.
  `correct`: bool `[N, R]`.
  `visits`: int32 `[N, R]`, how often example `i` was recorded in epoch `r`.
Optional fields (`init_trajectory(..., fields=FIELDS + MARGIN_FIELDS)`):
  `margin`, `p_margin`: float32 `[N, R]`, the logit and probability
  margins of `losses.per_example_stats` (AUM's input).
Each epoch must record every example exactly once; `check_visits` reports
examples that were missed or seen twice instead of letting them silently
corrupt the scores.

Layouts on a mesh. Replicated (the default): every device holds all
`[N, R]`. Sharded (`init_trajectory(..., mesh=mesh)` and `record(...,
mesh=mesh, sharded=True)`): the rows are split over the batch axes of the
mesh (the axis `data`, or the `axis=` you give `shard_batch`, or a
`NamedSharding`), so each device holds `N_pad * R / devices` values per
field, where `N_pad = sharding.padded_rows(N, mesh, axis)` rounds N up to a
multiple of the device count. Rows `N..N_pad-1` are padding: no example
id addresses them, so they stay zero (`visits` 0) and are never selected
once sliced off (`traj[k][:N]`, or `unpad`); score the padded array and
slice the `[N]` scores. Both layouts record the same values.
"""

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from mrmc_jax import checking
from mrmc_jax import sharding
from mrmc_jax import validation

Array = jax.Array
Trajectory = dict[str, Array]

FIELDS = ("loss", "correct", "p_true", "el2n")
# Recorded only when asked for (AUM and the margin difficulty scores): 8
# more bytes per example and epoch.
MARGIN_FIELDS = ("margin", "p_margin")
# Every array of a trajectory: the recorded fields, then the visit counts.
KEYS = FIELDS + ("visits",)


def check_fields(fields: Any) -> None:
  """Refuses field names `init_trajectory` does not know (one line)."""
  if isinstance(fields, str) or not isinstance(fields, (tuple, list)):
    raise ValueError(f"fields={fields!r} is not allowed: pass a tuple of "
                     f"names from "
                     f"{', '.join(repr(f) for f in FIELDS + MARGIN_FIELDS)}.")
  if "visits" in fields:
    raise ValueError(f"fields={tuple(fields)!r} is not allowed: 'visits' is "
                     "always added; name only the recorded fields.")
  known = FIELDS + MARGIN_FIELDS
  unknown = [f for f in fields if f not in known]
  if unknown:
    raise ValueError(f"fields={tuple(fields)!r} holds unknown names "
                     f"{unknown}; allowed: "
                     f"{', '.join(repr(f) for f in known)}.")
  if len(set(fields)) != len(fields):
    raise ValueError(f"fields={tuple(fields)!r} names a field twice.")


def init_trajectory(num_examples: int,
                    num_epochs: int,
                    fields: Sequence[str] = FIELDS,
                    *,
                    mesh: Optional[sharding.MeshLike] = None,
                    axis: sharding.Axis = sharding.DATA_AXIS) -> Trajectory:
  """Returns an empty trajectory of `num_examples x num_epochs`.

  Args:
    num_examples: N.
    num_epochs: R.
    fields: the recorded fields, a tuple of names from `FIELDS` (`correct`
      is bool, the others float32); an unknown name is refused.
    mesh: None for arrays on the default device (replicate them with
      `sharding.replicate` for the replicated layout); a `Mesh` or the
      batch's `NamedSharding` for the sharded layout: `[N_pad, R]` arrays
      split by rows like the batch (`sharding.rows_sharding`), created in
      place (no device or host ever holds the whole buffer), with
      `N_pad = sharding.padded_rows(N, mesh, axis)`. Record into it with
      `record(..., mesh=mesh, sharded=True, axis=axis)`.
    axis: with a `Mesh`, the mesh axis name(s) the batch (and so the rows)
      is split over, as for `shard_batch` (e.g. `'batch'` for
      `Mesh(devices, ('batch',))`); left at its default with a
      `NamedSharding`.

  Returns:
    `{field: array}` for each field plus `visits`, all zero, every array
    `[N, R]` (`[N_pad, R]`, row-sharded, with `mesh`).

  Raises:
    ValueError: a negative or traced size, an unknown field, or `axis`
      not an axis of the mesh.
  """
  validation.check_static(num_examples, "num_examples")
  validation.check_static(num_epochs, "num_epochs")
  validation.check_int(num_examples, "num_examples", minimum=0)
  validation.check_int(num_epochs, "num_epochs", minimum=0)
  check_fields(fields)
  dtypes = {f: jnp.bool_ if f == "correct" else jnp.float32 for f in fields}
  dtypes["visits"] = jnp.int32
  if mesh is None:
    return {f: jnp.zeros((num_examples, num_epochs), d)
            for f, d in dtypes.items()}
  rows = sharding.padded_rows(num_examples, mesh, axis)
  where = sharding.rows_sharding(mesh, axis)
  return {f: sharding.zeros((rows, num_epochs), d, where)
          for f, d in dtypes.items()}


def unpad(traj: Trajectory, num_examples: int, *,
          mesh: Optional[sharding.MeshLike] = None,
          axis: sharding.Axis = sharding.DATA_AXIS) -> Trajectory:
  """The first `num_examples` rows of every array (drops the padding rows of
  the sharded layout; the identity on an unpadded trajectory).

  Args:
    traj: `{name: [N_pad, R, ...] array}`.
    num_examples: N <= N_pad.
    mesh: None: plain slices (on one device, XLA's layout). A `Mesh` or
      `NamedSharding`: the rows stay split like the batch
      (`sharding.rows_sharding(mesh, axis)`); N must then be a multiple of
      `sharding.num_row_shards(mesh, axis)`.
    axis: as for `init_trajectory`.

  Returns:
    `{name: [N, R, ...] array}`.

  Raises:
    ValueError: N larger than the rows, or (with `mesh`) N that does not
      split evenly over the devices.
  """
  validation.check_int(num_examples, "num_examples", minimum=0)
  rows = min((np.shape(v)[0] for v in traj.values()), default=num_examples)
  if num_examples > rows:
    raise ValueError(f"num_examples={num_examples} is not allowed: traj has "
                     f"only {rows} rows.")
  if mesh is None:
    return {k: v[:num_examples] for k, v in traj.items()}
  where = sharding.rows_sharding(mesh, axis)
  d = sharding.num_row_shards(mesh, axis)
  if num_examples % d:
    raise ValueError(
        f"num_examples={num_examples} is not allowed with mesh=: the rows "
        f"are split over {d} devices, so it must be a multiple of {d}; use "
        "mesh=None (plain slices) or slice the [N] scores instead.")
  return jax.jit(lambda t: {k: v[:num_examples] for k, v in t.items()},
                 out_shardings=where)(traj)


def check_record_inputs(traj: Any, stats: Any, epoch: Any, *,
                        fields: bool = True, name: str = "stats") -> None:
  """Checks `record`'s arguments: shapes and dtypes always (trace time),
  id and epoch values when concrete; see `record`.

  Args:
    traj: the trajectory.
    stats: `[B]` arrays `id`, `mask` and (with `fields`) one per field.
    epoch: the int scalar epoch.
    fields: also check the recorded fields; False checks ids and mask only.
    name: what `stats` is called in messages.

  Raises:
    ValueError: naming the argument, its shape and the expected one, or
      the first out-of-range id or epoch.
  """
  if not hasattr(traj, "keys") or "visits" not in traj:
    raise ValueError("traj must be a dict of [N, R] arrays with a 'visits' "
                     "entry (from init_trajectory).")
  validation.check_rank(traj["visits"], "traj['visits']", 2, "[N, R]")
  n, r = traj["visits"].shape
  if not hasattr(stats, "keys"):
    raise ValueError(f"{name} has type {type(stats).__name__}; expected a "
                     "dict of [B] arrays.")
  needed = ["id", "mask"] + [f for f in traj if f != "visits" and fields]
  missing = [k for k in needed if k not in stats]
  if missing:
    raise ValueError(
        f"{name} has keys {sorted(stats.keys())} but record needs {needed} "
        f"(the trajectory's fields, plus id and mask); missing {missing}. "
        "Use make_train_step(..., with_stats=True), or build the trajectory "
        "with init_trajectory(n, r, fields=...) of the fields you record.")
  for k in ("id", "mask"):
    validation.check_array(stats[k], f"{name}[{k!r}]", "[B]")
  validation.check_rank(stats["mask"], f"{name}['mask']", 1, "bool [B]")
  b = stats["mask"].shape[0]
  validation.check_mask_dtype(stats["mask"], f"{name}['mask']")
  validation.check_leading(stats["id"], f"{name}['id']", b,
                           "int [B] global example ids")
  validation.check_integer_dtype(stats["id"], f"{name}['id']")
  for f in needed[2:]:
    # A field may carry trailing axes (e.g. features: traj [N, R, D] and
    # stats [B, D]); the leading ones must match.
    shape = tuple(np.shape(traj[f]))
    if shape[:2] != (n, r):
      raise ValueError(f"traj[{f!r}] has shape {shape}; expected [N, R, ...] "
                       f"= {(n, r)} + ... like traj['visits'].")
    want = (b,) + shape[2:]
    if tuple(np.shape(stats[f])) != want:
      raise ValueError(
          f"{name}[{f!r}] has shape {tuple(np.shape(stats[f]))}; expected "
          f"[B] + traj's trailing axes = {want}, one value per example.")
  if np.ndim(epoch) != 0:
    raise ValueError(f"epoch has shape {np.shape(epoch)}; expected an int "
                     "scalar.")
  validation.check_integer_dtype(epoch, "epoch")
  validation.check_index_range(stats["id"], f"{name}['id']", n,
                               mask=stats["mask"], what="N, traj's rows")
  validation.check_index_range(epoch, "epoch", r, what="R, traj's columns")
  check_unique_ids(stats["id"], stats["mask"], f"{name}['id']")


def check_unique_ids(ids: Any, mask: Any, name: str = "stats['id']") -> None:
  """Concrete ids: refuses an id on two real rows of one batch (one line).

  Recorded twice, such an id would count two visits and keep one value.
  Traced ids are checked by the checked mode (`checking.check_unique`).
  """
  if not validation.is_concrete(ids, mask) or not np.size(ids):
    return
  real = np.flatnonzero(np.asarray(mask, bool))
  v = np.asarray(ids)[real]
  order = np.argsort(v, kind="stable")
  same = np.flatnonzero(v[order][1:] == v[order][:-1])
  if same.size:
    k = same[0]
    a, b = sorted((int(real[order[k]]), int(real[order[k + 1]])))
    raise ValueError(
        f"{name} holds id {int(v[order[k]])} on 2 real rows (rows {a} and "
        f"{b}), {same.size} repeats in all; every example must appear once "
        "per batch (and once per epoch): check the epoch's order.")


def record(traj: Trajectory, stats: dict[str, Array], epoch: Array, *,
           mesh: Optional[sharding.MeshLike] = None,
           sharded: bool = False,
           axis: sharding.Axis = sharding.DATA_AXIS) -> Trajectory:
  """Scatters one batch's statistics into column `epoch`, by global id.

  Pure and jit-able; donate `traj` to update it in place. Padding rows
  (`stats["mask"] == False`) are dropped, and so are rows flagged
  `stats["bad_label"]` (a label outside `[0, C)` under `jax.jit`, see
  `losses.per_example_stats`): they count no visit. An example seen twice
  in the same epoch (over two batches, or in one batch under `jax.jit`)
  keeps its last value and counts two visits, which `check_visits`
  reports.

  Checks. Shapes and dtypes are checked at trace time (`[B, 1]` ids, a
  missing field, a float epoch are refused). Called outside `jax.jit`, an
  id outside `[0, N)` on a real row, an id on two real rows of the batch
  or an epoch outside `[0, R)` is refused. Under `jax.jit` out-of-range
  rows (negative ones included) are dropped like padding, never wrapped
  around: they count no visit, so `check_visits` reports the ids that
  were missed. The checked mode (`checking.checked`) raises on them, and
  on an id repeated within the batch, instead.

  With the batch sharded over a mesh, pass `mesh` (and call this inside the
  same jitted function as the train step, e.g. via `make_recording_step`):
  the `[B]` rows are then all-gathered before the scatter, so every device
  updates its replica of the `[N, R]` buffer in place. Without the gather,
  XLA partitions the scatter-add as a local scatter plus an all-reduce of
  the whole buffer on every step, a cost that grows with N, not B.

  With `sharded=True` the trajectory is split by rows over the batch axes
  of `mesh` (`init_trajectory(n, r, mesh=mesh)`): after the same gather,
  each device keeps the rows whose id falls in its own contiguous range
  `[k * N_pad / d, (k + 1) * N_pad / d)` and scatters them, offset by the
  range start, into its shard (a `shard_map`); no device holds or
  communicates the whole buffer. The values are those of the replicated
  layout.

  Args:
    traj: the trajectory, arrays `[N, R]` (replicated when sharded), or
      `[N_pad, R]` split by rows with `sharded=True`.
    stats: `[B]` arrays `id`, `mask` and one per field of `traj`.
    epoch: int scalar in `[0, R)` (may be traced).
    mesh: the mesh the batch is sharded over, if any: any `Mesh` (whatever
      its axis names, 1-D or e.g. `("data", "model")`) or the batch's
      `NamedSharding`. The rows are gathered to every device of that mesh,
      so the replicated layout needs no axis name; the sharded one takes
      `axis`.
    sharded: `traj` is split by rows over the batch axes of `mesh` (needs
      `mesh`; the row count must be a multiple of their device count).
    axis: with `sharded` and a `Mesh`, the mesh axis name(s) the rows are
      split over, as given to `init_trajectory` and `shard_batch`.

  Returns:
    The updated trajectory, in the layout of `traj`.

  Raises:
    ValueError: see Checks above; `sharded` without `mesh`, or a row count
      that does not split evenly.
  """
  validation.check_static(sharded, "sharded")
  check_record_inputs(traj, stats, epoch)
  if sharded:
    _check_sharded(traj, mesh, axis)
  n, r = traj["visits"].shape
  checking.check_index_range(stats["id"], "id", n, mask=stats["mask"])
  checking.check_index_range(epoch, "epoch", r)
  checking.check_unique(stats["id"], "id", mask=stats["mask"])
  if "bad_label" in stats:
    stats = {**stats, "mask": stats["mask"] & ~stats["bad_label"]}
  if mesh is not None:
    keep = set(traj) | {"id", "mask"}
    stats = sharding.all_gather({k: v for k, v in stats.items() if k in keep},
                                mesh)
  if sharded:
    return _record_sharded(traj, stats, epoch, mesh, axis)
  return _scatter(traj, stats, stats["id"], epoch)


def _scatter(traj: Trajectory, stats: dict[str, Array], rows: Array,
             epoch: Array) -> Trajectory:
  """Writes `stats` at (`rows`, `epoch`) of `traj`'s own rows `[0, n)`."""
  n, r = traj["visits"].shape
  # Padding and out-of-range rows go to row n, out-of-range epochs to
  # column r: both past the end, where the scatter drops them. A negative
  # index would otherwise wrap around to the last row or column.
  rows = jnp.where(stats["mask"] & (rows >= 0) & (rows < n), rows, n)
  col = jnp.where((epoch >= 0) & (epoch < r), epoch, r)
  out = {}
  for f, arr in traj.items():
    if f == "visits":
      out[f] = arr.at[rows, col].add(1, mode="drop")
    else:
      out[f] = arr.at[rows, col].set(stats[f].astype(arr.dtype), mode="drop")
  return out


def _row_axes(mesh: sharding.MeshLike,
              axis: sharding.Axis) -> tuple[str, ...]:
  """The mesh axes the rows (and the batch) are split over, major first."""
  first = tuple(sharding.rows_sharding(mesh, axis).spec or (None,))[0]
  if first is None:
    return ()
  return (first,) if isinstance(first, str) else tuple(first)


def _check_sharded(traj: Trajectory, mesh: Any, axis: sharding.Axis) -> None:
  if mesh is None:
    raise ValueError("sharded=True is not allowed without mesh=: pass the "
                     "mesh (or the batch's NamedSharding) the trajectory is "
                     "split over.")
  n = traj["visits"].shape[0]
  d = sharding.num_row_shards(mesh, axis)
  if n % d:
    raise ValueError(
        f"traj has {n} rows, not a multiple of the {d} devices its rows are "
        "split over; build it with init_trajectory(n, r, mesh=mesh), which "
        f"pads to sharding.padded_rows(n, mesh) = "
        f"{sharding.padded_rows(n, mesh, axis)}.")


def _record_sharded(traj: Trajectory, stats: dict[str, Array], epoch: Array,
                    mesh: sharding.MeshLike,
                    axis: sharding.Axis) -> Trajectory:
  """`record` into row shards: each device scatters the ids of its range."""
  names = _row_axes(mesh, axis)
  if not names:  # rows not split: every device holds the whole buffer
    return _scatter(traj, stats, stats["id"], epoch)
  the_mesh = sharding.rows_sharding(mesh, axis).mesh
  local_rows = traj["visits"].shape[0] // sharding.num_row_shards(mesh, axis)
  spec = P(names[0] if len(names) == 1 else names)

  def local(shard, stats, epoch):
    k = 0  # this device's index along the (flattened) row axes
    for a in names:
      k = k * the_mesh.shape[a] + jax.lax.axis_index(a)
    # Ids of other ranges (and padding, negative ids) fall outside
    # [0, local_rows) and are dropped by the scatter.
    return _scatter(shard, stats, stats["id"] - k * local_rows, epoch)

  stats = {k: v for k, v in stats.items() if k in set(traj) | {"id", "mask"}}
  return jax.shard_map(
      local, mesh=the_mesh,
      in_specs=({f: spec for f in traj}, {k: P() for k in stats}, P()),
      out_specs={f: spec for f in traj})(traj, stats, jnp.asarray(epoch))


def make_recording_step(
    train_step: Callable[..., tuple[Any, dict[str, Array]]],
    *,
    mesh: Optional[sharding.MeshLike] = None,
    sharded: bool = False,
    axis: sharding.Axis = sharding.DATA_AXIS,
) -> Callable[..., tuple[Any, Trajectory, dict[str, Array]]]:
  """Fuses a train step and `record` into one function to jit.

  `jax.jit(make_recording_step(step, mesh=mesh), donate_argnums=(0, 1))`
  trains on a batch and records its statistics in one call: no host sync
  and no second dispatch per step. On a mesh this fusion is required: the
  statistics stay sharded inside the call and are gathered once.

  Args:
    train_step: `step(state, batch, rng=None) -> (state, stats)` returning
      per-example `stats` (`train_step.make_train_step(..., with_stats=True)`
      or the user's own step with the same outputs).
    mesh: the mesh (or the batch's `NamedSharding`) if the batch is
      sharded; see `record`.
    sharded: the trajectory is split by rows over the mesh
      (`init_trajectory(..., mesh=mesh)`); see `record`.
    axis: the mesh axis of the rows with `sharded`; see `record`.

  Returns:
    `step(state, traj, batch, epoch, rng=None) -> (state, traj, stats)`.
    It raises `ValueError` as `record` does; the batch's keys and shapes
    are checked before the train step runs.
  """

  def step(state, traj, batch, epoch, rng=None):
    if hasattr(batch, "keys") and "id" in batch and "mask" in batch:
      # Before the (expensive) train step: the ids and the epoch against
      # the trajectory, at trace time (and by value when concrete).
      check_record_inputs(traj, {"id": batch["id"], "mask": batch["mask"]},
                          epoch, fields=False, name="batch")
    if rng is None:
      state, stats = train_step(state, batch)
    else:
      state, stats = train_step(state, batch, rng)
    return state, record(traj, stats, epoch, mesh=mesh, sharded=sharded,
                         axis=axis), stats

  return step


@jax.jit
def _visit_errors(visits, epoch, num_examples):
  col = jax.lax.dynamic_index_in_dim(visits, epoch, axis=1, keepdims=False)
  real = jnp.arange(visits.shape[0]) < num_examples
  return jnp.sum(real & (col != 1), dtype=jnp.int32)


def epoch_visit_errors(visits: Array, epoch: Any, num_examples: int) -> Array:
  """How many of the first `num_examples` ids were not recorded exactly once
  in column `epoch`, counted on device (a scalar; the padding rows of the
  sharded layout are not counted).

  A per-epoch check without moving `[N]` visits to the host: fetch the
  column and call `check_visits` (for the ids) only when this is non-zero.

  Args:
    visits: int `[N, R]` or `[N_pad, R]` visit counts (replicated or
      sharded).
    epoch: int scalar column.
    num_examples: N, the rows that hold real examples.

  Returns:
    int32 scalar.
  """
  validation.check_rank(visits, "visits", 2, "[N, R]")
  validation.check_int(num_examples, "num_examples", minimum=0)
  if num_examples > visits.shape[0]:
    raise ValueError(f"num_examples={num_examples} is not allowed: visits "
                     f"has only {visits.shape[0]} rows.")
  return _visit_errors(visits, jnp.asarray(epoch, jnp.int32), num_examples)


class VisitError(ValueError):
  """Raised when an epoch did not record every example exactly once."""


def visit_report(visits: np.ndarray, epochs: Sequence[int] | None = None
                 ) -> dict[int, dict[str, np.ndarray]]:
  """Finds examples missed or recorded more than once, per epoch.

  Args:
    visits: int `[N, R]` visit counts.
    epochs: epoch columns to check (default: all).

  Returns:
    `{epoch: {"missing": ids, "duplicated": ids}}` for the faulty epochs only.
  """
  visits = np.asarray(visits)
  epochs = range(visits.shape[1]) if epochs is None else epochs
  report = {}
  for r in epochs:
    col = visits[:, r]
    missing = np.flatnonzero(col == 0)
    dup = np.flatnonzero(col > 1)
    if missing.size or dup.size:
      report[int(r)] = {"missing": missing, "duplicated": dup}
  return report


def check_visits(visits: np.ndarray, epochs: Sequence[int] | None = None,
                 *, first_epoch: int = 0) -> None:
  """Raises `VisitError` unless every example was seen once in each epoch.

  Args:
    visits: int `[N, R']` visit counts.
    epochs: columns to check (default: all).
    first_epoch: the epoch of column 0, for the message (e.g. pass `epoch`
      when checking the single column `visits[:, epoch:epoch + 1]`).
  """
  report = visit_report(visits, epochs)
  if report:
    r, bad = next(iter(report.items()))
    raise VisitError(
        f"epoch {first_epoch + r} (0-based): {bad['missing'].size} examples "
        f"never recorded (first ids {bad['missing'][:5].tolist()}), "
        f"{bad['duplicated'].size} recorded more than once (first ids "
        f"{bad['duplicated'][:5].tolist()}); {len(report)} faulty epochs in "
        "all. Every example must be recorded exactly once per epoch. Missed "
        "ids: under jax.jit, record drops rows whose id is outside [0, N), "
        "whose epoch is outside [0, R) or whose label is outside [0, C) "
        "(the step's num_bad_labels counts those); run the step under "
        "mrmc_jax.checked(step) to raise on the first such batch. Duplicated "
        "ids: check the epoch's order (each id once per epoch).")
