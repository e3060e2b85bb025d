"""What every `experiments/*.py` entry point does around its one call.

Each script defines `--config` and `--workdir` and calls
`run(job, config, workdir)`, which quiets logging (unless `--verbosity` is
given), hides accelerators from TensorFlow (it only feeds data), starts JAX's
multi-controller runtime when the config asks for it, and turns bad input
into one line on stderr and exit status 2.
"""

import sys
from typing import Any, Callable

from absl import flags
from absl import logging
import jax
import ml_collections


def run(job: Callable[[ml_collections.ConfigDict, str], Any],
        config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Runs `job(config, workdir)` with the shared setup; exits 2 on bad input."""
  # Orbax logs every checkpoint file at INFO; keep the console to progress
  # bars, warnings and the result table unless --verbosity asks for more.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  dist = config.get("distributed")
  if dist is not None and dist.initialize:
    # None values let JAX detect the cluster (TPU pods, SLURM, Open MPI).
    jax.distributed.initialize(
        coordinator_address=dist.coordinator_address,
        num_processes=dist.num_processes, process_id=dist.process_id)
  logging.info("JAX process %d/%d, %d devices.", jax.process_index(),
               jax.process_count(), jax.device_count())
  try:
    return job(config, workdir)
  except (ValueError, FileNotFoundError) as e:
    # Bad input: one line, non-zero exit, nothing in the workdir touched.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
