"""TensorFlow image helpers shared by the sources: import, resize, size check.

TensorFlow is imported only when a source needs it (folders, tfds, resizing),
so the numpy-only sources load without it.
"""

from __future__ import annotations

import numbers

import numpy as np


def import_tf():
  """TensorFlow, with its accelerators hidden (it only feeds data)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    # Accelerator memory belongs to JAX.
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # TF already initialised its devices; the caller hid them then.
  return tf


def import_tfds():
  """tensorflow_datasets, after `import_tf`."""
  import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def check_image_size(image_size, name: str = "image_size"
                     ) -> tuple[int, int] | None:
  """Checks a resize target before TensorFlow sees it.

  Args:
    image_size: None (no resizing), one positive int (square) or (H, W)
      positive ints.
    name: how the caller calls the argument, for the message.

  Returns:
    (H, W) or None.

  Raises:
    ValueError: anything else, naming the value.
  """
  if image_size is None:
    return None
  sizes = (image_size, image_size) if isinstance(
      image_size, numbers.Integral) else image_size
  try:
    sizes = tuple(sizes)
  except TypeError:
    sizes = ()
  if (len(sizes) != 2 or any(isinstance(s, bool) or not isinstance(
      s, numbers.Integral) or s <= 0 for s in sizes)):
    raise ValueError(f"{name}={image_size!r} is not allowed: it must be a "
                     "positive int (pixels per side), (height, width) of "
                     "positive ints, or None (no resizing).")
  return int(sizes[0]), int(sizes[1])


def tf_resize(tf, image, image_size: tuple[int, int]):
  """Bilinear, antialiased resize of uint8 [..., H, W, C] back to uint8."""
  resized = tf.image.resize(image, image_size, method="bilinear",
                            antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def resize_arrays(arrays: tuple[np.ndarray, np.ndarray],
                  image_size: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, H, W, C], labels) resized to `image_size` (H', W')."""
  images, labels = arrays
  if tuple(images.shape[1:3]) == tuple(image_size):
    return arrays
  tf = import_tf()
  chunk = max(1, (1 << 22) // int(np.prod(images.shape[1:])))
  resized = [tf_resize(tf, images[i:i + chunk], image_size).numpy()
             for i in range(0, len(images), chunk)]
  return np.concatenate(resized), labels
