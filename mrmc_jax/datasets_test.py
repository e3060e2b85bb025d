"""Tests for mrmc_jax.datasets: real embedded data, file formats, tfds mocks."""

import gzip
import re
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mrmc_jax import datasets


def _write_idx(path, array, compress):
  # Header: two zero bytes, type code 0x08 (uint8), ndim, big-endian sizes.
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
      f">{array.ndim}I", *array.shape)
  data = header + array.astype(np.uint8).tobytes()
  if compress:
    data = gzip.compress(data)
  path.write_bytes(data)


def _write_png(path, image):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(tf.io.encode_png(image).numpy())


# --- Embedded real data ------------------------------------------------------


def test_digits_loads_real_data_with_stratified_holdout():
  ds = datasets.load_dataset("digits")
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
  a = datasets.load_dataset("digits")
  b = datasets.load_dataset("digits")
  np.testing.assert_array_equal(a.train.images, b.train.images)
  np.testing.assert_array_equal(a.train.labels, b.train.labels)
  np.testing.assert_array_equal(a.test.images, b.test.images)
  c = datasets.load_dataset("digits", split_seed=1)
  assert not np.array_equal(a.test.images, c.test.images)


def test_digits_without_holdout_keeps_all_rows():
  ds = datasets.load_dataset("digits", test_fraction=0.0)
  assert ds.test is None
  assert len(ds.train) == 1797
  np.testing.assert_array_equal(ds.train.ids, np.arange(1797))


def test_mnist5k_loads_real_data():
  ds = datasets.load_dataset("mnist5k")
  assert ds.image_shape == (28, 28, 1)
  assert ds.num_classes == 10
  np.testing.assert_array_equal(np.bincount(ds.train.labels), [400] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test.labels), [100] * 10)
  assert ds.train.images.max() == 255
  # Published MNIST statistics (0.1307, 0.3081), approximately.
  assert abs(ds.mean[0] - 0.13) < 0.01 and abs(ds.std[0] - 0.31) < 0.01


def test_splits_are_read_only():
  ds = datasets.load_dataset("digits")
  with pytest.raises(ValueError):
    ds.train.images[0, 0, 0, 0] = 1


# --- idx ---------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_raw_and_gzip(tmp_path, compress):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = tmp_path / "x-idx3-ubyte"
  _write_idx(path, images, compress)
  raw = path.read_bytes()
  if not compress:
    assert struct.unpack(">I", raw[:4])[0] == 2051 and len(raw) == 16 + 24
  np.testing.assert_array_equal(datasets.read_idx(path), images)
  labels = np.array([3, 1], np.uint8)
  _write_idx(tmp_path / "y", labels, compress)
  if not compress:
    assert struct.unpack(">I", (tmp_path / "y").read_bytes()[:4])[0] == 2049
  np.testing.assert_array_equal(datasets.read_idx(tmp_path / "y"), labels)


