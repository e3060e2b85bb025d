"""Exact per-class top-k of row-sharded scores, without gathering the rows.

`select_mask` sorts all N scores on one device. On a pod the scores of the
warm-up lie split by rows over every chip and host (`sharding.map_rows`);
gathering them (and the `[N, R]` trajectory they come from) to every host is
what limits N. `sharded_select` keeps each row where it lies: for each class
it finds the threshold key of its quota (the quota-th key in the selection
order) by a bisection over key values, in which every round counts, per
class, the rows at or below the candidate thresholds and sums the `[C]`
counts over the devices (one `psum` of C ints per round; 64 rounds), and
then each device marks its own rows. The result is the mask `select_mask`
returns for the same scores, labels, quotas and `tie_seed`, ties included:
the key of a row is its score's sortable bits (descending, -0.0 as 0.0, NaN
last) over its tie key `selection.tie_keys(id, tie_seed)`, the order
`select_mask` sorts by, and the tie keys of distinct ids are distinct, so
the quota-th key of a class is unique.

`gather_mask` then brings the mask to every host as a bit array (N / 8 bytes
each), and `class_counts` the per-class counts the quotas are computed from.
Rows are by id: row i of an `[N_pad]` array holds example i (the layout of
the sharded trajectory); rows labelled -1 (padding, or rows that must never
be selected) take no quota.
"""

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from mrmc_jax import selection
from mrmc_jax import sharding
from mrmc_jax import validation

Array = jax.Array

# The bisection halves a 2^32-wide key range per round: 32 rounds for the
# score's bits and 32 for the tie key.
_ROUNDS = 32
_TOP = np.uint32(0xFFFFFFFF)


def _spec_axes(mesh: sharding.MeshLike, axis: sharding.Axis) -> Any:
  """The mesh axis name(s) the rows are split over (for `psum`)."""
  return sharding.rows_sharding(mesh, axis).spec[0]


@functools.partial(jax.jit, static_argnames=("num_classes", "mesh", "axis"))
def _counts(labels, *, num_classes, mesh, axis):
  spec = sharding.rows_sharding(mesh, axis).spec
  axes = _spec_axes(mesh, axis)

  def local(y):
    seg = jnp.where((y >= 0) & (y < num_classes), y, num_classes)
    # Labels below -1 or at/above C: counted apart, refused by the caller.
    bad = (y < -1) | (y >= num_classes)
    c = jnp.bincount(seg, length=num_classes + 1)[:num_classes]
    return jax.lax.psum(jnp.concatenate([c, jnp.sum(bad, keepdims=True)]),
                        axes)

  return jax.shard_map(local, mesh=sharding.rows_sharding(mesh, axis).mesh,
                       in_specs=(spec,),
                       out_specs=P(), check_vma=False)(labels.astype(jnp.int32))


@jax.jit
def _nan_rows(scores, labels):
  return jnp.sum(jnp.isnan(scores) & (labels >= 0), dtype=jnp.int32)


def class_counts(labels: Array, *, num_classes: int,
                 mesh: sharding.MeshLike,
                 axis: sharding.Axis = sharding.DATA_AXIS) -> np.ndarray:
  """Examples per class of row-sharded labels: int64 `[C]` on every host.

  Args:
    labels: int `[N_pad]` split by rows (`sharding.rows_sharding(mesh,
      axis)`), in `[0, C)` or -1 for rows that are no example (padding).
    num_classes: C.
    mesh, axis: where the rows lie, as for `sharding.rows_sharding`.

  Returns:
    The counts (one `psum` of C + 1 ints; no row leaves its device).

  Raises:
    ValueError: a label outside `[-1, C)`.
  """
  got = np.asarray(sharding.to_host(_counts(
      labels, num_classes=num_classes, mesh=mesh, axis=axis))).astype(
          np.int64)
  if got[-1]:
    raise ValueError(f"labels holds {int(got[-1])} values outside [-1, "
                     f"{num_classes}): each must be a class in [0, "
                     f"num_classes={num_classes}) or -1 (a padding row).")
  return got[:-1]


