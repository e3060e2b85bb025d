"""ImageNet-style crops: random-resized (Inception) for training, center for eval.

The 224-px recipes train on a random crop of 8%-100% of the image area with
an aspect ratio in [3/4, 4/3], resized to the output size and flipped at
random, and evaluate on a center crop of 87.5% of the shorter side, resized
to the output size. On JPEG records (`stream.StreamSplit.read_encoded`) only
the crop window is decoded (`tf.image.decode_and_crop_jpeg`): the rest of the
image is never decompressed. Other encodings (PNG) are decoded whole, then
cropped. On arrays (`ArraySplit`) the same windows are cut from the stored
images.

Determinism: the window of an example is drawn by
`tf.image.stateless_sample_distorted_bounding_box` from a seed that is a
counter-based hash of (seed, epoch, id) (`crop_seeds`), and the flip is
`pipeline.augment_params`'s, so an example's crop does not depend on its
batch, position, process or tf.data parallelism; for the same source pixels
a JPEG record and an array give the same crop.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Random-resized crop: the area and aspect-ratio ranges of the Inception
# recipe (and of torchvision's RandomResizedCrop), tf.image's sampler.
AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
MAX_ATTEMPTS = 10
# Evaluation keeps this fraction of the shorter side (224 of 256).
CENTER_FRACTION = 0.875
# "auto" crops: images at least this size on both sides get the ImageNet
# crops; smaller ones (CIFAR, Tiny-ImageNet) the pad-and-crop.
MIN_INCEPTION_SIZE = 128

_SALT = np.uint64(0xC2B2AE3D27D4EB4F)


def crop_seeds(hashes: np.ndarray) -> np.ndarray:
  """Stateless-op seeds from per-example uint64 hashes.

  Args:
    hashes: uint64 [K], a counter-based hash of (seed, epoch, id).

  Returns:
    int32 [K, 2], the two 32-bit halves of the salted hash.
  """
  h = np.asarray(hashes, np.uint64) ^ _SALT
  return np.stack([(h >> np.uint64(32)).astype(np.uint32).view(np.int32),
                   (h & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(
                       np.int32)], axis=-1)


def _window(shape, seed):
  """[y, x, h, w] int32 of a random-resized crop of an image of `shape`."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=0.1, aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=AREA_RANGE, max_attempts=MAX_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def _center_window(shape):
  """[y, x, h, w] int32: the centered square of CENTER_FRACTION of the
  shorter side."""
  h, w = shape[0], shape[1]
  side = tf.cast(tf.round(CENTER_FRACTION * tf.cast(tf.minimum(h, w),
                                                    tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(h - side) // 2, (w - side) // 2, side, side])


def _finish(image, out_size, flip):
  """Resize to `out_size` (bilinear, as the Inception recipe), round, flip."""
  x = tf.image.resize(image, out_size, method="bilinear")
  x = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
  return tf.cond(flip, lambda: tf.reverse(x, [1]), lambda: x)


def _encoded_shape(encoded, channels: int):
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.image.extract_jpeg_shape(encoded),
      lambda: tf.shape(tf.io.decode_image(encoded, channels=channels,
                                          expand_animations=False)))


def _decode_window(encoded, window, channels: int):
  def jpeg():
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)

  def other():
    x = tf.io.decode_image(encoded, channels=channels,
                           expand_animations=False)
    return x[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def crop_arrays(images, seeds, flips, *, train: bool):
  """Crops of a uint8 batch, resized back to its own size.

  Args:
    images: uint8 [B, H, W, C].
    seeds: int32 [B, 2] (`crop_seeds`); unused when not `train`.
    flips: bool [B]; unused when not `train`.
    train: random-resized crops and flips, else center crops.

  Returns:
    uint8 [B, H, W, C].
  """
  out_size = images.shape[1:3]

  def one(args):
    x, seed, flip = args
    shape = tf.shape(x)
    win = _window(shape, seed) if train else _center_window(shape)
    x = x[win[0]:win[0] + win[2], win[1]:win[1] + win[3]]
    return _finish(x, out_size, flip if train else tf.constant(False))

  return tf.map_fn(one, (images, seeds, flips),
                   fn_output_signature=tf.TensorSpec(images.shape[1:],
                                                     tf.uint8))


def crop_encoded(encoded, seeds, flips, *, out_shape, train: bool):
  """Decoded crops of encoded images (JPEG: only the window is decoded).

  Args:
    encoded: string [B], encoded images of any sizes.
    seeds: int32 [B, 2]; unused when not `train`.
    flips: bool [B]; unused when not `train`.
    out_shape: (H, W, C) of the output.
    train: random-resized crops and flips, else center crops.

  Returns:
    uint8 [B, H, W, C].
  """
  h, w, c = out_shape

  def one(args):
    data, seed, flip = args
    shape = _encoded_shape(data, c)
    win = _window(shape, seed) if train else _center_window(shape)
    x = _decode_window(data, win, c)
    return _finish(x, (h, w), flip if train else tf.constant(False))

  return tf.map_fn(one, (encoded, seeds, flips),
                   fn_output_signature=tf.TensorSpec((h, w, c), tf.uint8))
