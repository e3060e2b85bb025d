"""tf.data input pipelines over a split: shuffle, augment, pad, shard.

The one input path of the runner and the examples: `train_dataset` and
`eval_dataset` over an `ArraySplit` (your arrays, or `sources.load_dataset`)
or a `stream.StreamSplit`.

Every batch is a dict:

* `image`: float32 [B, H, W, C], `(pixel / 255 - mean) / std`; padding rows
  are all zeros (the mean image).
* `label`: int32 [B]; 0 on padding rows.
* `id`: int32 [B], the global example id; `PAD_ID` (-1) on padding rows.
* `mask`: bool [B], False exactly on padding rows.

Batches have a static shape: the last partial batch is padded with masked
rows instead of being dropped, so every example gets its per-example score and
every process runs the same number of steps. Consumers must use `mask` (never
scatter with a padding row's id: -1 wraps around in numpy and JAX).

Determinism: the order of an epoch is `epoch_order(ids, seed, epoch)`, a numpy
permutation that can be inspected; the crop offsets and flips of an example are
`augment_params(id, seed, epoch)`, a counter-based hash of (seed, epoch, id).
Neither depends on batch size, position in the epoch, process or tf.data
parallelism, so the same (seed, epoch) gives the same batches on every run and
every host.

Core-sets: pass `ids=` to `train_dataset`/`eval_dataset` (e.g.
`np.flatnonzero(mask)`): rows are gathered from the arrays before the
pipeline is built, so an epoch has exactly `num_batches(len(ids),
batch_size)` steps and never reads the other examples.

TensorFlow only feeds data: hide accelerators from it once, in the program's
entry point (`tf.config.set_visible_devices([], "GPU")`, as
`experiments/*.py` and the examples do); importing this module changes no
process-wide setting.

Streaming: `train_dataset` and `eval_dataset` also take a
`stream.StreamSplit` (a tfds ArrayRecord split read by id): the order,
layout, padding, augmentation and normalisation are the same code, so the
batches equal those of the split held in memory; each process reads and
decodes only the records of its own rows.

Multiple hosts: with `process_count` P, the global batch of `batch_size` B is
built identically on every process, and process p keeps its rows
[p * B / P, (p + 1) * B / P), with their global ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from mrmc_jax import validation
from mrmc_jax.data import augment as crops
from mrmc_jax.data import splits

# The `id` of padding rows.
PAD_ID = -1

_ArrayLike = np.ndarray | Sequence[float] | float


def num_batches(n: int, batch_size: int) -> int:
  """Number of batches that hold n examples: ceil(n / batch_size)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  return -(-n // batch_size)


def _unique_ids(ids: int | np.ndarray | Sequence[int]) -> np.ndarray:
  if np.ndim(ids) == 0:
    return np.arange(int(ids), dtype=np.int64)
  ids = np.asarray(ids)
  if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype,
                                                          np.integer)):
    raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} "
                     f"{ids.shape}")
  ids = ids.astype(np.int64)
  if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
    return ids  # Already sorted and distinct (a split's ids): O(N), no sort.
  unique = np.unique(ids)
  if len(unique) != len(ids):
    raise ValueError(f"ids must not repeat: {len(ids) - len(unique)} "
                     f"duplicates")
  return unique


def epoch_order(ids: int | np.ndarray | Sequence[int], seed: int,
                epoch: int) -> np.ndarray:
  """The order in which one training epoch visits its examples.

  Args:
    ids: N (meaning ids 0..N-1) or an integer array of distinct ids; their
      order does not matter (they are sorted first).
    seed: non-negative int.
    epoch: non-negative int.

  Returns:
    int64 [N]: the ids, permuted by `np.random.default_rng([seed, epoch])`.
  """
  validation.check_seed(seed)
  validation.check_int(epoch, "epoch", minimum=0)
  ids = _unique_ids(ids)
  return ids[np.random.default_rng([int(seed), int(epoch)]).permutation(
      len(ids))]


_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
  # SplitMix64's finaliser: a bijective mix of uint64 with good avalanche;
  # uint64 array arithmetic wraps modulo 2**64 as the algorithm needs.
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def augment_params(ids: np.ndarray | Sequence[int], seed: int, epoch: int, *,
                   padding: int = 4) -> dict[str, np.ndarray]:
  """Random-crop offsets and flips of examples, a pure function of the id.

  A counter-based hash of (seed, epoch, id) rather than a random stream: an
  example's augmentation is then the same whatever batch, position, process
  or thread it lands in, and can be recomputed here for inspection.

  Args:
    ids: integer [K] global ids.
    seed: non-negative int.
    epoch: non-negative int.
    padding: crop padding p; offsets lie in [0, 2p].

  Returns:
    `dy`, `dx`: int32 [K], the crop's top-left corner in the padded image;
    `flip`: bool [K], whether to flip left-right.
  """
  h = _example_hash(ids, seed, epoch)
  span = np.uint64(2 * padding + 1)
  return {
      "dy": ((h >> np.uint64(8)) % span).astype(np.int32),
      "dx": ((h >> np.uint64(32)) % span).astype(np.int32),
      "flip": (h & np.uint64(1)).astype(bool),
  }


