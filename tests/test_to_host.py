"""`sharding.to_host` on 2 processes: exact, and gathered in bounded pieces.

Two local processes of 2 CPU devices each (gloo), each under `timeout`.
Row-split arrays (one axis, rows over `data` of a 2-D mesh, rows over both
axes) come back bit for bit (-0.0, NaN, +-inf included) while no piece
sent to the devices exceeds the bytes asked for (one row at least); an
array split on its second axis takes the whole gather and is exact too.
"""

import json
import os
import subprocess
import sys

import pytest

from tests import multihost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_row_split_arrays_come_back_exactly_in_bounded_pieces():
  port = multihost.free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      ["timeout", "-k", "10", "180", sys.executable,
       os.path.join(ROOT, "tests", "to_host_worker.py"), str(port), "2",
       str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate() for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  for stdout, _ in outs:
    got = json.loads(stdout.strip().splitlines()[-1])
    assert got["same"] and all(got["same"].values()), got["same"]
    for key, piece in got["max_piece"].items():
      layout, name = key.split("/")
      row = {"float": 16, "special": 4, "int": 16, "bool": 1}[name]
      if layout == "second_axis":
        assert got["whole"][key], key  # The whole gather (another layout).
        continue
      assert not got["whole"][key], key
      # The 2 layout exchanges, then rounds of pieces (80 rows).
      assert got["pieces"][key] >= 2 + 80 // max(
          1, 32 // row) // 2, (key, got["pieces"][key])
      # 64 bytes per round over 2 processes: a piece of 32 bytes, at
      # least one row; the layout exchange sends 16 bytes per process.
      assert piece <= max(32, row, 16), (key, piece)
