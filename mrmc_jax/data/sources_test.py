"""Tests for mrmc_jax.data.sources: embedded real data, idx and npz files."""

import gzip
import struct

import numpy as np
import pytest

from mrmc_jax.data import sources
from mrmc_jax.data.errors import DataNotFoundError


def _write_idx(path, array, compress):
  # Header: two zero bytes, type code 0x08 (uint8), ndim, big-endian sizes.
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
      f">{array.ndim}I", *array.shape)
  data = header + array.astype(np.uint8).tobytes()
  if compress:
    data = gzip.compress(data)
  path.write_bytes(data)


# --- Embedded real data ------------------------------------------------------


def test_digits_loads_real_data_with_stratified_holdout():
  ds = sources.load_dataset("digits")
  assert ds.num_classes == 10
  assert ds.image_shape == (8, 8, 1)
  assert len(ds.train) + len(ds.test) == 1797
  assert ds.train.images.dtype == np.uint8
  assert ds.train.labels.dtype == np.int32
  assert ds.train.images.min() == 0 and ds.train.images.max() == 255
  # 0..16 scaled by round(v * 255 / 16): only these 17 values occur.
  allowed = {(v * 255 + 8) // 16 for v in range(17)}
  assert set(np.unique(ds.train.images)) <= allowed
  # Stratified: every class gives round(20%) of its rows.
  total = np.bincount(ds.train.labels, minlength=10) + np.bincount(
      ds.test.labels, minlength=10)
  np.testing.assert_array_equal(np.bincount(ds.test.labels, minlength=10),
                                np.round(total * 0.2).astype(int))
  assert ds.mean.shape == (1,) and ds.std.shape == (1,)
  assert ds.mean.dtype == np.float32
  np.testing.assert_allclose(ds.mean, ds.train.images.mean() / 255, rtol=1e-5)
  np.testing.assert_allclose(ds.std, ds.train.images.std() / 255, rtol=1e-5)


def test_digits_ids_are_deterministic_and_seeded():
  a = sources.load_dataset("digits")
  b = sources.load_dataset("digits")
  np.testing.assert_array_equal(a.train.images, b.train.images)
  np.testing.assert_array_equal(a.train.labels, b.train.labels)
  np.testing.assert_array_equal(a.test.images, b.test.images)
  c = sources.load_dataset("digits", split_seed=1)
  assert not np.array_equal(a.test.images, c.test.images)


def test_digits_without_holdout_keeps_all_rows():
  ds = sources.load_dataset("digits", test_fraction=0.0)
  assert ds.test is None
  assert len(ds.train) == 1797
  np.testing.assert_array_equal(ds.train.ids, np.arange(1797))


def test_mnist5k_loads_real_data():
  ds = sources.load_dataset("mnist5k")
  assert ds.image_shape == (28, 28, 1)
  assert ds.num_classes == 10
  np.testing.assert_array_equal(np.bincount(ds.train.labels), [400] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test.labels), [100] * 10)
  assert ds.train.images.max() == 255
  # Published MNIST statistics (0.1307, 0.3081), approximately.
  assert abs(ds.mean[0] - 0.13) < 0.01 and abs(ds.std[0] - 0.31) < 0.01


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_raw_and_gzip(tmp_path, compress):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = tmp_path / "x-idx3-ubyte"
  _write_idx(path, images, compress)
  raw = path.read_bytes()
  if not compress:
    assert struct.unpack(">I", raw[:4])[0] == 2051 and len(raw) == 16 + 24
  np.testing.assert_array_equal(sources.read_idx(path), images)
  labels = np.array([3, 1], np.uint8)
  _write_idx(tmp_path / "y", labels, compress)
  if not compress:
    assert struct.unpack(">I", (tmp_path / "y").read_bytes()[:4])[0] == 2049
  np.testing.assert_array_equal(sources.read_idx(tmp_path / "y"), labels)


