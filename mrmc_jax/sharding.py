"""Data parallelism with `jax.jit` over a `Mesh`: yours or a one-axis one.

The batch is split on one mesh axis (`data` by default; any name, e.g. the
`batch` of `Mesh(devices, ("batch",))`, via `axis=`), or on the axes of a
`NamedSharding` you pass instead of the mesh; other axes of a 2-D mesh
(`("data", "model")`) hold the batch replicated. Parameters and optimiser
state are replicated (or sharded by you). N-sized buffers (the trajectory,
features) are replicated, or split by rows over the same axes as the batch
(`rows_sharding`, `padded_rows`, `zeros`, each with the same `axis=`), so
each device holds N / devices rows. Each process
feeds its local rows, and `jax.make_array_from_process_local_data` assembles
the global batch, so the same code runs on one CPU, eight simulated devices
or a multi-host pod.
"""

from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# A mesh axis name, or several (the batch split over their product).
Axis = Union[str, tuple[str, ...]]
# What the functions below accept as "where the batch lives".
MeshLike = Union[Mesh, NamedSharding]


def _mesh(mesh: MeshLike) -> Mesh:
  """The `Mesh` of a mesh or of a `NamedSharding`."""
  if isinstance(mesh, NamedSharding):
    return mesh.mesh
  if isinstance(mesh, Mesh):
    return mesh
  raise ValueError(f"mesh={mesh!r} is not allowed: pass a jax.sharding.Mesh "
                   "or a NamedSharding.")


def _axis_names(axis: Axis) -> tuple[str, ...]:
  names = (axis,) if isinstance(axis, str) else axis
  if (not isinstance(names, (tuple, list)) or not names
      or not all(isinstance(a, str) for a in names)):
    raise ValueError(f"axis={axis!r} is not allowed: pass a mesh axis name "
                     "or a tuple of them.")
  return tuple(names)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (global) devices, axis name `data`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def mesh_devices(num_devices: int | None = None) -> list[jax.Device]:
  """The devices of a data-parallel mesh: all of them, or the first n.

  Fewer devices than there are is for checks on one process (the same run
  on 1 and on 8 devices must select the same core-set). With several
  processes every process feeds its slice of each batch to its own devices,
  so the mesh must span all of them.

  Args:
    num_devices: None for every global device, else n in [1, device count].

  Returns:
    The devices, in `jax.devices()` order.

  Raises:
    ValueError: n out of range, or a subset with more than one process.
  """
  devices = jax.devices()
  if num_devices is None:
    return devices
  if (isinstance(num_devices, bool) or not isinstance(num_devices, int)
      or not 1 <= num_devices <= len(devices)):
    raise ValueError(f"num_devices={num_devices!r} is not allowed: it must "
                     f"be None or an int in [1, {len(devices)}].")
  if jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(f"num_devices={num_devices!r} is not allowed with "
                     f"{jax.process_count()} processes: use None (all "
                     f"{len(devices)} devices).")
  return devices[:num_devices]


def batch_sharding(mesh: MeshLike, axis: Axis = DATA_AXIS) -> NamedSharding:
  """Splits the leading (batch) axis over the mesh axis (or axes) `axis`.

  Args:
    mesh: a `Mesh`, or a `NamedSharding`, which is returned as it is (then
      `axis` must be left at its default).
    axis: the mesh axis name the batch is split over, or a tuple of names
      (split over their product). Other mesh axes (e.g. `model` of a
      `("data", "model")` mesh) hold the batch replicated.

  Returns:
    The `NamedSharding` of a `[B, ...]` batch array.

  Raises:
    ValueError: `axis` names no axis of the mesh.
  """
  if isinstance(mesh, NamedSharding):
    if axis != DATA_AXIS:
      raise ValueError(f"axis={axis!r} is not allowed with a NamedSharding: "
                       "the sharding already says how the batch is split.")
    return mesh
  mesh = _mesh(mesh)
  names = _axis_names(axis)
  missing = [a for a in names if a not in mesh.axis_names]
  if missing:
    raise ValueError(
        f"axis={axis!r} is not allowed: the mesh has axes "
        f"{tuple(mesh.axis_names)}; pass axis= one of them (the batch axis) "
        "or a NamedSharding.")
  return NamedSharding(mesh, P(names[0] if len(names) == 1 else names))


