"""Per-channel pixel statistics from exact integer sums.

The mean and standard deviation of a train split come from three integers
per channel: the sum of the uint8 pixel values, the sum of their squares and
the pixel count. Python integers never round, so partial sums over chunks,
shards or processes add up to the same numbers in any order and at any
scale (float64 sums stop being exact past 2**53: about 2.8M images at 224 px
for the squares), and the statistics of a streamed split equal those of the
split held in memory bit for bit, whatever the host count. The mean and the
variance are then single correctly rounded divisions of exact integers.

Across processes the sums travel as 32-bit words (`sums_to_words`,
`words_to_sums`), which any collective carries exactly (JAX without x64
included).
"""

from __future__ import annotations

import numpy as np

# 32-bit limbs per integer in `sums_to_words`: 4 limbs hold sums below 2**128,
# far above 255**2 x 100M images x 224**2 px (about 3e20 < 2**69).
_LIMBS = 4


def pixel_sums(images: np.ndarray) -> tuple[list[int], list[int], int]:
  """Exact per-channel sums of a uint8 batch.

  Args:
    images: uint8 [N, H, W, C].

  Returns:
    (total, total_sq, count): C Python ints each for the sums of the values
    and of their squares, and the pixels per channel N * H * W.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"images must be uint8 [N, H, W, C], got {images.dtype} "
                     f"{images.shape}")
  n, h, w, c = images.shape
  total, total_sq = [0] * c, [0] * c
  # Chunks of ~4M values: int64 sums of squares stay below 2**63 within a
  # chunk (4M x 65025 < 2**38) and the int64 copy stays small.
  chunk = max(1, (1 << 22) // max(1, h * w * c))
  for i in range(0, n, chunk):
    x = images[i:i + chunk].reshape(-1, c).astype(np.int64)
    for ch, (s, sq) in enumerate(zip(x.sum(0), np.square(x).sum(0))):
      total[ch] += int(s)
      total_sq[ch] += int(sq)
  return total, total_sq, n * h * w


def add_sums(a: tuple[list[int], list[int], int],
             b: tuple[list[int], list[int], int]
             ) -> tuple[list[int], list[int], int]:
  """The sums of two disjoint sets of images (`pixel_sums` results)."""
  if len(a[0]) != len(b[0]):
    raise ValueError(f"channel counts differ: {len(a[0])} and {len(b[0])}")
  return ([x + y for x, y in zip(a[0], b[0])],
          [x + y for x, y in zip(a[1], b[1])], a[2] + b[2])


def mean_std_from_sums(total, total_sq, count: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation from exact pixel sums.

  Args:
    total: C ints (or an integer array [C]), sum of every pixel value
      (0..255) per channel.
    total_sq: C ints, sum of the squared values.
    count: pixels per channel (N * H * W), positive.

  Returns:
    (mean, std): float32 [C] each, in units of pixel / 255; std is at least
    1 / 255 so that normalising never divides by zero.
  """
  count = int(count)
  if count <= 0:
    raise ValueError(f"count must be positive, got {count}")
  total = [int(t) for t in np.asarray(total).reshape(-1)]
  total_sq = [int(t) for t in np.asarray(total_sq).reshape(-1)]
  # int / int is correctly rounded; the variance's numerator is exact.
  mean = np.array([t / count for t in total])
  var = np.array([(count * sq - t * t) / (count * count)
                  for t, sq in zip(total, total_sq)])
  std = np.sqrt(np.maximum(var, 0.0))
  return ((mean / 255.0).astype(np.float32),
          np.maximum(std / 255.0, 1.0 / 255.0).astype(np.float32))


def compute_mean_std(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation, in units of pixel / 255.

  Args:
    images: uint8 [N, H, W, C], N >= 1.

  Returns:
    (mean, std): float32 [C] each; std is at least 1 / 255.
  """
  if len(images) == 0:
    raise ValueError("cannot compute statistics of an empty split")
  return mean_std_from_sums(*pixel_sums(images))


def sums_to_words(total, total_sq, count: int) -> np.ndarray:
  """Exact sums as uint32 words, for a collective that adds or gathers.

  Args:
    total: C non-negative ints.
    total_sq: C non-negative ints.
    count: non-negative int.

  Returns:
    uint32 [(2C + 1) * 4]: each integer as 4 little-endian 32-bit limbs.
  """
  values = [*map(int, total), *map(int, total_sq), int(count)]
  if any(v < 0 or v >= 1 << (32 * _LIMBS) for v in values):
    raise ValueError(f"sums must lie in [0, 2**{32 * _LIMBS})")
  return np.array([(v >> (32 * k)) & 0xFFFFFFFF for v in values
                   for k in range(_LIMBS)], np.uint32)


def words_to_sums(words: np.ndarray) -> tuple[list[int], list[int], int]:
  """The summed integers of `sums_to_words` rows, one row per process.

  Args:
    words: uint32 [P, (2C + 1) * 4] (or [(2C + 1) * 4] for one process).

  Returns:
    (total, total_sq, count) summed over the rows, as Python ints.
  """
  words = np.asarray(words, np.uint32)
  words = words.reshape(-1, words.shape[-1])
  if words.shape[-1] % (2 * _LIMBS) != _LIMBS:
    raise ValueError(f"not sums_to_words rows: {words.shape}")
  values = [0] * (words.shape[-1] // _LIMBS)
  for row in words:
    for i in range(len(values)):
      limbs = row[i * _LIMBS:(i + 1) * _LIMBS]
      values[i] += sum(int(x) << (32 * k) for k, x in enumerate(limbs))
  c = (len(values) - 1) // 2
  return values[:c], values[c:2 * c], values[-1]

