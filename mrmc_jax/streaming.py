"""Deprecated: use `mrmc_jax.data.stream` (removed in the next version)."""

import warnings

from mrmc_jax.data.stream import open_dataset  # pylint: disable=unused-import
from mrmc_jax.data.stream import scan  # pylint: disable=unused-import
from mrmc_jax.data.stream import StreamSplit  # pylint: disable=unused-import
from mrmc_jax.data.stream import write_arrays  # pylint: disable=unused-import
from mrmc_jax.data.tfds import open_source  # pylint: disable=unused-import
from mrmc_jax.data.tfds import read_arrays  # pylint: disable=unused-import
from mrmc_jax.data.tfds import read_batches  # pylint: disable=unused-import

warnings.warn("mrmc_jax.streaming is deprecated and will be removed in the "
              "next version: use mrmc_jax.data.stream", DeprecationWarning,
              stacklevel=2)
