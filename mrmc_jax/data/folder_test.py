"""Tests for mrmc_jax.data.folder: image folders through `load_dataset`."""

import numpy as np
import pytest
import tensorflow as tf

from mrmc_jax.data import sources
from mrmc_jax.data.errors import DataNotFoundError


def _write_png(path, image):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(tf.io.encode_png(image).numpy())


def test_folder_classes_sorted_files_sorted(tmp_path):
  def image(v):
    return np.full((6, 7, 3), v, np.uint8)

  # Written out of order: ids must follow class name, then path.
  _write_png(tmp_path / "train" / "dog" / "b.png", image(4))
  _write_png(tmp_path / "train" / "dog" / "a.png", image(3))
  _write_png(tmp_path / "train" / "cat" / "z.png", image(2))
  _write_png(tmp_path / "train" / "cat" / "sub" / "a.png", image(1))
  _write_png(tmp_path / "test" / "dog" / "x.png", image(9))
  (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
  ds = sources.load_dataset(f"folder:{tmp_path}", test_fraction=0.0)
  assert ds.class_names == ("cat", "dog")
  np.testing.assert_array_equal(ds.train.images[:, 0, 0, 0], [1, 2, 3, 4])
  np.testing.assert_array_equal(ds.train.labels, [0, 0, 1, 1])
  np.testing.assert_array_equal(ds.test.labels, [1])
  assert ds.image_shape == (6, 7, 3)


def test_folder_mixed_sizes_and_channels(tmp_path):
  _write_png(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4, 1), np.uint8))
  _write_png(tmp_path / "train" / "b" / "0.png",
             np.full((8, 8, 3), 200, np.uint8))
  with pytest.raises(ValueError, match="image_size"):
    sources.load_dataset("folder", data_dir=str(tmp_path), test_fraction=0.0)
  ds = sources.load_dataset("folder", data_dir=str(tmp_path),
                             test_fraction=0.0, image_size=(4, 4))
  # The grayscale image is made RGB to match the other.
  assert ds.image_shape == (4, 4, 3)
  np.testing.assert_array_equal(ds.train.images[1], 200)


def test_folder_tiny_imagenet_layout(tmp_path):
  for wnid, v in (("n01", 10), ("n02", 20)):
    _write_png(tmp_path / "train" / wnid / "images" / f"{wnid}_0.png",
               np.full((4, 4, 3), v, np.uint8))
  _write_png(tmp_path / "val" / "images" / "val_0.png",
             np.full((4, 4, 3), 20, np.uint8))
  (tmp_path / "val" / "val_annotations.txt").write_text(
      "val_0.png\tn02\t0\t0\t3\t3\n")
  # Unlabelled test images are skipped in favour of the labelled val/.
  _write_png(tmp_path / "test" / "images" / "test_0.png",
             np.zeros((4, 4, 3), np.uint8))
  ds = sources.load_dataset(f"folder:{tmp_path}")
  np.testing.assert_array_equal(ds.test.labels, [1])
  np.testing.assert_array_equal(ds.test.images[0], 20)


def test_missing_folder_says_how_to_lay_it_out(tmp_path):
  with pytest.raises(DataNotFoundError, match="train/<class_name>"):
    sources.load_dataset(f"folder:{tmp_path}")


def test_empty_class_folder_is_refused(tmp_path):
  _write_png(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4, 1), np.uint8))
  (tmp_path / "train" / "b").mkdir()
  with pytest.raises(ValueError, match=r"1 of 2 class folders hold no "
                     r"images \(e.g. \['b'\]\)"):
    sources.load_dataset(f"folder:{tmp_path}", test_fraction=0.0)
