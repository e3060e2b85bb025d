"""The examples run, and the README's library snippet is the example's core."""

import os
import re
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import flax_loop  # pylint: disable=g-import-not-at-top,wrong-import-position
import sharded_loop  # pylint: disable=g-import-not-at-top,wrong-import-position


def _example_core() -> str:
  src = open(os.path.join(ROOT, "examples", "flax_loop.py")).read()
  core = re.search(r"# --- README: Library use \(start\) ---\n(.*?)\n"
                   r"\s*# --- README: Library use \(end\) ---", src, re.S)
  return textwrap.dedent(core.group(1)).strip()


def test_readme_library_snippet_is_the_example_core():
  readme = open(os.path.join(ROOT, "README.md")).read()
  section = readme.split("## Library use", 1)[1]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert any(_example_core() in b for b in blocks), (
      "README 'Library use' must contain the core of examples/flax_loop.py")


def test_user_loop_with_dropout_batchnorm_label_smoothing():
  out = flax_loop.main()
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
