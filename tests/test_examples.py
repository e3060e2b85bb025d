"""The examples run, and the README's library snippet is the example's core."""

import os
import re
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import flax_loop  # pylint: disable=g-import-not-at-top,wrong-import-position
import nnx_loop  # pylint: disable=g-import-not-at-top,wrong-import-position
import sharded_loop  # pylint: disable=g-import-not-at-top,wrong-import-position


def _example_core(example: str, marker: str) -> str:
  src = open(os.path.join(ROOT, "examples", example)).read()
  core = re.search(rf"# --- README: {marker} \(start\) ---\n(.*?)\n"
                   rf"\s*# --- README: {marker} \(end\) ---", src, re.S)
  return textwrap.dedent(core.group(1)).strip()


@pytest.mark.parametrize("example,marker,section", [
    ("flax_loop.py", "Library use", "## Library use"),
    ("nnx_loop.py", "NNX", "### Flax NNX"),
])
def test_readme_library_snippet_is_the_example_core(example, marker, section):
  readme = open(os.path.join(ROOT, "README.md")).read()
  text = readme.split(section, 1)[1]
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert any(_example_core(example, marker) in b for b in blocks), (
      f"README '{section}' must contain the core of examples/{example}")


@pytest.fixture(scope="module")
def linen_run():
  return flax_loop.main()


def test_user_nnx_loop_selects_the_same_kind_of_core_set(linen_run):
  out = nnx_loop.main()
  n = out["num_examples"]
  assert out["num_selected"] == linen_run["num_selected"]
  assert out["warmup_steps"] == (nnx_loop.WARMUP_EPOCHS
                                 * -(-n // flax_loop.BATCH_SIZE))
  # The same per-class quotas as the Linen loop, and mostly the same
  # examples (another model and init: not all of them).
  _, y = flax_loop.load_digits()[0]
  np.testing.assert_array_equal(np.bincount(y[out["mask"]], minlength=10),
                                np.bincount(y[linen_run["mask"]],
                                            minlength=10))
  overlap = np.sum(out["mask"] & linen_run["mask"]) / out["num_selected"]
  assert overlap > 0.6, overlap  # chance: 0.3
  assert out["test_accuracy"] > 0.85


@pytest.mark.slow
def test_user_loop_with_dropout_batchnorm_label_smoothing(linen_run):
  out = linen_run
  n = out["num_examples"]
  assert out["num_selected"] == int(np.floor(flax_loop.RATIO * n + 1e-9))
  # Trained on 30% of digits, far above chance (10%).
  assert out["test_accuracy"] > 0.85
  # The sharded loop on 1 and on 8 devices selects the same core-set as the
  # plain loop (same seeds, same data order).
  one = sharded_loop.main(num_devices=1)
  eight = sharded_loop.main(num_devices=8)
  np.testing.assert_array_equal(one["mask"], out["mask"])
  np.testing.assert_array_equal(eight["mask"], one["mask"])
  assert eight["test_accuracy"] > 0.85
