r"""Measures the stability and symmetry of MRMC's loss-reduction attribution.

  python experiments/attribution.py --config=configs/attribution.py \
      --workdir=runs/attribution [--config.attribution.num_probes=20 ...]

Trains on full data and on core-sets of `attribution.ratios`, accumulating
the m x m attribution matrix of a probe set, and writes `matrices/`,
`heatmaps/` and `report.json` in the workdir (mrmc_jax/attribution.py).
Rerunning with the same workdir resumes; finished settings are not redone.
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
  entry.main("mrmc_jax.runner.attribution:run_attribution",
             "Config file, e.g. configs/attribution.py.")
