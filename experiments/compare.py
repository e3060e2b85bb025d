r"""Compares selection methods x ratios x seeds on one data set.

  python experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/compare_fm [--config.compare.methods=random,mrmc ...]

One warm-up per seed serves every method and ratio; rerunning with the same
workdir resumes without redoing finished cells. Writes results.csv,
results.md and accuracy.png in the workdir.
"""

import signal
# First: SIGINT/SIGTERM wait for runner/cli.py's watcher, in every thread
# JAX and TensorFlow start (docs/reliability.md).
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

import os  # pylint: disable=g-import-not-at-top,g-bad-import-order
import sys  # pylint: disable=g-import-not-at-top

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrmc_jax.runner import entry  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  entry.main("mrmc_jax.runner.compare:run_comparison",
             "Config file (get_config()), e.g. configs/fashion_mnist.py.")