def replicated(mesh: MeshLike) -> NamedSharding:
  """Every device of the mesh holds the whole array."""
  return NamedSharding(_mesh(mesh), P())


def _batch_devices(sharding: NamedSharding) -> int:
  """How many ways the leading axis is split (1 if it is replicated)."""
  spec = tuple(sharding.spec)
  first = spec[0] if spec else None
  names = () if first is None else ((first,) if isinstance(first, str)
                                    else tuple(first))
  return int(np.prod([sharding.mesh.shape[a] for a in names], dtype=np.int64))


def num_row_shards(mesh: MeshLike, axis: Axis = DATA_AXIS) -> int:
  """How many ways `batch_sharding(mesh, axis)` splits a leading axis."""
  return _batch_devices(batch_sharding(mesh, axis))


def padded_rows(num_rows: int, mesh: MeshLike, axis: Axis = DATA_AXIS) -> int:
  """`num_rows` rounded up to a multiple of `num_row_shards(mesh, axis)`.

  A buffer of N rows split by rows over d devices needs N a multiple of d;
  the extra rows are padding that no id addresses. `mesh` and `axis` as
  for `batch_sharding`.
  """
  if isinstance(num_rows, bool) or not isinstance(num_rows, (int, np.integer)
                                                   ) or num_rows < 0:
    raise ValueError(f"num_rows={num_rows!r} is not allowed: it must be a "
                     "non-negative int.")
  d = num_row_shards(mesh, axis)
  return -(-int(num_rows) // d) * d


def rows_sharding(mesh: MeshLike, axis: Axis = DATA_AXIS) -> NamedSharding:
  """Splits the leading (row) axis of an `[N, ...]` buffer like the batch.

  The same sharding as `batch_sharding(mesh, axis)`: rows over the batch
  axes, replicated over the other mesh axes. N must be a multiple of
  `num_row_shards(mesh, axis)` (see `padded_rows`).
  """
  return batch_sharding(mesh, axis)


def map_rows(fn: Any, mesh: MeshLike, axis: Axis = DATA_AXIS) -> Any:
  """Runs a row-wise `fn` on each device's own rows (a `shard_map`).

  For functions whose row i of the output depends only on row i of the
  input, such as `mrmc_scores` (the fit is per example): on a row-sharded
  `[N_pad, ...]` array, each device computes its `N_pad / d` rows and
  nothing is gathered. Plain `jax.jit` cannot always see that a function is
  row-wise (a loop over row blocks looks global) and may gather the input.

  Args:
    fn: `[n, ...] -> pytree of [n, ...]`, one argument.
    mesh: as for `rows_sharding`.
    axis: the mesh axis name(s) the rows are split over, as for
      `shard_batch` (left at its default with a `NamedSharding`).

  Returns:
    `x -> fn(x)` over row shards; input and outputs
    `rows_sharding(mesh, axis)`.
  """
  spec = rows_sharding(mesh, axis).spec
  # No collectives inside a row-wise fn, so the varying-axes check (which
  # refuses e.g. a fori_loop whose carry starts from fresh zeros) is off.
  return jax.shard_map(fn, mesh=_mesh(mesh), in_specs=(spec,),
                       out_specs=spec, check_vma=False)


def zeros(shape: tuple[int, ...], dtype: Any, sharding: NamedSharding
          ) -> jax.Array:
  """A zero array created in place with `sharding`: each device allocates
  only its own shard (no host copy, no full buffer anywhere); multi-host
  safe (every process calls it with the same arguments)."""
  shape = tuple(int(d) for d in shape)
  return jax.jit(lambda: jnp.zeros(shape, dtype),
                 out_shardings=sharding)()


def check_batch_size(batch_size: int, mesh: MeshLike,
                     axis: Axis = DATA_AXIS) -> None:
  """The global batch must split evenly over the batch axis and processes."""
  n = _batch_devices(batch_sharding(mesh, axis))
  if batch_size % n or batch_size % jax.process_count():
    raise ValueError(
        f"batch_size={batch_size} is not allowed: it must be a multiple of "
        f"the device count {n} of the batch axis and the process count "
        f"{jax.process_count()}.")


def shard_batch(local_batch: dict[str, np.ndarray], mesh: MeshLike,
                axis: Axis = DATA_AXIS) -> dict[str, jax.Array]:
  """Turns this process's rows into global arrays split on the batch axis.

  Args:
    local_batch: this process's `[B_local, ...]` arrays.
    mesh: the `Mesh` (the batch is split over `axis`), or a `NamedSharding`
      of the batch (e.g. `NamedSharding(mesh, P(("replica", "data")))`).
    axis: the mesh axis name(s) of the batch; default `data`.

  Returns:
    Global `[B, ...]` arrays, `B = B_local * process count`.

  Raises:
    ValueError: `local_batch` is not a dict, or `axis` is not an axis of
      the mesh.
  """
  if not hasattr(local_batch, "items"):
    raise ValueError(f"local_batch has type {type(local_batch).__name__}; "
                     "expected a dict of [B_local, ...] arrays.")
  sharding = batch_sharding(mesh, axis)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def _from_every_process(sharding: NamedSharding, x: Any) -> jax.Array:
  """The same value given by every process, as one global array.

  Typed PRNG keys (e.g. the `nnx.Rngs` streams of an NNX state) travel as
  their raw key data and are wrapped again.
  """
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key):
    data = jax.make_array_from_process_local_data(
        sharding, np.asarray(jax.random.key_data(x)))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  return jax.make_array_from_process_local_data(sharding, np.asarray(x))


