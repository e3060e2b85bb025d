"""The data layer: sources, splits with stable ids, statistics, pipelines.

Modules (one concept each):

* `catalog`: data set names, what they need, whether they can stream.
* `loader.load`: load any name, in memory or streamed (the runner's entry).
* `sources`: in-memory sources (digits, mnist5k, idx, npz, folder, tfds).
* `folder`, `tfds`, `images`: image folders, TensorFlow Datasets (in memory
  and ArrayRecord by id), TensorFlow image helpers.
* `stream`: tfds sets prepared as ArrayRecord, read by id (`StreamSplit`).
* `splits`: `IdSplit`, `ArraySplit`, `Dataset`, process ranges, holdouts,
  label checks.
* `stats`: exact integer pixel sums, mean and std.
* `fingerprints`: `fingerprint`, a hash of every train and test example;
  `file_records`, streamed files hashed once and checked by metadata.
* `pipeline`: tf.data batches for training and evaluation (the one input
  path of the runner and the examples).

The names below need no TensorFlow; `pipeline` and `stream` import it.
"""

from mrmc_jax.data.catalog import DATASET_NAMES
from mrmc_jax.data.catalog import check_source
from mrmc_jax.data.catalog import is_local
from mrmc_jax.data.catalog import parse_name
from mrmc_jax.data.errors import DataNotFoundError
from mrmc_jax.data.fingerprints import fingerprint
from mrmc_jax.data.loader import load
from mrmc_jax.data.sources import load_dataset
from mrmc_jax.data.sources import read_idx
from mrmc_jax.data.splits import ArraySplit
from mrmc_jax.data.splits import check_labels
from mrmc_jax.data.splits import Dataset
from mrmc_jax.data.splits import IdSplit
from mrmc_jax.data.splits import process_slice
from mrmc_jax.data.splits import stratified_holdout
from mrmc_jax.data.splits import validation_split
from mrmc_jax.data.stats import compute_mean_std
from mrmc_jax.data.stats import mean_std_from_sums
