"""Tests for mrmc_jax.data.tfds on tfds's mock data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mrmc_jax.data import sources
from mrmc_jax.data.errors import DataNotFoundError


def test_tfds_cifar10_on_mock_data():
  with tfds.testing.mock_data(num_examples=20):
    a = sources.load_dataset("cifar10")
    b = sources.load_dataset("cifar10")
  assert a.image_shape == (32, 32, 3) and a.num_classes == 10
  assert len(a.train) == 20 and len(a.test) == 20
  assert a.mean.shape == (3,)
  np.testing.assert_array_equal(a.train.images, b.train.images)


def test_tfds_variable_size_needs_image_size():
  with tfds.testing.mock_data(num_examples=3):
    with pytest.raises(ValueError, match="varying size.*image_size"):
      sources.load_dataset("imagenet2012")
    ds = sources.load_dataset("imagenet2012", image_size=(8, 8))
  assert ds.image_shape == (8, 8, 3) and ds.num_classes == 1000


def test_imagenet_missing_manual_files(tmp_path):
  with pytest.raises(DataNotFoundError) as info:
    sources.load_dataset("imagenet2012", data_dir=str(tmp_path))
  message = str(info.value)
  assert "downloads/manual" in message.replace("\\", "/")
  assert "\n" not in message
