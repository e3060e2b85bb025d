r"""Runs MRMC (or a peer method) end to end: warm-up, select, train, evaluate.

  python experiments/main.py --config=configs/default.py --workdir=runs/x \
      [--config.selection.ratio=0.1 ...]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and outputs.")
flags.mark_flags_as_required(["workdir"])
config_flags.DEFINE_config_file(
    "config", None, "Config file (get_config()), e.g. configs/default.py.",
    lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  # Orbax logs every checkpoint file at INFO; keep the console to progress
  # bars, warnings and the result table unless --verbosity asks for more.
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # TensorFlow only feeds data; accelerators belong to JAX.
  tf.config.set_visible_devices([], "GPU")
  config = FLAGS.config
  if config.distributed.initialize:
    jax.distributed.initialize(
        coordinator_address=config.distributed.coordinator_address,
        num_processes=config.distributed.num_processes,
        process_id=config.distributed.process_id)
  from mrmc_jax import experiment  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d/%d, %d devices.", jax.process_index(),
               jax.process_count(), jax.device_count())
  try:
    experiment.train_and_evaluate(config, FLAGS.workdir)
  except (ValueError, FileNotFoundError) as e:
    # Bad input: one line, non-zero exit, nothing in the workdir touched.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