@functools.partial(jax.jit, static_argnames=("num_classes", "mesh", "axis"))
def _select(scores, labels, ids, quotas, tie_seed, *, num_classes, mesh,
            axis):
  spec = sharding.rows_sharding(mesh, axis).spec
  axes = _spec_axes(mesh, axis)
  with_seed = tie_seed is not None

  def local(s, y, i, q, seed):
    valid = (y >= 0) & (y < num_classes)
    cls = jnp.where(valid, y, 0)
    seg = jnp.where(valid, y, num_classes)
    # The key `select_mask` sorts by: descending score (-0.0 as 0.0, NaN
    # last), then the tie key.
    neg = jnp.where(s == 0, 0.0, -s.astype(jnp.float32))
    neg = jnp.where(jnp.isnan(neg), jnp.inf, neg)
    high = selection.sortable_u32(neg)
    low = selection.tie_keys(i, seed if with_seed else None)

    def count(pred):
      c = jax.ops.segment_sum(pred.astype(jnp.int32), seg,
                              num_segments=num_classes + 1)[:num_classes]
      return jax.lax.psum(c, axes)

    def bisect(pred_at, base):
      # Smallest t per class with base + count(pred_at(t)) >= quota.
      def body(_, lohi):
        lo, hi = lohi
        mid = lo + (hi - lo) // 2
        ok = base + count(pred_at(mid[cls])) >= q
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

      start = (jnp.zeros(num_classes, jnp.uint32),
               jnp.full(num_classes, _TOP, jnp.uint32))
      return jax.lax.fori_loop(0, _ROUNDS, body, start)[0]

    h = bisect(lambda t: high <= t, jnp.zeros(num_classes, jnp.int32))
    hc = h[cls]
    below = count(high < hc)
    l = bisect(lambda t: (high == hc) & (low <= t), below)
    # A quota of 0 ends at hc = 0, which no row's high reaches (only a NaN's
    # bits map to 0, and NaN became inf above): the class keeps nothing.
    take = (high < hc) | ((high == hc) & (low <= l[cls]))
    return valid & take

  seed = jnp.zeros((), jnp.int32) if tie_seed is None else tie_seed
  return jax.shard_map(local, mesh=sharding.rows_sharding(mesh, axis).mesh,
                       in_specs=(spec, spec, spec, P(), P()), out_specs=spec,
                       check_vma=False)(scores, labels.astype(jnp.int32),
                                        ids.astype(jnp.int32), quotas, seed)


