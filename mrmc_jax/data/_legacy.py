"""The unbatched-example input path, kept for one version (deprecated).

`tfds_stream` + `apply_mask` + `pad_and_batch` (and `examples_dataset`) were a
third input path, used only by the examples. Use `pipeline.train_dataset` /
`pipeline.eval_dataset` with `ids=` (a core-set) over an `ArraySplit` or a
`stream.StreamSplit` instead: the same order, augmentation and padding as the
runner. Reached only through the deprecated `mrmc_jax.datasets` and
`mrmc_jax.input_pipeline` modules; removed with them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mrmc_jax.data import images as images_lib
from mrmc_jax.data import pipeline
from mrmc_jax.data import splits
from mrmc_jax.data import tfds as tfds_lib

_ArrayLike = np.ndarray | Sequence[float] | float


def tfds_stream(name: str,
                split: str = "train",
                data_dir: str | os.PathLike | None = None,
                *,
                process_index: int = 0,
                process_count: int = 1,
                image_size: tuple[int, int] | None = None):
  """Streams a tfds split as unbatched examples with global, stable ids.

  For sets too large for memory (ImageNet). Files are read unshuffled, one at
  a time (`tfds.ReadConfig(interleave_cycle_length=1)`), so the examples come
  in tfds's canonical order and `id` is the position in it: the same id as
  row `id` of `sources.load_dataset(name).train` for the train split, on every run.
  `tfds_id` strings are not used: they are not contiguous integers. Process p
  reads only its contiguous slice `process_slice(n, p, P)` of the split
  (tfds's `split[start:stop]`), with ids starting at `start`.

  Feed the result to `apply_mask` (core-set) and `pad_and_batch`.

  Args:
    name: tfds name, e.g. "imagenet2012".
    split: a plain split name ("train", "validation"), no slicing.
    data_dir: tfds's data_dir (ImageNet's tars in data_dir/downloads/manual).
    process_index: this process.
    process_count: number of processes.
    image_size: (H, W) to resize to; needed to batch sets of varying size.

  Returns:
    tf.data.Dataset of dicts: `image` uint8 [H, W, C], `label` int32 [],
    `id` int32 [].
  """
  if "[" in split:
    raise ValueError(f"split must be a plain split name, got {split!r}")
  tfds, builder = tfds_lib.tfds_builder(name, data_dir)
  read_config = tfds_lib.read_config(tfds)
  if split in builder.info.splits:
    n = builder.info.splits[split].num_examples
  else:
    # No metadata (tfds mocks): the cardinality tfds asserts.
    n = int(builder.as_dataset(split=split, shuffle_files=False,
                               read_config=read_config).cardinality())
    if n < 0:
      raise ValueError(f"size of tfds split {name}:{split} is unknown")
  start, stop = splits.process_slice(n, process_index, process_count)
  ds = builder.as_dataset(split=f"{split}[{start}:{stop}]",
                          shuffle_files=False, read_config=read_config)

  def to_example(i, ex):
    image = ex["image"]
    if image_size is not None:
      image = images_lib.tf_resize(tf, image, image_size)
    return {"image": image, "label": tf.cast(ex["label"], tf.int32),
            "id": tf.cast(i, tf.int32)}

  return ds.enumerate(start=start).map(
      to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def examples_dataset(split: splits.ArraySplit,
                     ids: np.ndarray | Sequence[int] | None = None
                    ) -> tf.data.Dataset:
  """Unbatched examples in ascending id order, as `tfds_stream` gives.

  Args:
    split: the examples.
    ids: restrict to these global ids; default all.

  Returns:
    tf.data.Dataset of dicts: `image` uint8 [H, W, C], `label` int32 [],
    `id` int32 [].
  """
  ids = split.ids if ids is None else pipeline._unique_ids(ids)  # pylint: disable=protected-access
  rows = split.rows(ids)
  return tf.data.Dataset.from_tensor_slices({
      "image": split.images[rows], "label": split.labels[rows],
      "id": ids.astype(np.int32)})


def apply_mask(ds: tf.data.Dataset, mask: np.ndarray) -> tf.data.Dataset:
  """Keeps the examples whose id is selected by a core-set mask.

  For pipelines of UNBATCHED example dicts with an integer `id` (e.g.
  `tfds_stream`, `examples_dataset`): filter before batching, so a
  core-set epoch has `num_batches(mask.sum(), B)` steps rather than as many as
  the full set with mostly masked rows. In-memory splits do better with
  `train_dataset(ids=np.flatnonzero(mask))`, which never reads the rest.

  Args:
    ds: unbatched examples with `id` int [].
    mask: bool [N] over all global ids; an id >= N is an error.

  Returns:
    The filtered tf.data.Dataset, order kept.
  """
  mask = np.asarray(mask)
  if mask.ndim != 1 or mask.dtype != bool:
    raise ValueError(f"mask must be bool [N], got {mask.dtype} {mask.shape}")
  table = tf.constant(mask)
  return ds.filter(lambda ex: tf.gather(table, tf.cast(ex["id"], tf.int32)))


def pad_and_batch(ds: tf.data.Dataset,
                  batch_size: int,
                  *,
                  mean: _ArrayLike,
                  std: _ArrayLike,
                  total_batches: int | None = None) -> tf.data.Dataset:
  """Batches unbatched examples into padded, masked, normalised batches.

  Args:
    ds: finite dataset of dicts with `image` uint8 [H, W, C] (fully defined
      shape), `label` int [] and `id` int []; other keys are dropped.
    batch_size: rows per batch.
    mean: float [C] or scalar, per-channel mean in units of pixel / 255.
    std: float [C] or scalar, likewise.
    total_batches: if given, exactly this many batches, padding with fully
      masked batches (so that processes reading slices of different sizes
      run the same steps); must be at least `num_batches(n, batch_size)` or
      examples are cut off. Default: `num_batches(n, batch_size)`.

  Returns:
    tf.data.Dataset of batch dicts (module docstring).
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  shape = ds.element_spec["image"].shape
  if not shape.is_fully_defined():
    raise ValueError(f"images must have one static shape to batch, got "
                     f"{shape}; resize them first")
  scale, shift = pipeline._norm_constants(mean, std, shape[-1])  # pylint: disable=protected-access
  ds = ds.map(lambda ex: {
      "image": tf.cast(ex["image"], tf.uint8),
      "label": tf.cast(ex["label"], tf.int32),
      "id": tf.cast(ex["id"], tf.int32),
      "mask": tf.constant(True)})
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros(shape, tf.uint8), "label": tf.constant(0, tf.int32),
      "id": tf.constant(pipeline.PAD_ID, tf.int32), "mask": tf.constant(False)})
  if total_batches is None:
    # batch_size - 1 padding rows complete any partial last batch; the rest
    # form a short batch that drop_remainder removes.
    ds = ds.concatenate(padding.repeat(batch_size - 1))
    ds = ds.batch(batch_size, drop_remainder=True)
  else:
    ds = ds.concatenate(padding.repeat()).batch(batch_size,
                                                drop_remainder=True)
    ds = ds.take(total_batches)

  def build(ex):
    return {**ex, "image": pipeline._normalise(  # pylint: disable=protected-access
        ex["image"], ex["mask"], scale, shift)}

  ds = ds.map(build, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)
