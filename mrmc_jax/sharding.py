"""Data parallelism with `jax.jit` over a one-axis `Mesh`.

The batch is split on the `data` axis; parameters, optimiser state and the
trajectory buffer are replicated. Each process feeds its local rows, and
`jax.make_array_from_process_local_data` assembles the global batch, so the
same code runs on one CPU, eight simulated devices or a multi-host pod.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Splits the leading (batch) axis over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the devices and processes."""
  n = mesh.devices.size
  if batch_size % n or batch_size % jax.process_count():
    raise ValueError(
        f"batch_size={batch_size} is not allowed: it must be a multiple of "
        f"the device count {n} and the process count {jax.process_count()}.")


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh
                ) -> dict[str, jax.Array]:
  """Turns this process's rows into global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree of host or device arrays replicated on the mesh."""
  sharding = replicated(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x))
      if jax.process_count() > 1 else jax.device_put(x, sharding), tree)


def all_gather(tree: Any, mesh: Mesh) -> Any:
  """Inside jit: makes batch-sharded arrays replicated (an all-gather).

  Use it on the `[B]` statistics before scattering them into a replicated
  `[N, ...]` buffer: with the updates still split over `data`, XLA
  partitions a scatter-add (the trajectory's visit count) as a local
  scatter into a zero buffer followed by an all-reduce of the whole
  `[N, R]` buffer on every step, a cost that grows with N instead of B.
  Gathering the B rows first lets every device scatter them in place.
  """
  return jax.lax.with_sharding_constraint(tree, replicated(mesh))


def to_host(tree: Any) -> Any:
  """Fetches a pytree of (replicated or fully addressable) arrays to numpy."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = jax.experimental.multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)
  return jax.tree_util.tree_map(fetch, tree)
