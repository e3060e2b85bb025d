"""Deprecated: use `mrmc_jax.data.pipeline` (removed in the next version).

`apply_mask`, `pad_and_batch` and `examples_dataset` (the unbatched path)
go with this module: pass `ids=np.flatnonzero(mask)` to
`pipeline.train_dataset` instead.
"""

import warnings

from mrmc_jax.data._legacy import apply_mask  # pylint: disable=unused-import
from mrmc_jax.data._legacy import examples_dataset  # pylint: disable=unused-import
from mrmc_jax.data._legacy import pad_and_batch  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import as_numpy  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import augment_params  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import epoch_order  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import eval_dataset  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import num_batches  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import PAD_ID  # pylint: disable=unused-import
from mrmc_jax.data.pipeline import train_dataset  # pylint: disable=unused-import

warnings.warn("mrmc_jax.input_pipeline is deprecated and will be removed in "
              "the next version: use mrmc_jax.data.pipeline",
              DeprecationWarning, stacklevel=2)
