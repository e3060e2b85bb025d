r"""Compares selection methods x ratios x seeds on one data set.

  python experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/compare_fm [--config.compare.methods=random,mrmc ...]

One warm-up per seed serves every method and ratio; rerunning with the same
workdir resumes without redoing finished cells. Writes results.csv,
results.md and accuracy.png in the workdir.
"""

import preamble  # pylint: disable=unused-import  # First: signals, environment.

from mrmc_jax.runner import entry  # pylint: disable=g-bad-import-order

if __name__ == "__main__":
  entry.main("mrmc_jax.runner.compare:run_comparison",
             "Config file (get_config()), e.g. configs/fashion_mnist.py.")
