"""TensorFlow Datasets: builders, preparation and reading, in memory or by id.

Shared by the in-memory path (`load_tfds`, used by `sources.load_dataset`)
and the streaming path (`stream.open_dataset`): the builder lookup and
preparation (failures as one line), the canonical read order, the test split
choice, and the random-access reader of splits prepared as ArrayRecord
(`open_source`, `read_batches`): record i of a split is the example with
global id i, on every host and every run.

TensorFlow is imported when a function runs, not when the module loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from mrmc_jax.data import catalog
from mrmc_jax.data import images as images_lib
from mrmc_jax.data.errors import DataNotFoundError

# Records read per call to the ArrayRecord reader in `read_batches`.
READ_BATCH = 256

_Arrays = tuple[np.ndarray, np.ndarray]


def read_config(tfds):
  """tfds's ReadConfig that reads one file at a time (canonical order)."""
  # shuffle_files=False alone still interleaves 16 files; reading one file at
  # a time makes the order tfds's canonical one, the order split slicing
  # (`train[a:b]`) counts in, whatever the parallelism.
  return tfds.ReadConfig(interleave_cycle_length=1)


def tfds_builder(name: str, data_dir):
  """(tfds, a prepared builder) of an image-classification set."""
  tfds = images_lib.import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise ValueError(f"unknown data set {name!r}; allowed: "
                     f"{', '.join(catalog.DATASET_NAMES)}") from None
  features = builder.info.features
  if not ("image" in features and "label" in features):
    raise ValueError(f"tfds data set {name!r} has no 'image' and 'label' "
                     f"features; only image classification is supported")
  prepare(tfds, builder, name, data_dir)
  return tfds, builder


def prepare(tfds, builder, name: str, data_dir) -> None:
  """Downloads and prepares a tfds data set, turning failures into one line."""
  if builder.is_prepared():
    return
  kwargs = {}
  manual_dir = "<data_dir>/downloads/manual"
  if data_dir is not None:
    # tfds's own default, stated so the message can name the folder.
    manual_dir = os.path.join(os.fspath(data_dir), "downloads", "manual")
    kwargs["download_config"] = tfds.download.DownloadConfig(
        manual_dir=manual_dir)
  catalog = ("https://www.tensorflow.org/datasets/catalog/"
             f"{name.split('/')[0].split(':')[0]}")
  manual_message = (
      f"tfds data set {name!r} needs its files placed by hand in "
      f"{manual_dir} (see {catalog}), then pass data_dir=<that data_dir>")
  if (builder.MANUAL_DOWNLOAD_INSTRUCTIONS and data_dir is not None and
      not (os.path.isdir(manual_dir) and os.listdir(manual_dir))):
    # Checked here so the message does not depend on how far tfds gets.
    raise DataNotFoundError(manual_message)
  try:
    builder.download_and_prepare(**kwargs)
  except ModuleNotFoundError as e:
    if e.name != "importlib_resources":
      raise
    # tfds 4.9.10 imports it when preparing but declares it only for
    # Python < 3.9.
    raise ImportError("tensorflow-datasets needs importlib_resources to "
                      "prepare data sets: pip install importlib_resources"
                      ) from e
  except AssertionError as e:
    if not builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      raise
    raise DataNotFoundError(manual_message) from e
  except Exception as e:  # pylint: disable=broad-except
    # Offline machines fail here with assorted network errors; the chained
    # exception keeps the details.
    first_line = (str(e).splitlines() or [""])[0][:200]
    raise DataNotFoundError(
        f"could not download and prepare tfds data set {name!r} "
        f"({type(e).__name__}: {first_line}); without internet, copy a "
        f"prepared tfds data_dir and pass data_dir=<it> (see {catalog})"
    ) from e


def pick_test_split(builder) -> str | None:
  """The split evaluated on: 'test', else 'validation', else None."""
  splits = list(builder.info.splits)
  if not splits:
    # tfds mocks (and builders without metadata) accept any split name.
    return "test"
  for candidate in ("test", "validation"):
    if candidate in splits:
      return candidate
  return None


def is_array_record(builder) -> bool:
  """Whether a builder's files are ArrayRecord (random access by position)."""
  tfds = images_lib.import_tfds()
  return builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD


def image_shape(features, image_size) -> tuple[int, int, int]:
  """(H, W, C) of the decoded (and resized) images of a features dict."""
  shape = tuple(features["image"].shape)
  if image_size is not None:
    shape = (*image_size, shape[-1])
  if None in shape:
    raise ValueError(f"images have varying size {shape}; pass "
                     f"image_size=(H, W) to resize them")
  return shape


