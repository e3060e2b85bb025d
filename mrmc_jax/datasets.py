"""Deprecated: use `mrmc_jax.data` (removed in the next version).

Re-exports the names this module had; `tfds_stream` moved to the
deprecated unbatched path (use `mrmc_jax.data.stream` or
`mrmc_jax.data.pipeline` with `ids=`).
"""

import warnings

from mrmc_jax.data._legacy import tfds_stream  # pylint: disable=unused-import
from mrmc_jax.data.catalog import DATASET_NAMES  # pylint: disable=unused-import
from mrmc_jax.data.errors import DataNotFoundError  # pylint: disable=unused-import
from mrmc_jax.data.sources import FASHION_MNIST_DIR  # pylint: disable=unused-import
from mrmc_jax.data.sources import load_dataset  # pylint: disable=unused-import
from mrmc_jax.data.sources import MNIST_DIR  # pylint: disable=unused-import
from mrmc_jax.data.sources import read_idx  # pylint: disable=unused-import
from mrmc_jax.data.splits import ArraySplit  # pylint: disable=unused-import
from mrmc_jax.data.splits import Dataset  # pylint: disable=unused-import
from mrmc_jax.data.splits import IdSplit  # pylint: disable=unused-import
from mrmc_jax.data.splits import process_slice  # pylint: disable=unused-import
from mrmc_jax.data.splits import stratified_holdout  # pylint: disable=unused-import
from mrmc_jax.data.splits import validation_split  # pylint: disable=unused-import
from mrmc_jax.data.stats import compute_mean_std  # pylint: disable=unused-import
from mrmc_jax.data.stats import mean_std_from_sums  # pylint: disable=unused-import

warnings.warn("mrmc_jax.datasets is deprecated and will be removed in the "
              "next version: use mrmc_jax.data", DeprecationWarning,
              stacklevel=2)
