"""Tests for mrmc_jax.data.augment through the pipeline: ImageNet crops."""

import numpy as np
import pytest
import tensorflow as tf

from mrmc_jax.data import pipeline
from mrmc_jax.data import splits
from mrmc_jax.data import stream

N, H, W = 10, 48, 64


def _photos():
  """Smooth colour gradients (JPEG-friendly), one per id."""
  y, x = np.mgrid[0:H, 0:W]
  images = [np.stack([(x * 4 + 20 * i) % 256, (y * 5 + 7 * i) % 256,
                      ((x + y) * 2 + 3 * i) % 256], -1) for i in range(N)]
  return np.asarray(images, np.uint8), np.arange(N) % 2


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
  path = tmp_path_factory.mktemp("jpeg")
  images, labels = _photos()
  stream.write_arrays("photos", path, {"train": (images, labels)},
                      image_shape=(None, None, 3), num_classes=2,
                      encoding_format="jpeg")
  streamed = stream.open_dataset("photos", path, image_size=(H, W))
  # The same pixels in memory: the records decoded whole.
  encoded = streamed.train.read_encoded(tf.range(N, dtype=tf.int64))
  decoded = np.stack([tf.io.decode_jpeg(e).numpy() for e in encoded])
  return streamed.train, splits.ArraySplit(decoded, labels)


def _images(ds):
  return np.concatenate([b["image"][b["mask"]] for b in
                         ds.as_numpy_iterator()]), np.concatenate(
                             [b["id"][b["mask"]] for b in
                              ds.as_numpy_iterator()])


def _train(split, batch=4, epoch=0, crop="inception"):
  return pipeline.train_dataset(split, batch_size=batch, seed=3, epoch=epoch,
                                augment=True, mean=0.5, std=0.25, crop=crop)


def _assert_near(got, want):
  # libjpeg upsamples chroma at the window's edge from fewer neighbours when
  # it decodes only the window: a few values differ by a few levels.
  levels = np.abs(got - want) * 0.25 * 255  # std 0.25
  assert levels.max() <= 4 and np.mean(levels > 0.5) < 0.02, (
      levels.max(), np.mean(levels > 0.5))


def test_jpeg_window_decode_matches_the_crop_of_the_decoded_image(jpegs):
  streamed, memory = jpegs
  got, got_ids = _images(_train(streamed))
  want, want_ids = _images(_train(memory))
  np.testing.assert_array_equal(got_ids, want_ids)
  _assert_near(got, want)
  got, _ = _images(pipeline.eval_dataset(streamed, batch_size=4, mean=0.5,
                                         std=0.25, crop="center"))
  want, _ = _images(pipeline.eval_dataset(memory, batch_size=4, mean=0.5,
                                          std=0.25, crop="center"))
  _assert_near(got, want)


def test_crops_are_keyed_by_example_and_epoch(jpegs):
  _, memory = jpegs

  def by_id(ds):
    images, ids = _images(ds)
    return images[np.argsort(ids)]

  a = by_id(_train(memory, batch=2))
  np.testing.assert_array_equal(a, by_id(_train(memory, batch=4)))
  assert not np.array_equal(a, by_id(_train(memory, epoch=1)))
  # Random-resized crops differ from the plain image, and between examples'
  # windows; the output keeps the split's size.
  plain = by_id(_train(memory, crop="pad"))
  assert a.shape == plain.shape == (N, H, W, 3)
  assert not np.array_equal(a, plain)


def test_center_crop_is_the_middle_resized():
  # A 128 x 128 image: "auto" picks the ImageNet crops at this size.
  image = np.zeros((1, 128, 128, 1), np.uint8)
  image[0, 8:120, 8:120] = 255  # the centre 112 = 0.875 * 128 px
  split = splits.ArraySplit(image, np.zeros(1, int))
  batch = next(pipeline.eval_dataset(split, batch_size=1, mean=0.0,
                                     std=1 / 255).as_numpy_iterator())
  np.testing.assert_allclose(batch["image"], 255.0)
  none = next(pipeline.eval_dataset(split, batch_size=1, mean=0.0,
                                    std=1 / 255, crop="none"
                                    ).as_numpy_iterator())
  assert none["image"].min() == 0.0


def test_auto_picks_inception_at_128_px_and_pad_below():
  rng = np.random.default_rng(0)
  big = splits.ArraySplit(rng.integers(0, 256, (2, 128, 128, 1), np.uint8),
                          np.zeros(2, int))
  small = splits.ArraySplit(rng.integers(0, 256, (2, 32, 32, 1), np.uint8),
                            np.zeros(2, int))
  for split, kind in ((big, "inception"), (small, "pad")):
    auto, _ = _images(_train(split, crop="auto"))
    want, _ = _images(_train(split, crop=kind))
    np.testing.assert_array_equal(auto, want)
  with pytest.raises(ValueError, match="crop='random' is not allowed"):
    _train(small, crop="random")
  with pytest.raises(ValueError, match="crop='inception' is not allowed"):
    pipeline.eval_dataset(small, batch_size=2, mean=0.0, std=1.0,
                          crop="inception")