def decoder(features, image_size: tuple[int, int] | None, *,
            images: bool = True) -> Callable:
  """serialized tf.train.Example -> {"image": uint8 [H, W, C], "label"}."""
  tfds = images_lib.import_tfds()
  tf = images_lib.import_tf()
  decoders = None if images else {"image": tfds.decode.SkipDecoding()}

  def decode(serialized):
    ex = features.deserialize_example(serialized, decoders=decoders)
    out = {"label": tf.cast(ex["label"], tf.int32)}
    if images:
      image = ex["image"]
      if image_size is not None:
        image = images_lib.tf_resize(tf, image, image_size)
      out["image"] = image
    return out

  return decode


def encoded_image(features) -> Callable:
  """serialized tf.train.Example -> the image's encoded bytes (string [])."""
  tfds = images_lib.import_tfds()

  def decode(serialized):
    ex = features.deserialize_example(
        serialized, decoders={"image": tfds.decode.SkipDecoding()})
    return ex["image"]

  return decode


def reader(source) -> Callable[[np.ndarray], np.ndarray]:
  """ids int [K] -> object [K] of serialized records, for tf.numpy_function."""
  def read(ids: np.ndarray) -> np.ndarray:
    # dtype=object: a fixed-width bytes array would strip trailing zeros.
    out = np.empty(len(ids), dtype=object)
    out[:] = source.__getitems__([int(i) for i in ids])
    return out
  return read


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
  tfds = images_lib.import_tfds()
  if not is_array_record(builder):
    raise ValueError(
        f"tfds data set {builder.name!r} is prepared as "
        f"{builder.info.file_format}; streaming needs random access: prepare "
        f"it with `tfds build {builder.name} --file_format=array_record`")
  return builder.as_data_source(
      split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def split_files(builder, split: str) -> tuple[str, ...]:
  """The files of a prepared split, in record order (() if unrecorded)."""
  if split not in builder.info.splits:
    return ()
  return tuple(os.fspath(p) for p in builder.info.splits[split].filepaths)


def read_batches(source, features, ids: np.ndarray, *,
                 image_size: tuple[int, int] | None = None,
                 images: bool = True,
                 batch_size: int = READ_BATCH):
  """Decoded examples `ids` of a source, in the order given, in batches.

  Args:
    source: raw records by position (`open_source`).
    features: the data set's `tfds.features.FeaturesDict`.
    ids: int [K] record positions.
    image_size: (H, W) to resize to (bilinear, antialiased, as the
      in-memory sources).
    images: decode the images (False reads the labels only).
    batch_size: records per batch.

  Returns:
    tf.data.Dataset of dicts `label` int32 [b] (and `image` uint8
    [b, H, W, C]); b = batch_size except in the last batch.
  """
  tf = images_lib.import_tf()
  decode = decoder(features, image_size, images=images)
  read = reader(source)
  ds = tf.data.Dataset.from_tensor_slices(np.asarray(ids, np.int64))
  ds = ds.batch(batch_size)
  ds = ds.map(lambda i: tf.numpy_function(read, [i], tf.string,
                                          stateful=False),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.unbatch().map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def read_arrays(builder, split: str, *,
                image_size: tuple[int, int] | None = None) -> _Arrays:
  """A whole ArrayRecord split as (uint8 [N, H, W, C], int32 [N]) arrays.

  Row i is the record at position i, the id the stream gives.
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


def load_tfds(name: str, data_dir, image_size: tuple[int, int] | None
              ) -> tuple[_Arrays, _Arrays | None, int,
                         tuple[str, ...] | None]:
  """A tfds image-classification set in memory, in tfds's canonical order.

  Args:
    name: tfds name.
    data_dir: tfds's data_dir, or None.
    image_size: (H, W) to resize to; needed when sizes vary.

  Returns:
    (train, test, num_classes, class_names); train and test as
    (uint8 [N, H, W, C], int [N]); test is None without a test split.
  """
  tfds, builder = tfds_builder(name, data_dir)
  tf = images_lib.import_tf()

  def load(split):
    if is_array_record(builder):
      # tfds cannot build a tf.data pipeline over ArrayRecord files; read
      # them by position, which is also the id the stream gives.
      return read_arrays(builder, split, image_size=image_size)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=read_config(tfds))
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    shape = ds.element_spec[0].shape
    if image_size is not None and tuple(shape[:2]) != tuple(image_size):
      ds = ds.map(lambda x, y: (images_lib.tf_resize(tf, x, image_size), y),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif not shape.is_fully_defined():
      raise ValueError(
          f"tfds data set {name!r} has images of varying size {shape}; pass "
          f"image_size=(H, W), or stream it (stream.open_dataset)")
    # Chunks rather than batch_size=-1: one giant tensor doubles peak memory
    # and aborts under tfds's mocks; the concatenation keeps the order.
    images, labels = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
      images.append(x)
      labels.append(y)
    if not images:
      raise ValueError(f"tfds split {name}:{split} is empty")
    return np.concatenate(images), np.concatenate(labels)

  train = load("train")
  test_split = pick_test_split(builder)
  test = None if test_split is None else load(test_split)
  label = builder.info.features["label"]
  names = tuple(label.names) if getattr(label, "names", None) else None
  return train, test, label.num_classes, names
