"""One process of `test_to_host.py`: `sharding.to_host` against JAX's
whole gather on row-split arrays; prints one JSON line.

  python tests/to_host_worker.py PORT NUM_PROCESSES PROCESS_ID
"""

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(port: str, num_processes: str, process_id: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(f"127.0.0.1:{port}", int(num_processes),
                             int(process_id))
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top

  pieces = []  # Bytes of every piece the row-wise gather sends.
  wholes = []  # Global arrays gathered whole (replicated on every device).
  whole = multihost_utils.process_allgather

  def recording(tree, tiled=False):
    for leaf in jax.tree_util.tree_leaves(tree):
      if isinstance(leaf, np.ndarray):
        pieces.append(int(leaf.nbytes))
      else:
        wholes.append(leaf.shape)
    return whole(tree, tiled=tiled)

  rng = np.random.default_rng(0)
  mesh = sharding.make_mesh()
  devices = np.array(jax.devices()).reshape(-1, 2)
  mesh2 = Mesh(devices, ("data", "model"))
  n = 4 * len(jax.devices()) * 5  # 5 rows per device
  values = {
      "float": rng.normal(size=(n, 4)).astype(np.float32),
      "special": np.array([-0.0, np.nan, np.inf, -np.inf] * (n // 4),
                          np.float32),
      "int": rng.integers(-9, 9, size=(n, 2, 2)).astype(np.int32),
      "bool": rng.random(n) < 0.5,
  }
  layouts = {
      "rows": lambda v: NamedSharding(mesh, P("data")),
      "rows_over_data_of_2d": lambda v: NamedSharding(mesh2, P("data")),
      "rows_over_both_of_2d": lambda v: NamedSharding(
          mesh2, P(("data", "model"))),
      "second_axis": lambda v: NamedSharding(
          mesh2, P(None, "model")) if v.ndim > 1 else None,
  }
  out = {"process": jax.process_index(), "same": {}, "max_piece": {},
         "pieces": {}, "whole": {}}
  multihost_utils.process_allgather = recording
  for lname, layout in layouts.items():
    for vname, v in values.items():
      where = layout(v)
      if where is None:
        continue
      x = jax.device_put(v, where) if jax.process_count() == 1 else (
          jax.make_array_from_callback(v.shape, where, lambda i, v=v: v[i]))
      pieces.clear()
      wholes.clear()
      got = sharding.to_host(x, gather_bytes=64)
      out["same"][f"{lname}/{vname}"] = bool(
          got.dtype == v.dtype and got.shape == v.shape and
          got.tobytes() == v.tobytes())
      out["max_piece"][f"{lname}/{vname}"] = max(pieces, default=0)
      out["pieces"][f"{lname}/{vname}"] = len(pieces)
      out["whole"][f"{lname}/{vname}"] = bool(wholes)
  print(json.dumps(out))


if __name__ == "__main__":
  main(*sys.argv[1:])