def test_read_idx_rejects_bad_files(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an idx file"):
    sources.read_idx(tmp_path / "bad")
  _write_idx(tmp_path / "short", np.zeros((2, 2), np.uint8), False)
  (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
  with pytest.raises(ValueError, match="header says"):
    sources.read_idx(tmp_path / "short")


@pytest.mark.parametrize("name,compress", [("mnist_idx", False),
                                           ("fashion_mnist_idx", True)])
def test_idx_folder_loads(tmp_path, name, compress):
  rng = np.random.default_rng(0)
  parts = {}
  for prefix, n in (("train", 12), ("t10k", 5)):
    images = rng.integers(0, 256, (n, 4, 5), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images,
               compress)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels,
               compress)
    parts[prefix] = (images, labels)
  ds = sources.load_dataset(name, data_dir=str(tmp_path))
  assert ds.image_shape == (4, 5, 1)
  np.testing.assert_array_equal(ds.train.images[..., 0], parts["train"][0])
  np.testing.assert_array_equal(ds.test.labels, parts["t10k"][1])
  assert ds.num_classes == 10 and len(ds.class_names) == 10


@pytest.mark.parametrize("name,how", [
    ("fashion_mnist_idx", "make data-fashion-mnist"),
    ("mnist_idx", "make data-mnist"),
])
def test_missing_files_say_how_to_get_them(tmp_path, name, how):
  with pytest.raises(DataNotFoundError) as info:
    sources.load_dataset(name, data_dir=str(tmp_path))
  message = str(info.value)
  assert how in message and "\n" not in message
  assert isinstance(info.value, FileNotFoundError)


def test_unknown_name_lists_allowed_names():
  with pytest.raises(ValueError) as info:
    sources.load_dataset("no_such_data_set")
  message = str(info.value)
  assert "\n" not in message
  for name in ("digits", "mnist5k", "fashion_mnist_idx", "npz:<path>",
               "cifar10"):
    assert name in message


def test_npz_with_test_split(tmp_path):
  rng = np.random.default_rng(0)
  x_train = rng.integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
  x_test = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
  path = tmp_path / "d.npz"
  np.savez(path, x_train=x_train, y_train=np.arange(10) % 4,
           x_test=x_test, y_test=np.arange(4))
  ds = sources.load_dataset(f"npz:{path}")
  np.testing.assert_array_equal(ds.train.images, x_train)
  np.testing.assert_array_equal(ds.test.images, x_test)
  assert ds.num_classes == 4
  np.testing.assert_allclose(
      ds.mean, x_train.reshape(-1, 3).mean(0) / 255, rtol=1e-5)


def test_npz_images_labels_get_holdout_and_channel(tmp_path):
  path = tmp_path / "d.npz"
  np.savez(path, images=np.zeros((20, 5, 5), np.int64),
           labels=np.arange(20) % 2)
  ds = sources.load_dataset("npz", data_dir=str(path), test_fraction=0.5)
  assert ds.image_shape == (5, 5, 1)
  assert len(ds.train) == len(ds.test) == 10
  np.savez(path, images=np.zeros((4, 5, 5), np.float32), labels=np.arange(4))
  with pytest.raises(ValueError, match="uint8"):
    sources.load_dataset(f"npz:{path}")


@pytest.mark.parametrize("arrays,match", [
    ({"x_train": np.uint8(3), "y_train": np.int64(1)},
     r"x_train has dtype uint8 and shape \(\); images must be"),
    ({"x_train": np.zeros((4, 0, 0), np.uint8), "y_train": np.zeros(4, int)},
     r"x_train has dtype uint8 and shape \(4, 0, 0\); every image needs"),
    ({"x_train": np.zeros((4, 2, 2), np.float32),
      "y_train": np.zeros(4, int)},
     r"x_train has dtype float32 and shape \(4, 2, 2\); images must hold "
     "uint8"),
    ({"x_train": np.zeros((4, 2, 2), np.uint8),
      "y_train": np.array(["a", "b", "c", "d"])},
     r"y_train has dtype <U1 and shape \(4,\); labels must be integer"),
    ({"x_train": np.zeros((4, 2, 2), np.uint8),
      "y_train": np.zeros((4, 2), int)},
     r"y_train has dtype int64 and shape \(4, 2\); labels must be \[N\]"),
])
def test_npz_bad_arrays_name_file_key_and_shape(tmp_path, arrays, match):
  path = tmp_path / "d.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=match) as info:
    sources.load_dataset(f"npz:{path}")
  assert str(info.value).startswith(str(path)) and "\n" not in str(
      info.value)


def test_npz_absurd_label_and_absent_test_classes(tmp_path):
  images = np.zeros((41, 2, 2), np.uint8)
  labels = np.r_[np.arange(10).repeat(4), 100_000]
  path = tmp_path / "big.npz"
  np.savez(path, x_train=images, y_train=labels)
  with pytest.raises(ValueError, match=r"100001 classes .* 11 distinct"):
    sources.load_dataset(f"npz:{path}")
  path = tmp_path / "absent.npz"
  np.savez(path, x_train=images[:8], y_train=np.arange(8) % 2,
           x_test=images[:3], y_test=np.array([5, 5, 0]))
  with pytest.raises(ValueError, match="2 of 3 test examples have classes "
                     "absent from the train split"):
    sources.load_dataset(f"npz:{path}")


@pytest.mark.parametrize("size", [0, -3, (8, 0), (8,), 2.5, True])
def test_bad_image_size_is_refused_before_reading(size):
  with pytest.raises(ValueError, match="image_size=.* is not allowed"):
    sources.load_dataset("no_such_file_is_read", image_size=size)
