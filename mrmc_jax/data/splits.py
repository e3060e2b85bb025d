"""Splits: examples with stable global ids, held in memory or streamed.

`IdSplit` holds the id logic (id of row i is `id_offset + i`, ids -> rows),
shared by the in-memory `ArraySplit` here and `stream.StreamSplit`. A
`Dataset` is a train split, an optional test split, the class count and the
train statistics. Also here: the per-process id ranges, the stratified
holdout and validation split, and the label checks every source runs
(`check_labels`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

from mrmc_jax import validation
from mrmc_jax.data import stats

# Implied class counts (largest label + 1) above this multiple of the number
# of distinct labels are refused as absurd (a stray label of 100000 among ten
# classes would allocate [N, 100001] logits).
MAX_CLASS_SPREAD = 10


def _read_only(array: np.ndarray) -> np.ndarray:
  # A read-only view: a frozen split cannot be changed in place through it,
  # and the caller's own array keeps its flags.
  view = array.view()
  view.flags.writeable = False
  return view


class IdSplit:
  """Global ids of a split's rows: row i is the example `id_offset + i`.

  Shared by the in-memory `ArraySplit` and `stream.StreamSplit`, which
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
    if 0 in images.shape[1:]:
      raise ValueError(f"images must have H, W, C >= 1, got {images.shape}")
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


def validation_split(data: Dataset, fraction: float,
                     seed: int) -> Dataset:
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
  mean, std = stats.compute_mean_std(train.images)
  return dataclasses.replace(
      data, train=train, test=ArraySplit(tr.images[held], tr.labels[held]),
      mean=mean, std=std)


def check_labels(train_labels: np.ndarray, test_labels: np.ndarray | None,
                 num_classes: int | None, source: str, *,
                 absent: str = "raise") -> int:
  """Refuses absurd class counts and test classes the train split lacks.

  Args:
    train_labels: int [N], N >= 1, values >= 0.
    test_labels: int [M] or None.
    num_classes: the class count the source states (tfds metadata, an npz's
      `num_classes`, a folder's class folders), or None to imply it as the
      largest label + 1.
    source: names the data in messages (a file, a folder, a data set name).
    absent: "raise" or "warn" when test labels hold classes with no train
      example (their accuracy is 0 whatever the training). The sources
      raise for user files (npz, folder) and warn for tfds sets, whose
      class list is the data set's own (a mock or a slice may miss some).

  Returns:
    The class count: `num_classes`, or the largest label + 1.

  Raises:
    ValueError: an implied class count above `MAX_CLASS_SPREAD` times the
      number of distinct train labels, a label >= `num_classes`, or (with
      `absent="raise"`) test labels of classes with no train example.
  """
  train = np.unique(train_labels)
  test = np.unique(test_labels) if test_labels is not None else train[:0]
  largest = int(max(train.max(), test.max() if test.size else 0))
  distinct = len(train)
  if num_classes is None:
    num_classes = largest + 1
    if num_classes > MAX_CLASS_SPREAD * distinct:
      raise ValueError(
          f"{source}: labels imply {num_classes} classes (largest label "
          f"{largest}) but the train split holds {distinct} distinct labels; "
          f"more than {MAX_CLASS_SPREAD}x is refused as a stray label (state "
          "num_classes explicitly if it is meant).")
  elif largest >= num_classes:
    raise ValueError(f"{source}: num_classes={num_classes} but the labels go "
                     f"up to {largest}; num_classes must exceed every label.")
  if absent not in ("raise", "warn"):
    raise ValueError(f"absent={absent!r} is not allowed: use 'raise' or "
                     "'warn'.")
  missing = np.setdiff1d(test, train)
  if missing.size:
    count = int(np.isin(test_labels, missing).sum())
    message = (f"{source}: {count} of {len(test_labels)} test examples have "
               f"classes absent from the train split ({missing.size} "
               f"classes, e.g. {missing[:5].tolist()}); no training can "
               "classify them.")
    if absent == "raise":
      raise ValueError(message)
    warnings.warn(message, stacklevel=2)
  return int(num_classes)
