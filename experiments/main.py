r"""Runs MRMC (or a peer method) end to end: warm-up, select, train, evaluate.

  python experiments/main.py --config=configs/default.py --workdir=runs/x \
      [--config.selection.ratio=0.1 ...]
"""

import preamble  # pylint: disable=unused-import  # First: signals, environment.

from mrmc_jax.runner import entry  # pylint: disable=g-bad-import-order

if __name__ == "__main__":
  entry.main("mrmc_jax.runner.experiment:train_and_evaluate",
             "Config file (get_config()), e.g. configs/default.py.")
