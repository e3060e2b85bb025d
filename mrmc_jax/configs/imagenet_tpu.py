"""ImageNet-1k on a TPU pod slice: configs/imagenet.py scaled out.

Changes from imagenet.py: streamed input, global batch 4096 (split over
every chip of every host; it must be a multiple of the device count),
learning-rate warm-up, bfloat16 compute (logits
and the recorded losses stay float32), learning rate scaled linearly with
the batch (0.1 * B / 256: 1.6 at 4096), and `jax.distributed.initialize()` with
no arguments (TPU pods describe themselves). The batch size enters the
trajectory only through the order of the updates; the global ids, the data
order and the selection do not depend on the number of hosts.

Linear scaling is paired with 5 epochs of linear learning-rate warm-up
before the cosine decay (Goyal et al., 2017): `train.schedule=
"warmup_cosine"`, `train.lr_warmup_epochs=5`, in each stage's own epochs.

Streamed input (`dataset.input="stream"`, mrmc_jax/data/stream.py). Prepare the
tfds data set ONCE, as ArrayRecord, into a shared data_dir, before launching:
`tfds build imagenet2012 --file_format=array_record --data_dir=<shared
data_dir> --manual_dir=<folder with the official tars>`. Each host then reads
by global id only the records of its own rows of every batch, decoding them
in tf.data; its memory holds the tf.data buffers and a few integer arrays
of N entries (epoch order, labels), not the 193 GB that the in-memory
path (`dataset.input="memory"`) would decode on every host. At launch every
host decodes 1 / P of the train split once, for the exact mean and std. A
resumed job rebuilds an epoch's order from (seed, epoch) and restarts the
epoch from its checkpoint; finished stages are read back from the workdir.
The workdir is the same for every host: a `gs://` URL (recommended: the
runner writes it through gcsfs, orbax and tensorstore get the URL; see
README.md, "Scale-out") or a POSIX folder seen by every host at the same
path (Filestore/NFS): every process saves and restores the orbax
checkpoints there, process 0 writes the rest.

Preemption: a mid-epoch checkpoint every 100 steps (an epoch is 313), and
SIGTERM to any host (a maintenance event) goes to JAX's preemption
notifier, so that every host saves at the same step and exits 143; rerun
the same command to resume (docs/reliability.md, "Preemption").

  --config=configs/imagenet_tpu.py \\
  --config.dataset.data_dir=/mnt/shared/tensorflow_datasets \\
  --workdir=gs://$BUCKET/runs/imagenet_mrmc
"""

from mrmc_jax.configs import base
from mrmc_jax.configs import imagenet

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
  config.dataset.input = "stream"
  config.train.schedule = "warmup_cosine"
  config.train.lr_warmup_epochs = 5.0
  config.distributed.initialize = True
  config.train.checkpoint_every_steps = 100
  # coordinator_address, num_processes and process_id stay None: on a TPU
  # pod (and under SLURM or Open MPI) jax.distributed.initialize() detects
  # them; set them only on clusters it does not know.
  return base.apply_overrides(config, arg)