def test_read_idx_rejects_bad_files(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an idx file"):
    datasets.read_idx(tmp_path / "bad")
  _write_idx(tmp_path / "short", np.zeros((2, 2), np.uint8), False)
  (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
  with pytest.raises(ValueError, match="header says"):
    datasets.read_idx(tmp_path / "short")


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
  ds = datasets.load_dataset(name, data_dir=str(tmp_path))
  assert ds.image_shape == (4, 5, 1)
  np.testing.assert_array_equal(ds.train.images[..., 0], parts["train"][0])
  np.testing.assert_array_equal(ds.test.labels, parts["t10k"][1])
  assert ds.num_classes == 10 and len(ds.class_names) == 10


@pytest.mark.parametrize("name,how", [
    ("fashion_mnist_idx", "make data-fashion-mnist"),
    ("mnist_idx", "make data-mnist"),
])
def test_missing_files_say_how_to_get_them(tmp_path, name, how):
  with pytest.raises(datasets.DataNotFoundError) as info:
    datasets.load_dataset(name, data_dir=str(tmp_path))
  message = str(info.value)
  assert how in message and "\n" not in message
  assert isinstance(info.value, FileNotFoundError)


def test_unknown_name_lists_allowed_names():
  with pytest.raises(ValueError) as info:
    datasets.load_dataset("no_such_data_set")
  message = str(info.value)
  assert "\n" not in message
  for name in ("digits", "mnist5k", "fashion_mnist_idx", "npz:<path>",
               "cifar10"):
    assert name in message


# --- npz and folders ---------------------------------------------------------


def test_npz_with_test_split(tmp_path):
  rng = np.random.default_rng(0)
  x_train = rng.integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
  x_test = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
  path = tmp_path / "d.npz"
  np.savez(path, x_train=x_train, y_train=np.arange(10) % 4,
           x_test=x_test, y_test=np.arange(4))
  ds = datasets.load_dataset(f"npz:{path}")
  np.testing.assert_array_equal(ds.train.images, x_train)
  np.testing.assert_array_equal(ds.test.images, x_test)
  assert ds.num_classes == 4
  np.testing.assert_allclose(
      ds.mean, x_train.reshape(-1, 3).mean(0) / 255, rtol=1e-5)


def test_npz_images_labels_get_holdout_and_channel(tmp_path):
  path = tmp_path / "d.npz"
  np.savez(path, images=np.zeros((20, 5, 5), np.int64),
           labels=np.arange(20) % 2)
  ds = datasets.load_dataset("npz", data_dir=str(path), test_fraction=0.5)
  assert ds.image_shape == (5, 5, 1)
  assert len(ds.train) == len(ds.test) == 10
  np.savez(path, images=np.zeros((4, 5, 5), np.float32), labels=np.arange(4))
  with pytest.raises(ValueError, match="uint8"):
    datasets.load_dataset(f"npz:{path}")


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
  ds = datasets.load_dataset(f"folder:{tmp_path}", test_fraction=0.0)
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
    datasets.load_dataset("folder", data_dir=str(tmp_path), test_fraction=0.0)
  ds = datasets.load_dataset("folder", data_dir=str(tmp_path),
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
  ds = datasets.load_dataset(f"folder:{tmp_path}")
  np.testing.assert_array_equal(ds.test.labels, [1])
  np.testing.assert_array_equal(ds.test.images[0], 20)


def test_missing_folder_says_how_to_lay_it_out(tmp_path):
  with pytest.raises(datasets.DataNotFoundError, match="train/<class_name>"):
    datasets.load_dataset(f"folder:{tmp_path}")


# --- tfds --------------------------------------------------------------------


def test_tfds_cifar10_on_mock_data():
  with tfds.testing.mock_data(num_examples=20):
    a = datasets.load_dataset("cifar10")
    b = datasets.load_dataset("cifar10")
  assert a.image_shape == (32, 32, 3) and a.num_classes == 10
  assert len(a.train) == 20 and len(a.test) == 20
  assert a.mean.shape == (3,)
  np.testing.assert_array_equal(a.train.images, b.train.images)


def test_tfds_variable_size_needs_image_size():
  with tfds.testing.mock_data(num_examples=3):
    with pytest.raises(ValueError, match="tfds_stream"):
      datasets.load_dataset("imagenet2012")
    ds = datasets.load_dataset("imagenet2012", image_size=(8, 8))
  assert ds.image_shape == (8, 8, 3) and ds.num_classes == 1000


def test_imagenet_missing_manual_files(tmp_path):
  with pytest.raises(datasets.DataNotFoundError) as info:
    datasets.load_dataset("imagenet2012", data_dir=str(tmp_path))
  message = str(info.value)
  assert "downloads/manual" in message.replace("\\", "/")
  assert "\n" not in message


def _sliceable_mock(images, labels):
  """A tfds mock whose splits honour `name[start:stop]` slicing."""

  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, decoders, read_config, kwargs
    match = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", split)
    start = int(match.group(2) or 0)
    stop = int(match.group(3) or len(labels))
    return tf.data.Dataset.from_tensor_slices({
        "image": images[start:stop], "label": labels[start:stop]})

  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_stream_ids_match_in_memory_rows_and_slice_per_process():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 11).astype(np.int64)
  with _sliceable_mock(images, labels):
    in_memory = datasets.load_dataset("cifar10")
    seen = []
    for p in range(3):
      for ex in datasets.tfds_stream("cifar10", "train", process_index=p,
                                     process_count=3).as_numpy_iterator():
        np.testing.assert_array_equal(ex["image"],
                                      in_memory.train.images[ex["id"]])
        assert ex["label"] == in_memory.train.labels[ex["id"]]
        seen.append((p, int(ex["id"])))
  # Contiguous, in order, first processes take the extra examples.
  assert seen == [(p, i) for p, (a, b) in enumerate(
      datasets.process_slice(11, p, 3) for p in range(3)) for i in range(a, b)]


# --- Helpers -----------------------------------------------------------------


def test_process_slice_tiles_evenly():
  ranges = [datasets.process_slice(10, p, 4) for p in range(4)]
  assert ranges == [(0, 3), (3, 6), (6, 8), (8, 10)]
  assert datasets.process_slice(2, 3, 4) == (2, 2)
  with pytest.raises(ValueError):
    datasets.process_slice(10, 4, 4)


def test_array_split_slice_keeps_global_ids():
  split = datasets.ArraySplit(np.zeros((10, 2, 2, 1), np.uint8),
                              np.arange(10))
  part = split.slice(*datasets.process_slice(10, 1, 2))
  np.testing.assert_array_equal(part.ids, np.arange(5, 10))
  np.testing.assert_array_equal(part.rows([5, 9]), [0, 4])
  with pytest.raises(ValueError, match="ids must lie in"):
    part.rows([4])


def test_array_split_validates():
  with pytest.raises(ValueError, match="uint8"):
    datasets.ArraySplit(np.zeros((2, 2, 2, 1), np.float32), np.zeros(2))
  with pytest.raises(ValueError, match="labels must be"):
    datasets.ArraySplit(np.zeros((2, 2, 2, 1), np.uint8), np.zeros(3, int))


def test_stratified_holdout():
  labels = np.array([0] * 10 + [1] * 5)
  train, test = datasets.stratified_holdout(labels, 0.2, seed=0)
  assert np.bincount(labels[test]).tolist() == [2, 1]
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(15))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_compute_mean_std():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 3, 4, 2), dtype=np.uint8)
  mean, std = datasets.compute_mean_std(images)
  np.testing.assert_allclose(mean, images.reshape(-1, 2).mean(0) / 255,
                             rtol=1e-6)
  np.testing.assert_allclose(std, images.reshape(-1, 2).std(0) / 255,
                             rtol=1e-5)
  _, std = datasets.compute_mean_std(np.zeros((2, 2, 2, 1), np.uint8))
  assert std[0] == pytest.approx(1 / 255)


def test_validation_split_is_stratified_and_replaces_test():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (100, 2, 2, 1), dtype=np.uint8)
  labels = np.repeat(np.arange(4), 25)
  split = datasets.ArraySplit(images, labels)
  mean, std = datasets.compute_mean_std(images)
  data = datasets.Dataset(name="t", train=split,
                          test=datasets.ArraySplit(images[:3], labels[:3]),
                          num_classes=4, mean=mean, std=std)
  out = datasets.validation_split(data, 0.2, seed=1)
  assert len(out.train.labels) == 80 and len(out.test.labels) == 20
  np.testing.assert_array_equal(np.bincount(out.test.labels), [5] * 4)
  # Disjoint rows that together are the train split.
  rows = {im.tobytes() for im in out.train.images} | {
      im.tobytes() for im in out.test.images}
  assert len(rows) == len({im.tobytes() for im in images})
  np.testing.assert_allclose(out.mean,
                             datasets.compute_mean_std(out.train.images)[0])
  again = datasets.validation_split(data, 0.2, seed=1)
  np.testing.assert_array_equal(again.test.images, out.test.images)
  with pytest.raises(ValueError, match="fraction=0.0 is not allowed"):
    datasets.validation_split(data, 0.0, seed=1)
