"""The end of the warm-up on 1 and 2 processes selects the same core-set.

Runs `benchmarks/warmup_gather_memory.py` (each process under `timeout`)
at a small N: the sharded path (per-process artefact files, scores where
the rows lie, `sharded_selection` over gloo collectives, the mask gathered
as bits) on 1 and 2 processes of 2 CPU devices each, and the gathering
path (`select_mask_host` on the whole arrays) on 1 process; every mask must
be the same. Its memory numbers are meaningful only at large N (docs).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sharded_selection_on_two_processes_equals_one_process(tmp_path):
  out = tmp_path / "result.json"
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  for paths, processes in (("gather", "1"), ("sharded", "1,2")):
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks",
                                      "warmup_gather_memory.py"),
         "--n=5003", "--classes=7", "--epochs=4", "--devices=2", "--tiny=0",
         "--timeout=200", f"--paths={paths}", f"--processes={processes}",
         f"--json={out}.{paths}"],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
  first = json.loads(open(f"{out}.gather").read())["results"]
  rest = json.loads(open(f"{out}.sharded").read())["results"]
  assert [r["processes"] for r in rest] == [1, 2]
  assert all(r["mask_same_as_first"] for r in rest)
  assert {r["mask_sha256"] for r in first + rest} == {
      first[0]["mask_sha256"]}
  assert {r["selected"] for r in first + rest} == {1500}  # floor(0.3 N)