def sharded_select(scores: Array, labels: Array, quotas: Any, *,
                   num_classes: int, mesh: sharding.MeshLike,
                   axis: sharding.Axis = sharding.DATA_AXIS,
                   ids: Optional[Array] = None,
                   tie_seed: Optional[int] = None) -> Array:
  """Per-class top-k of row-sharded scores: `select_mask`'s mask, in place.

  Class c keeps its `quotas[c]` highest-scored rows, ties in the order of
  `selection.tie_keys(id, tie_seed)` (to the lower id with `tie_seed=None`),
  exactly as `select_mask(scores, labels, quotas=quotas, tie_seed=...)`.
  No row leaves its device: 65 `psum`s of `[C]` int32 counts in all.
  Multi-host safe (every process calls it with the same arguments).

  Args:
    scores: float `[N_pad]` split by rows (`sharding.rows_sharding(mesh,
      axis)`); NaN is refused (in rows labelled -1 it is ignored).
    labels: int `[N_pad]` likewise, in `[0, C)`, or -1 for rows never
      selected (padding).
    quotas: int `[C]` (host), each at most its class's rows
      (`class_counts`); `selection.checked_class_quotas` of a ratio.
    num_classes: C.
    mesh, axis: where the rows lie, as for `sharding.rows_sharding`.
    ids: int `[N_pad]` global id of each row, split like the scores;
      default: the row index (row i is example i, as in the trajectory).
    tie_seed: int >= 0, or None (ties to the lower id).

  Returns:
    bool `[N_pad]` mask, split by rows like the scores.

  Raises:
    ValueError: quotas of another shape, negative, or above their class's
      rows; scores and labels of other shapes; NaN scores; labels outside
      `[-1, C)`.
  """
  validation.check_static(num_classes, "num_classes")
  q = np.asarray(quotas)
  if q.shape != (num_classes,) or q.dtype.kind not in "iu":
    raise ValueError(f"quotas has dtype {q.dtype} and shape {q.shape}; "
                     f"expected int [{num_classes}], one quota per class.")
  if np.shape(scores) != np.shape(labels) or np.ndim(scores) != 1:
    raise ValueError(f"scores has shape {np.shape(scores)} and labels "
                     f"{np.shape(labels)}; expected both [N_pad].")
  counts = class_counts(labels, num_classes=num_classes, mesh=mesh, axis=axis)
  nan = int(sharding.to_host(_nan_rows(scores, labels)))
  if nan:
    raise ValueError(f"scores holds {nan} NaN values in labelled rows; "
                     "expected numbers (+-inf allowed).")
  over = np.flatnonzero((q < 0) | (q > counts))
  if over.size:
    c = int(over[0])
    raise ValueError(f"quotas[{c}] = {int(q[c])} is not allowed: each quota "
                     f"must be in [0, rows of its class] (class {c} has "
                     f"{int(counts[c])}).")
  if tie_seed is not None:
    validation.check_seed(tie_seed, "tie_seed")
  if ids is None:
    ids = jax.jit(lambda: jnp.arange(np.shape(scores)[0], dtype=jnp.int32),
                  out_shardings=sharding.rows_sharding(mesh, axis))()
  return _select(scores, labels, ids,
                 sharding.replicate(q.astype(np.int32), mesh),
                 None if tie_seed is None else sharding.replicate(
                     np.int32(tie_seed), mesh),
                 num_classes=num_classes, mesh=mesh, axis=axis)


def sharded_select_ratio(scores: Array, labels: Array, ratio: float, *,
                         num_classes: int, mesh: sharding.MeshLike,
                         axis: sharding.Axis = sharding.DATA_AXIS,
                         ids: Optional[Array] = None,
                         tie_seed: Optional[int] = None) -> Array:
  """`sharded_select` with `selection.class_quotas` of `ratio`.

  The quotas come from the class counts (`class_counts`, one `psum`), so
  the mask equals `select_mask_host(scores, labels, ratio, ...)` of the
  labelled rows.

  Raises:
    ValueError: a ratio outside (0, 1] or one that selects no example,
      labels outside `[-1, C)`.
  """
  validation.check_ratio(ratio)
  counts = class_counts(labels, num_classes=num_classes, mesh=mesh, axis=axis)
  selection.check_nonzero_budget(ratio, int(counts.sum()))
  quotas = selection.quotas_from_sizes(counts, ratio)
  return sharded_select(scores, labels, quotas, num_classes=num_classes,
                        mesh=mesh, axis=axis, ids=ids, tie_seed=tie_seed)


@functools.partial(jax.jit, static_argnames=("mesh", "axis"))
def _pack(mask, *, mesh, axis):
  spec = sharding.rows_sharding(mesh, axis).spec

  def local(m):
    pad = -m.shape[0] % 8
    return jnp.packbits(jnp.pad(m, (0, pad)))

  return jax.shard_map(local, mesh=sharding.rows_sharding(mesh, axis).mesh,
                       in_specs=(spec,),
                       out_specs=spec, check_vma=False)(mask)


