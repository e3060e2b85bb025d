"""Tests for mrmc_jax.data.loader: one call for every name and input."""

import numpy as np
import pytest

from mrmc_jax.data import loader
from mrmc_jax.data import sources
from mrmc_jax.data import stream
from mrmc_jax.data import stream_test


def test_load_in_memory_is_load_dataset():
  a = loader.load("digits")
  b = sources.load_dataset("digits")
  np.testing.assert_array_equal(a.train.images, b.train.images)
  np.testing.assert_array_equal(a.mean, b.mean)


def test_load_stream_strips_the_prefix_and_squares_the_size(tmp_path):
  stream_test.write_digits32(tmp_path)
  data = loader.load("tfds:digits32", tmp_path, input="stream", image_size=16)
  assert isinstance(data.train, stream.StreamSplit)
  assert data.image_shape == (16, 16, 1)
  assert len(data.train) == stream_test.N_TRAIN


def test_bad_requests_fail_before_reading():
  with pytest.raises(ValueError, match="image_size=0 is not allowed"):
    loader.load("npz:/no/such/file.npz", image_size=0)
  with pytest.raises(ValueError, match="input='stream' is not allowed"):
    loader.load("digits", input="stream")
