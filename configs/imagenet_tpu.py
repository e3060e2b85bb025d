"""ImageNet-1k on a TPU pod slice: configs/imagenet.py scaled out.

Changes from imagenet.py: global batch 4096 (split over every chip of every
host; it must be a multiple of the device count), bfloat16 compute (logits
and the recorded losses stay float32), learning rate scaled linearly with
the batch (0.1 * B / 256: 1.6 at 4096), and `jax.distributed.initialize()` with
no arguments (TPU pods describe themselves). The batch size enters the
trajectory only through the order of the updates; the global ids, the data
order and the selection do not depend on the number of hosts.

Linear scaling is usually paired with a few epochs of learning-rate warm-up
at this batch size (Goyal et al., 2017); `mrmc_jax.optim` has no warm-up
schedule yet, so lower `train.learning_rate` if the first epochs diverge.

Cached input. Prepare the tfds data set ONCE, into a shared data_dir (a GCS
bucket), before launching: `tfds build imagenet2012 --data_dir=gs://BUCKET/
tensorflow_datasets --manual_dir=<folder with the official tars>`; every
host then reads the prepared TFRecords instead of racing to build them. The
runner's in-memory pipeline then decodes and resizes the whole train split
on every host, once per launch: 1.28M x 224 x 224 x 3 uint8 is about
193 GB of host RAM per host (TPU v4 and v5p hosts have about 400 GB; hosts
with less need a smaller `dataset.image_size` or a streaming input, see
`datasets.tfds_stream`). A resumed job re-reads the data but not the
warm-up: finished stages and epoch checkpoints are read back from the
workdir. The workdir must be one POSIX folder seen by every host at the
same path (Filestore/NFS, or the bucket mounted with gcsfuse; the runner's
atomic writes need a file system, not a gs:// URL): every process saves
and restores the orbax checkpoints there, process 0 writes the rest.

  --config=configs/imagenet_tpu.py \\
  --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets \\
  --workdir=/mnt/shared/runs/imagenet_mrmc
"""

from configs import base
from configs import imagenet

# The batch imagenet.py's learning rate was tuned for.
_REFERENCE_BATCH = 256


def get_config(arg: str | None = None):
  config = imagenet.get_config()
  config.model.dtype = "bfloat16"
  config.train.batch_size = 4096
  config.train.eval_batch_size = 4096
  # A reference, so that `--config.train.batch_size=B` rescales it too
  # (an explicit `--config.train.learning_rate` still wins).
  config.train.learning_rate = (
      config.train.get_ref("batch_size").to_float() *
      (config.train.learning_rate / _REFERENCE_BATCH))
  config.distributed.initialize = True
  # coordinator_address, num_processes and process_id stay None: on a TPU
  # pod (and under SLURM or Open MPI) jax.distributed.initialize() detects
  # them; set them only on clusters it does not know.
  return base.apply_overrides(config, arg)