def replicate(tree: Any, mesh: MeshLike) -> Any:
  """Places a pytree of host or device arrays replicated on the mesh."""
  sharding = replicated(mesh)
  return jax.tree_util.tree_map(
      lambda x: _from_every_process(sharding, x)
      if jax.process_count() > 1 else jax.device_put(x, sharding), tree)


def all_gather(tree: Any, mesh: MeshLike) -> Any:
  """Inside jit: makes batch-sharded arrays replicated (an all-gather).

  The target is replicated on every axis of the mesh (or of the
  `NamedSharding`'s mesh), so it works whatever the axis names and on 2-D
  (data x model) meshes.

  Use it on the `[B]` statistics before scattering them into a replicated
  `[N, ...]` buffer: with the updates still split over `data`, XLA
  partitions a scatter-add (the trajectory's visit count) as a local
  scatter into a zero buffer followed by an all-reduce of the whole
  `[N, R]` buffer on every step, a cost that grows with N instead of B.
  Gathering the B rows first lets every device scatter them in place.
  """
  return jax.lax.with_sharding_constraint(tree, replicated(mesh))


# The most bytes one round of `to_host`'s row-wise gather places on each
# device (the rounds' pieces of every process together).
GATHER_BYTES = 1 << 28


def to_host(tree: Any, gather_bytes: int = GATHER_BYTES) -> Any:
  """Fetches a pytree of arrays to numpy on every process.

  A fully addressable array (one process) is read from its shards. An
  array split by rows over several processes (`rows_sharding`) is gathered
  by rows, in rounds of at most `gather_bytes` on each device: each process
  contributes a piece of its own rows, so no device ever holds the whole
  array, as `multihost_utils.process_allgather` would (it replicates it on
  every device: `[N, 512]` features at 100M examples are 190 GiB). The host
  result is the whole array on every process. Any other layout (split on a
  later axis, pieces of unequal size) is gathered whole, as before.

  Args:
    tree: a pytree of `jax.Array`s (or numpy arrays, returned as they are).
    gather_bytes: bytes per device per round of the row-wise gather.

  Returns:
    The same pytree of numpy arrays, each of its global shape.
  """
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      got = _gather_rows(x, gather_bytes)
      if got is None:
        x = multihost_utils.process_allgather(x, tiled=True)
      else:
        return got
    return np.asarray(x)
  return jax.tree_util.tree_map(fetch, tree)


