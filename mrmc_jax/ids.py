"""Dense example ids 0..N-1 for data whose own keys are strings or sparse.

The trajectory, the scores and the mask are indexed by a dense global id
in `[0, N)`. Data sets often name their examples otherwise: file names,
database keys, hashes, or integer ids with gaps. `IdMap` numbers your keys
once (key `keys[i]` gets id `i`), maps keys to ids on the host (numpy) or
inside a tf.data pipeline (a `tf.lookup.StaticHashTable`), and maps ids and
masks back to your keys. Unknown keys are errors, never a silent id.

`subset_source` restricts a random-access source (anything with `__len__`
and `__getitem__`, e.g. the source of `grain.MapDataset.source`) to the
examples of a mask without reading the others.
"""

from typing import Any, Sequence

import numpy as np
import tensorflow as tf


def _as_keys(keys: Any, name: str) -> np.ndarray:
  """Keys as a 1-D numpy array of str (unicode) or int64."""
  arr = np.asarray(keys)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be 1-D [N], got shape {arr.shape}.")
  if arr.dtype.kind == "S":
    arr = np.char.decode(arr, "utf-8")
  elif arr.dtype.kind == "O" and arr.size and isinstance(arr[0], bytes):
    arr = np.asarray([k.decode("utf-8") for k in arr])
  elif arr.dtype.kind == "O":
    arr = np.asarray(arr.tolist())
  if arr.dtype.kind in "iu":
    return arr.astype(np.int64)
  if arr.dtype.kind == "U" or arr.size == 0:
    return arr
  raise ValueError(f"{name} has dtype {arr.dtype}: keys must be strings, "
                   "bytes or integers.")


class IdMap:
  """Your example keys <-> dense ids `0..N-1` (key `keys[i]` is id `i`).

  Example:
    ids = IdMap(file_names)                      # N unique strings
    ds = ids.add_ids(ds, key="file_name")         # tf.data: adds int32 `id`
    ...                                           # record, score, select
    kept = ids.selected_keys(mask)                # the core-set by your keys

  Attributes:
    keys: `[N]` the keys (str or int64), in id order.
  """

  def __init__(self, keys: Sequence[Any]):
    """Numbers `keys` in their order.

    Args:
      keys: `[N]` unique strings, bytes (UTF-8) or integers (any sparse
        int64 values), N >= 1. Sort them first if ids should follow the
        sorted order.

    Raises:
      ValueError: not 1-D, empty, another dtype, or a repeated key.
    """
    keys = _as_keys(keys, "keys")
    if keys.size == 0:
      raise ValueError("keys is empty: give at least one example key.")
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if dup.size:
      raise ValueError(
          f"keys holds {dup.size} repeated keys (first "
          f"{sorted_keys[dup[0]].item()!r}): each example needs a unique key.")
    if keys.size >= 2**31:
      raise ValueError(f"{keys.size} keys: ids are int32, so N < 2^31.")
    keys.setflags(write=False)
    self.keys = keys
    self._order = order.astype(np.int32)
    self._sorted = sorted_keys

  @property
  def num_examples(self) -> int:
    """N, the number of keys (the trajectory's first dimension)."""
    return int(self.keys.size)

  def to_ids(self, keys: Sequence[Any]) -> np.ndarray:
    """int32 `[M]` dense ids of `[M]` keys (host, numpy).

    Raises:
      ValueError: a key that is not in the map (the first one is named).
    """
    query = _as_keys(keys, "keys")
    if query.size and query.dtype.kind != self.keys.dtype.kind:
      raise ValueError(f"keys of dtype {query.dtype} do not match the map's "
                       f"{self.keys.dtype} keys.")
    pos = np.searchsorted(self._sorted, query)
    pos = np.minimum(pos, self._sorted.size - 1)
    unknown = np.flatnonzero(self._sorted[pos] != query)
    if unknown.size:
      raise ValueError(f"{unknown.size} keys are not in the map (first "
                       f"{query[unknown[0]].item()!r}).")
    return self._order[pos]

  def to_keys(self, ids: Sequence[int]) -> np.ndarray:
    """The keys `[M]` of dense ids `[M]` (e.g. `np.flatnonzero(mask)`).

    Raises:
      ValueError: an id outside `[0, N)`.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
      raise ValueError(f"ids must be integers, got dtype {ids.dtype}.")
    bad = np.flatnonzero((ids < 0) | (ids >= self.num_examples))
    if bad.size:
      raise ValueError(f"id {int(ids[bad[0]])} is not allowed: ids are in "
                       f"[0, {self.num_examples}).")
    return self.keys[ids]

  def selected_keys(self, mask: Any) -> np.ndarray:
    """The keys of a core-set mask, bool `[N]` by id, in id order."""
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (self.num_examples,):
      raise ValueError(f"mask must be bool [{self.num_examples}], got "
                       f"{mask.dtype} {mask.shape}.")
    return self.keys[mask]

  def table(self, default_id: int = -1) -> tf.lookup.StaticHashTable:
    """A `tf.lookup.StaticHashTable` from keys (tf.string or tf.int64) to
    int32 ids; keys not in the map give `default_id`."""
    keys = tf.constant(self.keys, tf.int64 if self.keys.dtype.kind == "i"
                       else tf.string)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            keys, tf.range(self.num_examples, dtype=tf.int32)),
        default_value=tf.constant(default_id, tf.int32))

  def add_ids(self, ds: tf.data.Dataset, key: str = "key",
              id_key: str = "id") -> tf.data.Dataset:
    """Adds the dense id to every element of an unbatched tf.data pipeline.

    Args:
      ds: elements are dicts with a scalar `key` (tf.string or an integer).
      key: the field holding your key.
      id_key: the field to write the int32 id to (`id` is what the train
        steps and `record` read).

    Returns:
      The pipeline with `id_key` added. An element whose key is not in the
      map stops the iteration with an InvalidArgumentError naming it.
    """
    table = self.table()
    is_int = self.keys.dtype.kind == "i"

    def add(ex):
      k = tf.cast(ex[key], tf.int64) if is_int else ex[key]
      i = table.lookup(k)
      tf.debugging.assert_non_negative(
          i, message=f"IdMap.add_ids: a `{key}` that is not in the map")
      return {**ex, id_key: i}

    return ds.map(add)


class _Subset:
  """`source` restricted to ascending `rows`; len() and [i] only."""

  def __init__(self, source: Any, rows: np.ndarray):
    self._source = source
    self._rows = rows

  def __len__(self) -> int:
    return int(self._rows.size)

  def __getitem__(self, index: int) -> Any:
    return self._source[int(self._rows[index])]


def subset_source(source: Any, mask: Any) -> Any:
  """A random-access source of only the examples a mask keeps.

  For sources whose index is the dense id (`source[i]` is example `i`), e.g.
  `grain.MapDataset.source(subset_source(source, mask))`: the core-set's
  epochs then read only its examples, shuffled and batched by the
  pipeline as usual.

  Args:
    source: anything with `__len__` and `__getitem__(int)`, N records.
    mask: bool `[N]`, the core-set by id.

  Returns:
    A source with `len = mask.sum()`; item `j` is the `j`-th kept record.
  """
  mask = np.asarray(mask)
  if mask.dtype != bool or mask.shape != (len(source),):
    raise ValueError(f"mask must be bool [{len(source)}] (the source's "
                     f"length), got {mask.dtype} {mask.shape}.")
  return _Subset(source, np.flatnonzero(mask))
