"""Streaming input: a tfds data set read by global id, never held whole.

For sets too large to hold in host memory (ImageNet on a pod). The data set
must be prepared by tfds in the ArrayRecord format (`tfds build NAME
--file_format=array_record`, or `write_arrays` below), which tfds reads with
random access (`tfds.data_source`): the record at position i of a split is the
example with global id i, on every host and every run.

`open_dataset` returns a `datasets.Dataset` whose splits are `StreamSplit`s:
they hold the labels (int32 [N]) and a reader, not the images. The functions
of `input_pipeline` take a `StreamSplit` where they take an `ArraySplit`, so
the epoch order (`epoch_order(ids, seed, epoch)`), the per-process layout of
the global batches, the padding and masking, the augmentation
(`augment_params`) and the normalisation are the very functions of the
in-memory path; only the fetch of a batch's images differs. A process reads
and decodes only the records of its own rows of each global batch, in
tf.data (parallel map, prefetch), so its memory is the tf.data buffers plus
O(N) integer ids and labels. A core-set passes its ids to `train_dataset`,
which lays out only those ids: the steps of a core-set epoch are computed from
the global count, the same on every process.

Statistics: the per-channel mean and std come from one streaming pass over
the train split, split between the processes (each decodes N / P images) and
summed exactly (see `datasets.mean_std_from_sums`), so they equal those of
`datasets.load_dataset` bit for bit; the train and test labels are read in the
same pass. The pass runs at every launch (a cached copy would need every
process to agree on whether it exists before the collective that combines the
partial sums).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from mrmc_jax import datasets

# Records read per call to the ArrayRecord reader in `read_batches`.
_READ_BATCH = 256


def _tfds():
  return datasets._import_tfds()  # pylint: disable=protected-access


def _decoder(features, image_size: tuple[int, int] | None, *,
             images: bool = True) -> Callable[[tf.Tensor], dict]:
  """serialized tf.train.Example -> {"image": uint8 [H, W, C], "label"}."""
  tfds = _tfds()
  decoders = None if images else {"image": tfds.decode.SkipDecoding()}

  def decode(serialized):
    ex = features.deserialize_example(serialized, decoders=decoders)
    out = {"label": tf.cast(ex["label"], tf.int32)}
    if images:
      image = ex["image"]
      if image_size is not None:
        image = datasets._tf_resize(tf, image, image_size)  # pylint: disable=protected-access
      out["image"] = image
    return out

  return decode


def _reader(source) -> Callable[[np.ndarray], np.ndarray]:
  def read(ids: np.ndarray) -> np.ndarray:
    # dtype=object: a fixed-width bytes array would strip trailing zeros.
    out = np.empty(len(ids), dtype=object)
    out[:] = source.__getitems__([int(i) for i in ids])
    return out
  return read


def _image_shape(features, image_size) -> tuple[int, int, int]:
  shape = tuple(features["image"].shape)
  if image_size is not None:
    shape = (*image_size, shape[-1])
  if None in shape:
    raise ValueError(f"images have varying size {shape}; pass "
                     f"image_size=(H, W) to resize them")
  return shape


def open_source(builder, split: str):
  """The raw records of a prepared ArrayRecord split, by position.

  Args:
    builder: a prepared tfds builder (`tfds.builder(name, data_dir=...)`).
    split: a plain split name.

  Returns:
    A sequence of serialized `tf.train.Example` bytes with `__getitems__`.

  Raises:
    ValueError: the data set is not prepared as ArrayRecord.
  """
  tfds = _tfds()
  if not datasets._is_array_record(tfds, builder):  # pylint: disable=protected-access
    raise ValueError(
        f"tfds data set {builder.name!r} is prepared as "
        f"{builder.info.file_format}; streaming needs random access: prepare "
        f"it with `tfds build {builder.name} --file_format=array_record`")
  return builder.as_data_source(
      split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def read_batches(source, features, ids: np.ndarray, *,
                 image_size: tuple[int, int] | None = None,
                 images: bool = True,
                 batch_size: int = _READ_BATCH) -> tf.data.Dataset:
  """Decoded examples `ids` of a source, in the order given, in batches.

  Args:
    source: raw records by position (`open_source`).
    features: the data set's `tfds.features.FeaturesDict`.
    ids: int [K] record positions.
    image_size: (H, W) to resize to (bilinear, antialiased, as
      `datasets.load_dataset`).
    images: decode the images (False reads the labels only).
    batch_size: records per batch.

  Returns:
    tf.data.Dataset of dicts `label` int32 [b] (and `image` uint8
    [b, H, W, C]); b = batch_size except in the last batch.
  """
  decode = _decoder(features, image_size, images=images)
  read = _reader(source)
  ds = tf.data.Dataset.from_tensor_slices(np.asarray(ids, np.int64))
  ds = ds.batch(batch_size)
  ds = ds.map(lambda i: tf.numpy_function(read, [i], tf.string,
                                          stateful=False),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.unbatch().map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def read_arrays(builder, split: str, *,
                image_size: tuple[int, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """A whole ArrayRecord split as (uint8 [N, H, W, C], int32 [N]) arrays.

  The in-memory path (`datasets.load_dataset`) for data sets prepared as
  ArrayRecord; row i is the record at position i, the id the stream gives.
  """
  source = open_source(builder, split)
  images, labels = [], []
  for b in read_batches(source, builder.info.features, np.arange(len(source)),
                        image_size=image_size).as_numpy_iterator():
    images.append(b["image"])
    labels.append(b["label"])
  if not images:
    raise ValueError(f"tfds split {builder.name}:{split} is empty")
  return np.concatenate(images), np.concatenate(labels)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSplit(datasets.IdSplit):
  """A split read from storage on demand; id i is the record at position i.

  Quacks like `datasets.ArraySplit` for `input_pipeline` and the runner
  (`labels`, `image_shape`, and `ids`, `rows`, `num_examples` from their
  shared `datasets.IdSplit`), but holds no images: `read_images` fetches and decodes them inside tf.data.

  Attributes:
    source: raw records by position (`open_source`).
    features: the data set's `tfds.features.FeaturesDict`.
    labels: int32 [N], read-only.
    image_shape: (H, W, C) of every decoded (and resized) image.
    image_size: (H, W) images are resized to, or None.
  """

  source: Sequence[bytes]
  features: object
  labels: np.ndarray
  image_shape: tuple[int, int, int]
  image_size: tuple[int, int] | None = None
  id_offset: int = dataclasses.field(default=0, init=False)

  def __post_init__(self):
    labels = np.asarray(self.labels)
    if labels.ndim != 1 or len(labels) != len(self.source):
      raise ValueError(f"labels must be [N] with N = {len(self.source)}, got "
                       f"{labels.shape}")
    labels = labels.astype(np.int32).view()
    labels.flags.writeable = False
    object.__setattr__(self, "labels", labels)

  def read_images(self, rows: tf.Tensor) -> tf.Tensor:
    """Reads and decodes records inside a tf.data map.

    Args:
      rows: int tensor [K] of positions in [0, N).

    Returns:
      uint8 tensor [K, H, W, C].
    """
    decode = _decoder(self.features, self.image_size)
    serialized = tf.numpy_function(_reader(self.source),
                                   [tf.cast(rows, tf.int64)], tf.string,
                                   stateful=False)
    serialized = tf.ensure_shape(serialized, rows.shape)
    return tf.map_fn(lambda s: decode(s)["image"], serialized,
                     fn_output_signature=tf.TensorSpec(self.image_shape,
                                                       tf.uint8))


def scan(source, features, start: int, stop: int, *,
         image_size: tuple[int, int] | None = None,
         pixel_sums: bool = True) -> dict[str, np.ndarray]:
  """Labels and exact pixel sums of the records [start, stop).

  Args:
    source: raw records by position.
    features: the data set's features.
    start: first position.
    stop: one past the last position.
    image_size: (H, W) to resize to before summing.
    pixel_sums: decode the images and sum them (False: labels only).

  Returns:
    `labels` int32 [stop - start]; with `pixel_sums`, also `sum`, `sum_sq`
    float64 [C] (exact integers) and `count` float64 [] (pixels per channel).
  """
  labels, total, total_sq, count = [], 0.0, 0.0, 0
  for b in read_batches(source, features, np.arange(start, stop),
                        image_size=image_size,
                        images=pixel_sums).as_numpy_iterator():
    labels.append(b["label"])
    if pixel_sums:
      x = b["image"].reshape(-1, b["image"].shape[-1]).astype(np.float64)
      total = total + x.sum(0)
      total_sq = total_sq + np.square(x).sum(0)
      count += x.shape[0]
  out = {"labels": (np.concatenate(labels) if labels else
                    np.zeros(0, np.int32))}
  if pixel_sums:
    channels = _image_shape(features, image_size)[-1]
    out.update(sum=np.broadcast_to(total, (channels,)).astype(np.float64),
               sum_sq=np.broadcast_to(total_sq,
                                      (channels,)).astype(np.float64),
               count=np.float64(count))
  return out


def _gather_labels(labels: np.ndarray, n: int, process_count: int,
                   allgather) -> np.ndarray:
  width = -(-n // process_count)
  padded = np.full(width, -1, np.int32)
  padded[:len(labels)] = labels
  every = np.asarray(allgather(padded)).reshape(process_count, width)
  parts = []
  for p in range(process_count):
    start, stop = datasets.process_slice(n, p, process_count)
    parts.append(every[p, :stop - start])
  return np.concatenate(parts)


def _gather_float64(x: np.ndarray, process_count: int,
                    allgather) -> np.ndarray:
  # Bit-exact through collectives that carry 32-bit words only (JAX without
  # x64): float64 [k] travels as uint32 [2k].
  words = np.ascontiguousarray(x, np.float64).view(np.uint32)
  every = np.asarray(allgather(words), np.uint32).reshape(process_count, -1)
  return np.ascontiguousarray(every).view(np.float64)


def open_dataset(name: str,
                 data_dir: str | os.PathLike | None = None,
                 *,
                 image_size: tuple[int, int] | None = None,
                 process_index: int = 0,
                 process_count: int = 1,
                 allgather: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> datasets.Dataset:
  """Opens a tfds data set prepared as ArrayRecord for streaming.

  Every process calls it: each scans its contiguous share of the train split
  (`datasets.process_slice`) for labels and pixel sums and of the test split
  for labels, and `allgather` combines the shares.

  Args:
    name: tfds name (a registered builder, or one prepared in `data_dir`).
    data_dir: tfds's data_dir.
    image_size: (H, W) to resize every image to; needed when sizes vary.
    process_index: this process.
    process_count: number of processes.
    allgather: maps this process's array [k] to the stacked arrays of every
      process [P, k], in process order (e.g.
      `jax.experimental.multihost_utils.process_allgather`); needed when
      process_count > 1.

  Returns:
    A `datasets.Dataset` whose `train` and `test` are `StreamSplit`s, with
    the mean and std of the train split.

  Raises:
    ValueError: bad arguments, or a data set not prepared as ArrayRecord.
  """
  if process_count > 1 and allgather is None:
    raise ValueError("process_count > 1 needs allgather to combine the "
                     "processes' shares of the statistics")
  datasets.process_slice(0, process_index, process_count)  # checks them
  _, builder = datasets._tfds_builder(name, data_dir)  # pylint: disable=protected-access
  features = builder.info.features
  shape = _image_shape(features, image_size)
  test_name = datasets._pick_test_split(builder)  # pylint: disable=protected-access
  splits = {}
  for split in ("train", test_name):
    if split is None:
      continue
    source = open_source(builder, split)
    n = len(source)
    if n == 0:
      raise ValueError(f"tfds split {name}:{split} is empty")
    start, stop = datasets.process_slice(n, process_index, process_count)
    part = scan(source, features, start, stop, image_size=image_size,
                pixel_sums=split == "train")
    labels = part["labels"]
    if process_count > 1:
      labels = _gather_labels(labels, n, process_count, allgather)
    splits[split] = StreamSplit(source, features, labels, shape, image_size)
    if split == "train":
      sums = np.concatenate([part["sum"], part["sum_sq"], [part["count"]]])
      if process_count > 1:
        sums = _gather_float64(sums, process_count, allgather).sum(0)
      c = shape[-1]
      mean, std = datasets.mean_std_from_sums(sums[:c], sums[c:2 * c],
                                              int(sums[-1]))
  label = features["label"]
  names = tuple(label.names) if getattr(label, "names", None) else None
  return datasets.Dataset(name=name, train=splits["train"],
                          test=splits.get(test_name), num_classes=label.num_classes,
                          mean=mean, std=std, class_names=names)


def write_arrays(name: str, data_dir: str | os.PathLike,
                 splits: Mapping[str, tuple[np.ndarray, np.ndarray]
                                 | Callable[[], Iterable[tuple[np.ndarray,
                                                               int]]]],
                 *,
                 image_shape: tuple[int, int, int],
                 num_classes: int,
                 class_names: Sequence[str] | None = None,
                 version: str = "1.0.0"):
  """Prepares a tfds data set in the ArrayRecord format from images.

  Record i of a split is the i-th example given (tfds's shuffling is off), so
  ids are the rows of the source files. Images are stored as PNG (lossless).

  Args:
    name: tfds name of the new data set (snake_case).
    data_dir: tfds's data_dir to write into.
    splits: split name -> (uint8 [N, H, W, C] images, int [N] labels), or a
      function returning an iterable of (image uint8 [H, W, C], label) pairs
      (for sets built on the fly, e.g. resized chunk by chunk).
    image_shape: (H, W, C) of every image.
    num_classes: number of classes.
    class_names: optional names, in label order.
    version: the data set's version.

  Returns:
    The prepared tfds builder.

  Raises:
    ValueError: bad arguments, or the data set already exists there.
  """
  tfds = _tfds()
  if not splits:
    raise ValueError("splits must name at least one split")
  label = (tfds.features.ClassLabel(names=list(class_names)) if class_names
           else tfds.features.ClassLabel(num_classes=num_classes))
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=tuple(image_shape)),
      "label": label})

  def examples(data):
    pairs = zip(*data) if isinstance(data, tuple) else data()
    for i, (image, y) in enumerate(pairs):
      yield i, {"image": np.asarray(image, np.uint8), "label": int(y)}

  try:
    return tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=version, features=features,
        split_datasets={k: examples(v) for k, v in splits.items()},
        data_dir=os.fspath(data_dir), file_format="array_record",
        disable_shuffling=True)
  except RuntimeError as e:
    raise ValueError(f"tfds data set {name!r} already exists in "
                     f"{os.fspath(data_dir)}") from e