def _local_row_blocks(x: jax.Array) -> Optional[dict[int, np.ndarray]]:
  """`{first row: rows}` of the distinct row blocks this process holds, or
  None if `x` is split on any axis but the first."""
  blocks = {}
  for shard in x.addressable_shards:
    rows, *rest = shard.index
    if any(r != slice(None) and (r.start, r.stop) != (0, n)
           for r, n in zip(rest, x.shape[1:])):
      return None
    start = rows.start or 0
    if start not in blocks:
      blocks[start] = np.asarray(shard.data)
  return blocks


def process_rows(x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
  """The rows of a row-split array that this process holds, by row index.

  Args:
    x: `[N, ...]` split by rows (`rows_sharding`), on one or many processes.

  Returns:
    `(rows int64 [n], values [n, ...])`: the distinct rows of `x` on this
    process's devices, ascending (a row held by several local devices, e.g.
    over the `model` axis of a 2-D mesh, once), as host numpy arrays.

  Raises:
    ValueError: `x` is split on an axis other than the first.
  """
  blocks = _local_row_blocks(x)
  if blocks is None:
    raise ValueError(f"process_rows needs an array split by rows only; got "
                     f"the sharding {x.sharding}.")
  firsts = sorted(blocks)
  if not firsts:
    return np.zeros(0, np.int64), np.zeros((0, *x.shape[1:]), x.dtype)
  rows = np.concatenate([np.arange(f, f + len(blocks[f]), dtype=np.int64)
                         for f in firsts])
  return rows, np.concatenate([blocks[f] for f in firsts])


def _gather_rows(x: jax.Array, gather_bytes: int) -> Optional[np.ndarray]:
  """`x` on the host, gathered by rows in bounded rounds (see `to_host`);
  None where its layout is not equal row blocks on every process (every
  process decides alike: the layout is compared first)."""
  if x.ndim == 0 or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return None
  blocks = _local_row_blocks(x)
  if blocks is None:
    layout = np.full((1, 2), -1, np.int64)
  else:
    sizes = {len(b) for b in blocks.values()}
    layout = (np.array([[len(blocks), sizes.pop()]], np.int64)
              if len(sizes) == 1 else np.full((1, 2), -1, np.int64))
  layouts = multihost_utils.process_allgather(layout)[:, 0]
  if (layouts < 0).any() or (layouts != layouts[0]).any():
    return None
  num_blocks, block = (int(v) for v in layouts[0])
  firsts = multihost_utils.process_allgather(
      np.array(sorted(blocks), np.int64))  # [P, num_blocks]
  covered = sorted({int(f) for f in firsts.ravel()})
  if sum(min(block, x.shape[0] - f) for f in covered) != x.shape[0] or any(
      b - a < block for a, b in zip(covered, covered[1:])):
    return None  # Overlapping or missing rows: not a row split.
  row_bytes = max(1, x.dtype.itemsize * int(np.prod(x.shape[1:])))
  piece = max(1, min(block, gather_bytes // (row_bytes * len(firsts))))
  out = np.empty(x.shape, x.dtype)
  local = [blocks[f] for f in sorted(blocks)]
  for j in range(num_blocks):
    for offset in range(0, block, piece):
      mine = local[j][offset:offset + piece]
      if len(mine) < piece:  # The same shape on every process.
        mine = np.concatenate(
            [mine, np.zeros((piece - len(mine), *x.shape[1:]), x.dtype)])
      got = multihost_utils.process_allgather(mine)  # [P, piece, ...]
      for p, first in enumerate(firsts[:, j]):
        lo = int(first) + offset
        hi = min(lo + piece, int(first) + block, x.shape[0])
        if hi > lo:
          out[lo:hi] = got[p, :hi - lo]
  return out
