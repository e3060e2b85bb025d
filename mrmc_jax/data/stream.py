"""Streaming input: a tfds data set read by global id, never held whole.

For sets too large to hold in host memory (ImageNet on a pod). The data set
must be prepared by tfds in the ArrayRecord format (`tfds build NAME
--file_format=array_record`, or `write_arrays` below), which tfds reads with
random access (`tfds.data_source`): the record at position i of a split is the
example with global id i, on every host and every run.

`open_dataset` returns a `splits.Dataset` whose splits are `StreamSplit`s:
they hold the labels (int32 [N]) and a reader, not the images. The functions
of `pipeline` take a `StreamSplit` where they take an `ArraySplit`, so
the epoch order (`epoch_order(ids, seed, epoch)`), the per-process layout of
the global batches, the padding and masking, the augmentation
(`augment_params`, `crop_params`) and the normalisation are the very
functions of the in-memory path; only the fetch of a batch's images differs
(and at 128 px and above the ImageNet crops are cut from the stored JPEG, not
from a resized copy: `augment`). A process reads
and decodes only the records of its own rows of each global batch, in
tf.data (parallel map, prefetch), so its memory is the tf.data buffers plus
O(N) integer ids and labels. A core-set passes its ids to `train_dataset`,
which lays out only those ids: the steps of a core-set epoch are computed from
the global count, the same on every process.

Statistics: the per-channel mean and std come from one streaming pass over
the train split, split between the processes (each decodes N / P images) and
summed exactly as integers (`stats`), so they equal those of
`sources.load_dataset` bit for bit whatever the process count; the train and
test labels are read in the same pass. A relaunch that knows the statistics
and the labels (`mean_std`, `labels`, which the runner keeps in its workdir)
reads no record.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from mrmc_jax.data import images as images_lib
from mrmc_jax.data import splits as splits_lib
from mrmc_jax.data import stats
from mrmc_jax.data import tfds as tfds_lib


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSplit(splits_lib.IdSplit):
  """A split read from storage on demand; id i is the record at position i.

  Quacks like `splits.ArraySplit` for `pipeline` and the runner (`labels`,
  `image_shape`, and `ids`, `rows`, `num_examples` from their shared
  `splits.IdSplit`), but holds no images: `read_images` fetches and decodes
  them inside tf.data.

  Attributes:
    source: raw records by position (`open_source`).
    features: the data set's `tfds.features.FeaturesDict`.
    labels: int32 [N], read-only.
    image_shape: (H, W, C) of every decoded (and resized) image.
    image_size: (H, W) images are resized to, or None.
    files: the split's ArrayRecord files in record order (for
      `fingerprint`), or () when unknown.
  """

  source: Sequence[bytes]
  features: object
  labels: np.ndarray
  image_shape: tuple[int, int, int]
  image_size: tuple[int, int] | None = None
  files: tuple[str, ...] = ()
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
    decode = tfds_lib.decoder(self.features, self.image_size)
    serialized = tf.numpy_function(tfds_lib.reader(self.source),
                                   [tf.cast(rows, tf.int64)], tf.string,
                                   stateful=False)
    serialized = tf.ensure_shape(serialized, rows.shape)
    return tf.map_fn(lambda s: decode(s)["image"], serialized,
                     fn_output_signature=tf.TensorSpec(self.image_shape,
                                                       tf.uint8))


  def read_encoded(self, rows: tf.Tensor) -> tf.Tensor:
    """Reads records' encoded images (JPEG, PNG) inside a tf.data map.

    Args:
      rows: int tensor [K] of positions in [0, N).

    Returns:
      string tensor [K], each image as stored (any size).
    """
    decode = tfds_lib.encoded_image(self.features)
    serialized = tf.numpy_function(tfds_lib.reader(self.source),
                                   [tf.cast(rows, tf.int64)], tf.string,
                                   stateful=False)
    serialized = tf.ensure_shape(serialized, rows.shape)
    return tf.map_fn(decode, serialized,
                     fn_output_signature=tf.TensorSpec([], tf.string))


def scan(source, features, start: int, stop: int, *,
         image_size: tuple[int, int] | None = None,
         pixel_sums: bool = True) -> dict:
  """Labels and exact pixel sums of the records [start, stop).

  Args:
    source: raw records by position.
    features: the data set's features.
    start: first position.
    stop: one past the last position.
    image_size: (H, W) to resize to before summing.
    pixel_sums: decode the images and sum them (False: labels only).

  Returns:
    `labels` int32 [stop - start]; with `pixel_sums`, also `sums`: the
    (total, total_sq, count) Python ints of `stats.pixel_sums`.
  """
  labels = []
  channels = tfds_lib.image_shape(features, image_size)[-1]
  sums = ([0] * channels, [0] * channels, 0)
  for b in tfds_lib.read_batches(source, features, np.arange(start, stop),
                                 image_size=image_size,
                                 images=pixel_sums).as_numpy_iterator():
    labels.append(b["label"])
    if pixel_sums:
      sums = stats.add_sums(sums, stats.pixel_sums(b["image"]))
  out = {"labels": (np.concatenate(labels) if labels else
                    np.zeros(0, np.int32))}
  if pixel_sums:
    out["sums"] = sums
  return out


def _gather_labels(labels: np.ndarray, n: int, process_count: int,
                   allgather) -> np.ndarray:
  width = -(-n // process_count)
  padded = np.full(width, -1, np.int32)
  padded[:len(labels)] = labels
  every = np.asarray(allgather(padded)).reshape(process_count, width)
  parts = []
  for p in range(process_count):
    start, stop = splits_lib.process_slice(n, p, process_count)
    parts.append(every[p, :stop - start])
  return np.concatenate(parts)


def open_dataset(name: str,
                 data_dir: str | os.PathLike | None = None,
                 *,
                 image_size: tuple[int, int] | None = None,
                 process_index: int = 0,
                 process_count: int = 1,
                 allgather: Callable[[np.ndarray], np.ndarray] | None = None,
                 mean_std: tuple[np.ndarray, np.ndarray] | None = None,
                 labels: Mapping[str, np.ndarray] | None = None
                 ) -> splits_lib.Dataset:
  """Opens a tfds data set prepared as ArrayRecord for streaming.

  Every process calls it: each scans its contiguous share of the train split
  (`splits.process_slice`) for labels and pixel sums and of the test split
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
    mean_std: the train split's (mean, std), float [C] each, known already
      (a relaunch): the scan reads labels only and decodes no image. Every
      process must pass it, or none.
    labels: the labels of the splits, known already (a relaunch): "train"
      and "test" -> int [N] each. A split whose labels are given is not
      scanned (the train split only with `mean_std`): no record is read.
      Every process must pass the same, or none.

  Returns:
    A `splits.Dataset` whose `train` and `test` are `StreamSplit`s, with
    the mean and std of the train split.

  Raises:
    ValueError: bad arguments, or a data set not prepared as ArrayRecord.
  """
  if process_count > 1 and allgather is None:
    raise ValueError("process_count > 1 needs allgather to combine the "
                     "processes' shares of the statistics")
  splits_lib.process_slice(0, process_index, process_count)  # checks them
  image_size = images_lib.check_image_size(image_size)
  _, builder = tfds_lib.tfds_builder(name, data_dir)
  features = builder.info.features
  shape = tfds_lib.image_shape(features, image_size)
  test_name = tfds_lib.pick_test_split(builder)
  found = {}
  for split in ("train", test_name):
    if split is None:
      continue
    source = tfds_lib.open_source(builder, split)
    n = len(source)
    if n == 0:
      raise ValueError(f"tfds split {name}:{split} is empty")
    key = "train" if split == "train" else "test"
    given = None if labels is None else labels.get(key)
    if given is not None and (key == "test" or mean_std is not None):
      split_labels = np.asarray(given)
      if split_labels.shape != (n,):
        raise ValueError(f"labels[{key!r}] must be [{n}], the size of "
                         f"{name}:{split}, got {split_labels.shape}")
    else:
      start, stop = splits_lib.process_slice(n, process_index,
                                             process_count)
      part = scan(source, features, start, stop, image_size=image_size,
                  pixel_sums=split == "train" and mean_std is None)
      split_labels = part["labels"]
      if process_count > 1:
        split_labels = _gather_labels(split_labels, n, process_count,
                                      allgather)
    found[split] = StreamSplit(source, features, split_labels, shape,
                               image_size,
                               tfds_lib.split_files(builder, split))
    if split == "train" and mean_std is not None:
      mean, std = (np.asarray(v, np.float32) for v in mean_std)
    elif split == "train":
      words = stats.sums_to_words(*part["sums"])
      if process_count > 1:
        words = allgather(words)
      mean, std = stats.mean_std_from_sums(*stats.words_to_sums(words))
  label = features["label"]
  names = tuple(label.names) if getattr(label, "names", None) else None
  test = found.get(test_name)
  num_classes = splits_lib.check_labels(
      found["train"].labels, None if test is None else test.labels,
      label.num_classes, name, absent="warn")
  return splits_lib.Dataset(name=name, train=found["train"], test=test,
                            num_classes=num_classes, mean=mean, std=std,
                            class_names=names)


def write_arrays(name: str, data_dir: str | os.PathLike,
                 splits: Mapping[str, tuple[np.ndarray, np.ndarray]
                                 | Callable[[], Iterable[tuple[np.ndarray,
                                                               int]]]],
                 *,
                 image_shape: tuple[int, int, int],
                 num_classes: int,
                 class_names: Sequence[str] | None = None,
                 version: str = "1.0.0",
                 encoding_format: str = "png"):
  """Prepares a tfds data set in the ArrayRecord format from images.

  Record i of a split is the i-th example given (tfds's shuffling is off), so
  ids are the rows of the source files. Images are stored as PNG (lossless)
  or JPEG (`encoding_format`).

  Args:
    name: tfds name of the new data set (snake_case).
    data_dir: tfds's data_dir to write into.
    splits: split name -> (uint8 [N, H, W, C] images, int [N] labels), or a
      function returning an iterable of (image uint8 [H, W, C], label) pairs
      (for sets built on the fly, e.g. resized chunk by chunk).
    image_shape: (H, W, C) of every image; H and W may be None (sizes
      vary, e.g. JPEG photos).
    num_classes: number of classes.
    class_names: optional names, in label order.
    version: the data set's version.
    encoding_format: "png" or "jpeg" (tfds's encoder).

  Returns:
    The prepared tfds builder.

  Raises:
    ValueError: bad arguments, or the data set already exists there.
  """
  tfds = images_lib.import_tfds()
  if not splits:
    raise ValueError("splits must name at least one split")
  label = (tfds.features.ClassLabel(names=list(class_names)) if class_names
           else tfds.features.ClassLabel(num_classes=num_classes))
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=tuple(image_shape),
                                   encoding_format=encoding_format),
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