def gather_mask(mask: Array, num_examples: int, *, mesh: sharding.MeshLike,
                axis: sharding.Axis = sharding.DATA_AXIS) -> np.ndarray:
  """A row-sharded mask as a host bool `[N]` on every process, by bits.

  Each device packs its rows into bits; only the packed bytes are gathered
  (N / 8 bytes per host instead of the N-byte mask or the rows' ids).

  Args:
    mask: bool `[N_pad]` split by rows (rows by id, as `sharded_select`
      returns it).
    num_examples: N (the rows past it are padding).
    mesh, axis: as for `sharding.rows_sharding`.

  Returns:
    bool `[N]`, the same on every process.
  """
  d = sharding.num_row_shards(mesh, axis)
  rows = np.shape(mask)[0] // d
  packed = np.asarray(sharding.to_host(_pack(mask, mesh=mesh, axis=axis)))
  bits = np.unpackbits(packed.reshape(d, -1), axis=1)[:, :rows]
  return bits.reshape(-1)[:num_examples].astype(bool)


def select_rows(keys: Any, rows: Any, labels: Any, ratio: float, *,
                num_classes: int, mesh: sharding.MeshLike,
                axis: sharding.Axis = sharding.DATA_AXIS,
                class_balanced: bool = True,
                tie_seed: Optional[int] = None) -> np.ndarray:
  """The mask of the highest keys, from the keys of this process's rows.

  Each process passes the keys of the rows it holds in the row layout of
  `mesh` (`sharding.process_rows` of a `rows_sharding(mesh, axis)` array,
  padding rows left out or not); the keys are laid out by rows again and
  `sharded_select_ratio` selects without gathering them. The mask equals
  `selection.select_mask_host(all keys, labels, ratio, num_classes=...,
  class_balanced=..., tie_seed=...)`.

  Args:
    keys: float `[n]`, the keys of this process's rows (higher = keep;
      -inf: last).
    rows: int `[n]` their row indices (example ids), ascending.
    labels: int `[N]`, every example's label (host).
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    mesh, axis: the row layout (`sharding.rows_sharding(mesh, axis)`).
    class_balanced: per-class quotas, or one global budget.
    tie_seed: int >= 0, or None (ties to the lower id).

  Returns:
    bool `[N]`, the same on every process.

  Raises:
    ValueError: a row of this process's devices missing from `rows`,
      `keys` and `rows` of different lengths, or as `sharded_select_ratio`.
  """
  keys = np.asarray(keys, np.float32)
  rows = np.asarray(rows, np.int64)
  labels = np.asarray(labels)
  n = labels.shape[0]
  if keys.shape != rows.shape or keys.ndim != 1:
    raise ValueError(f"keys {keys.shape} and rows {rows.shape} must be 1-D "
                     "of the same length.")
  if not class_balanced:
    labels = np.where(labels >= 0, 0, -1)
    num_classes = 1
  where = sharding.rows_sharding(mesh, axis)
  padded = sharding.padded_rows(n, mesh, axis)

  def block(index, values, fill, dtype):
    want = np.arange(padded, dtype=np.int64)[index[0]]
    real = want[want < n]
    pos = np.minimum(np.searchsorted(rows, real), max(len(rows) - 1, 0))
    if len(real) and (len(rows) == 0 or (rows[pos] != real).any()):
      raise ValueError(f"select_rows: rows {real[0]}..{real[-1]} lie on this "
                       "process but their keys were not given.")
    out = np.full(len(want), fill, dtype)
    out[:len(real)] = values(pos, real)
    return out

  keys_g = jax.make_array_from_callback(
      (padded,), where, lambda i: block(i, lambda p, r: keys[p], -np.inf,
                                        np.float32))
  labels_g = jax.make_array_from_callback(
      (padded,), where, lambda i: block(i, lambda p, r: labels[r], -1,
                                        np.int32))
  chosen = sharded_select_ratio(keys_g, labels_g, ratio,
                                num_classes=num_classes, mesh=mesh, axis=axis,
                                tie_seed=tie_seed)
  return gather_mask(chosen, n, mesh=mesh, axis=axis)
