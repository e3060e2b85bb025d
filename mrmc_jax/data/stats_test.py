"""Tests for mrmc_jax.data.stats: exact integer pixel sums."""

import numpy as np
import pytest

from mrmc_jax.data import stats


def test_compute_mean_std():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 3, 4, 2), dtype=np.uint8)
  mean, std = stats.compute_mean_std(images)
  np.testing.assert_allclose(mean, images.reshape(-1, 2).mean(0) / 255,
                             rtol=1e-6)
  np.testing.assert_allclose(std, images.reshape(-1, 2).std(0) / 255,
                             rtol=1e-5)
  _, std = stats.compute_mean_std(np.zeros((2, 2, 2, 1), np.uint8))
  assert std[0] == pytest.approx(1 / 255)


def test_integer_sums_are_exact_and_split_anyhow():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 5, 4, 3), dtype=np.uint8)
  total, total_sq, count = stats.pixel_sums(images)
  x = images.reshape(-1, 3).astype(np.int64)
  assert total == x.sum(0).tolist() and total_sq == (x * x).sum(0).tolist()
  assert count == 50 * 5 * 4
  # Any split into parts adds up to the same integers.
  parts = stats.add_sums(stats.pixel_sums(images[:7]),
                         stats.pixel_sums(images[7:]))
  assert parts == (total, total_sq, count)
  # Through 32-bit words, as processes exchange them.
  words = np.stack([stats.sums_to_words(*stats.pixel_sums(images[:20])),
                    stats.sums_to_words(*stats.pixel_sums(images[20:]))])
  assert words.dtype == np.uint32
  assert stats.words_to_sums(words) == (total, total_sq, count)


def test_sums_beyond_float64_precision_stay_exact():
  # ImageNet-scale sums of squares (1e8 images at 224 px: ~3e20) exceed
  # 2**53 and 2**64; the integers and the statistics stay exact.
  count = 100_000_000 * 224 * 224
  total, total_sq = [count * 100 + 1], [count * 20_000 + 12_345]
  words = stats.sums_to_words(total, total_sq, count)
  assert stats.words_to_sums(words) == (total, total_sq, count)
  assert float(total_sq[0]) == float(total_sq[0] - 1)  # float64 would round
  mean, std = stats.mean_std_from_sums(total, total_sq, count)
  assert mean[0] == np.float32(100 / 255)
  assert std[0] == np.float32(np.sqrt(20_000 - 100 ** 2) / 255)


def test_mean_std_matches_numpy_and_checks_input():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (30, 6, 6, 2), dtype=np.uint8)
  mean, std = stats.compute_mean_std(images)
  x = images.reshape(-1, 2).astype(np.float64) / 255
  np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, x.std(0), rtol=1e-6)
  with pytest.raises(ValueError, match="empty split"):
    stats.compute_mean_std(images[:0])
  with pytest.raises(ValueError, match="uint8"):
    stats.pixel_sums(images.astype(np.int16))
  with pytest.raises(ValueError, match="count must be positive"):
    stats.mean_std_from_sums([0], [0], 0)
  with pytest.raises(ValueError, match=r"2\*\*128"):
    stats.sums_to_words([1 << 130], [0], 1)