def _example_hash(ids, seed: int, epoch: int) -> np.ndarray:
  """uint64 [K]: SplitMix64 of (seed, epoch, id), the key of augmentation."""
  validation.check_seed(seed)
  validation.check_int(epoch, "epoch", minimum=0)
  ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
  h = _splitmix64(np.full(ids.shape, int(seed) & _MASK64, np.uint64))
  h = _splitmix64(h ^ np.uint64(int(epoch) & _MASK64))
  return _splitmix64(h ^ ids)


def crop_params(ids: np.ndarray | Sequence[int], seed: int,
                epoch: int) -> dict[str, np.ndarray]:
  """Random-resized-crop seeds and flips of examples, a function of the id.

  Args:
    ids: integer [K] global ids.
    seed: non-negative int.
    epoch: non-negative int.

  Returns:
    `crop_seed`: int32 [K, 2], the seed of `augment`'s window sampler;
    `flip`: bool [K], the same flips as `augment_params`.
  """
  h = _example_hash(ids, seed, epoch)
  return {"crop_seed": crops.crop_seeds(h),
          "flip": (h & np.uint64(1)).astype(bool)}


def _check_processes(batch_size: int, process_index: int,
                     process_count: int) -> None:
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index < process_count, got "
                     f"{process_index}, {process_count}")
  if batch_size % process_count:
    raise ValueError(
        f"batch_size {batch_size} is not divisible by process_count "
        f"{process_count}; each process takes an equal slice of every global "
        f"batch")


def _layout(order: np.ndarray, batch_size: int, *, pad: bool,
            drop_remainder: bool, process_index: int,
            process_count: int) -> np.ndarray:
  """Lays ids out in global batches and keeps this process's columns.

  Returns:
    int64 [K]: this process's ids, batch after batch, `PAD_ID` on padding.
  """
  _check_processes(batch_size, process_index, process_count)
  n = len(order)
  if drop_remainder:
    total = (n // batch_size) * batch_size
  elif pad or n % batch_size == 0:
    total = num_batches(n, batch_size) * batch_size
  elif process_count > 1:
    raise ValueError("with process_count > 1, set pad_to_batch or "
                     "drop_remainder, so that every process runs the same "
                     "steps")
  else:
    return order  # a short last batch, on the only process
  padded = np.full(total, PAD_ID, np.int64)
  padded[:min(n, total)] = order[:total]
  local = batch_size // process_count
  columns = slice(process_index * local, (process_index + 1) * local)
  return padded.reshape(-1, batch_size)[:, columns].reshape(-1)


def _norm_constants(mean: _ArrayLike, std: _ArrayLike,
                    channels: int) -> tuple[np.ndarray, np.ndarray]:
  mean = np.broadcast_to(np.asarray(mean, np.float32), (channels,))
  std = np.broadcast_to(np.asarray(std, np.float32), (channels,))
  if not np.all(std > 0):
    raise ValueError(f"std must be positive, got {std}")
  # (x / 255 - mean) / std == x * scale - shift, one multiply-add per pixel.
  return 1.0 / (255.0 * std), mean / std


def _normalise(images, mask, scale, shift):
  x = tf.cast(images, tf.float32) * scale - shift
  # Multiplying by the 0/1 mask zeroes padding rows exactly (x is finite)
  # and measured cheaper than tf.where on CPU.
  return x * tf.cast(mask, tf.float32)[:, None, None, None]


def _crop_flip(images, dy, dx, flip, padding: int, pad_mode: str):
  """Pads, crops back at per-example offsets and flips a uint8 batch."""
  _, h, w, _ = images.shape
  x = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]],
             mode=pad_mode)
  # One gather per axis crops every example at its own offset at once; the
  # flip is folded into the column indices (half the cost of tf.reverse).
  rows = dy[:, None] + tf.range(h)[None]
  j = tf.range(w)[None]
  cols = dx[:, None] + tf.where(flip[:, None], w - 1 - j, j)
  x = tf.gather(x, rows, axis=1, batch_dims=1)
  return tf.gather(x, cols, axis=2, batch_dims=1)


