r"""Runs MRMC (or a peer method) end to end: warm-up, select, train, evaluate.

  python experiments/main.py --config=configs/default.py --workdir=runs/x \
      [--config.selection.ratio=0.1 ...]
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
  entry.main("mrmc_jax.runner.experiment:train_and_evaluate",
             "Config file (get_config()), e.g. configs/default.py.")