def _batched(split, ids: np.ndarray, local_batch: int,
             mean, std, aug: dict[str, np.ndarray] | None, crop: str | None,
             padding: int = 0, pad_mode: str = "CONSTANT") -> tf.data.Dataset:
  """Batches of the examples `ids` (PAD_ID = padding), in the order given.

  `crop`: None, "pad" (pad-and-crop at `aug`'s offsets), "inception"
  (random-resized crops at `aug`'s seeds) or "center"; `aug` holds the
  per-example columns the crop reads.
  """
  mask = ids != PAD_ID
  rows = np.zeros(len(ids), np.int64)
  rows[mask] = split.rows(ids[mask])
  labels = np.where(mask, split.labels[rows], 0).astype(np.int32)
  encoded = None
  if isinstance(split, splits.ArraySplit):
    # Ids are distinct (checked upstream), so as many real rows as the
    # split holds means the whole split: no per-epoch sort of N rows.
    used = None if int(mask.sum()) == len(split) else np.unique(rows[mask])
    if used is not None and len(used) < len(split):
      # A core-set: copy only its rows into TensorFlow, not the whole split.
      images = split.images[used]
      rows = np.searchsorted(used, rows)
    else:
      images = split.images
    images = tf.convert_to_tensor(images)
    fetch = lambda r: tf.gather(images, r)
  else:
    # A `stream.StreamSplit`: this process reads and decodes only the
    # records of its rows (padding rows read row 0 and are zeroed below).
    fetch = split.read_images
    encoded = split.read_encoded
  scale, shift = _norm_constants(mean, std, split.image_shape[-1])

  columns = {"row": rows, "label": labels, "id": ids.astype(np.int32),
             "mask": mask}
  if crop == "center":
    aug = {"crop_seed": np.zeros((len(ids), 2), np.int32),
           "flip": np.zeros(len(ids), bool)}
  if aug is not None:
    columns.update(aug)

  def build(ex):
    if crop in ("inception", "center") and encoded is not None:
      # Only the crop window of a JPEG record is decoded.
      x = crops.crop_encoded(encoded(ex["row"]), ex["crop_seed"],
                               ex["flip"], out_shape=split.image_shape,
                               train=crop == "inception")
    else:
      x = fetch(ex["row"])
      if crop == "pad":
        x = _crop_flip(x, ex["dy"], ex["dx"], ex["flip"], padding, pad_mode)
      elif crop in ("inception", "center"):
        x = crops.crop_arrays(x, ex["crop_seed"], ex["flip"],
                                train=crop == "inception")
    return {"image": _normalise(x, ex["mask"], scale, shift),
            "label": ex["label"], "id": ex["id"], "mask": ex["mask"]}

  if len(ids) % local_batch == 0:
    # Slicing pre-shaped [steps, batch] columns costs one tf.data element per
    # batch instead of one per example (several times faster for 28x28).
    columns = {k: v.reshape(-1, local_batch, *v.shape[1:])
               for k, v in columns.items()}
    ds = tf.data.Dataset.from_tensor_slices(columns)
  else:
    # Unpadded layouts only: keep the short last batch.
    ds = tf.data.Dataset.from_tensor_slices(columns).batch(local_batch)
  ds = ds.map(build, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def train_dataset(split: splits.IdSplit,
                  *,
                  batch_size: int,
                  seed: int,
                  epoch: int,
                  augment: bool,
                  mean: _ArrayLike,
                  std: _ArrayLike,
                  ids: np.ndarray | Sequence[int] | None = None,
                  drop_remainder: bool = False,
                  pad_to_batch: bool = True,
                  process_index: int = 0,
                  process_count: int = 1,
                  crop_padding: int = 4,
                  pad_mode: str = "constant",
                  min_augment_size: int = 32,
                  crop: str = "auto",
                  start_step: int = 0) -> tf.data.Dataset:
  """One shuffled, optionally augmented training epoch.

  Args:
    split: the examples: an `ArraySplit`, or a `stream.StreamSplit`
      (read from storage; this process fetches only its own rows).
    batch_size: global batch size B; divisible by `process_count`.
    seed: non-negative int; with `epoch`, fixes order and augmentation.
    epoch: non-negative int.
    augment: a random crop (see `crop`) and left-right flip. Applied only
      to images at least `min_augment_size` on both sides: small grayscale
      sets (digits, MNIST) would have their classes changed by a flip.
    mean: float [C] or scalar, per-channel mean in units of pixel / 255
      (`Dataset.mean`).
    std: float [C] or scalar, likewise (`Dataset.std`).
    ids: restrict the epoch to these global ids (a core-set); default all.
    drop_remainder: drop the last partial global batch (those examples are
      not seen this epoch).
    pad_to_batch: pad the last partial batch with masked rows (the default);
      if False and not `drop_remainder`, the last batch is short.
    process_index: this process.
    process_count: number of processes; each gets B / P rows per batch.
    crop_padding: pixels added on each side before cropping.
    pad_mode: "constant" (zeros) or "reflect".
    min_augment_size: smallest height and width that get augmented.
    crop: "pad" (pad `crop_padding`, crop back: CIFAR's), "inception"
      (random-resized crop, `augment`; on JPEG records only the window is
      decoded) or "auto": "inception" for images of at least
      `augment.MIN_INCEPTION_SIZE` (128) px on both sides, else "pad".
    start_step: the first batch of the epoch's layout to yield (resuming
      mid-epoch): batches 0..start_step-1 are left out before anything is
      read, gathered or decoded; the rest are those of the whole epoch. In
      [0, number of batches]; every process must pass the same value.

  Returns:
    tf.data.Dataset of batch dicts (module docstring) with B / P rows each.
  """
  if crop not in ("auto", "pad", "inception"):
    raise ValueError(f"crop={crop!r} is not allowed: use 'auto', 'pad' or "
                     "'inception'.")
  pad_mode = pad_mode.upper()
  if pad_mode not in ("CONSTANT", "REFLECT"):
    raise ValueError(f"pad_mode must be 'constant' or 'reflect', got "
                     f"{pad_mode.lower()!r}")
  order = epoch_order(split.ids if ids is None else ids, seed, epoch)
  local = _layout(order, batch_size, pad=pad_to_batch,
                  drop_remainder=drop_remainder, process_index=process_index,
                  process_count=process_count)
  local_batch = batch_size // process_count
  steps = num_batches(len(local), local_batch)
  if (isinstance(start_step, bool) or
      not isinstance(start_step, (int, np.integer)) or
      not 0 <= start_step <= steps):
    raise ValueError(f"start_step={start_step!r} is not allowed: use an int "
                     f"in [0, {steps}] (the epoch's number of batches)")
  # The layout is cut at a batch boundary: the batches that follow are
  # exactly those of the whole epoch from `start_step` on.
  local = local[int(start_step) * local_batch:]
  h, w, _ = split.image_shape
  aug = kind = None
  if augment and min(h, w) >= min_augment_size:
    kind = crop
    if crop == "auto":
      kind = "inception" if min(h, w) >= crops.MIN_INCEPTION_SIZE else "pad"
    if kind == "pad":
      aug = augment_params(np.maximum(local, 0), seed, epoch,
                           padding=crop_padding)
    else:
      aug = crop_params(np.maximum(local, 0), seed, epoch)
  return _batched(split, local, local_batch, mean, std, aug,
                  kind, crop_padding, pad_mode)


def eval_dataset(split: splits.IdSplit,
                 *,
                 batch_size: int,
                 mean: _ArrayLike,
                 std: _ArrayLike,
                 ids: np.ndarray | Sequence[int] | None = None,
                 process_index: int = 0,
                 process_count: int = 1,
                 crop: str = "auto") -> tf.data.Dataset:
  """All examples (or `ids`) in ascending id order, unaugmented, padded.

  Args:
    split: the examples: an `ArraySplit`, or a `stream.StreamSplit`
      (read from storage; this process fetches only its own rows).
    batch_size: global batch size B; divisible by `process_count`.
    mean: float [C] or scalar, per-channel mean in units of pixel / 255.
    std: float [C] or scalar, likewise.
    ids: restrict to these global ids; default all.
    process_index: this process.
    process_count: number of processes; each gets B / P rows per batch.
    crop: "none" (the stored images), "center" (the center
      `augment.CENTER_FRACTION` of the shorter side, resized back: the
      ImageNet evaluation; on JPEG records only that window is decoded) or
      "auto": "center" for images of at least `augment.MIN_INCEPTION_SIZE`
      px on both sides, else "none".

  Returns:
    tf.data.Dataset of `num_batches(n, B)` batch dicts with B / P rows each.
  """
  if crop not in ("auto", "none", "center"):
    raise ValueError(f"crop={crop!r} is not allowed: use 'auto', 'none' or "
                     "'center'.")
  if crop == "auto":
    crop = ("center" if min(split.image_shape[:2]) >= crops.MIN_INCEPTION_SIZE
            else "none")
  order = split.ids if ids is None else _unique_ids(ids)
  local = _layout(order, batch_size, pad=True, drop_remainder=False,
                  process_index=process_index, process_count=process_count)
  return _batched(split, local, batch_size // process_count, mean, std, None,
                  None if crop == "none" else crop)


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a dataset as dicts of numpy arrays."""
  return ds.as_numpy_iterator()
