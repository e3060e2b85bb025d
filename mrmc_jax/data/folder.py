"""Image folders: `root/train/<class>/*` (+ a labelled test split), decoded.

The layout of Tiny-ImageNet and of most user data: one folder per class under
`train/`, and optionally `test/`, `val/` or `validation/` with the same class
folders (or Tiny-ImageNet's `val/val_annotations.txt`). Files are read in
sorted path order, so ids do not depend on the file system's listing order.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from mrmc_jax.data import images as images_lib
from mrmc_jax.data.errors import DataNotFoundError

_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
_Arrays = tuple[np.ndarray, np.ndarray]



def _image_files(directory: pathlib.Path) -> list[pathlib.Path]:
  # Recursive, so Tiny-ImageNet's train/<wnid>/images/*.JPEG is found; sorted
  # by path so the ids do not depend on the file system's listing order.
  return sorted(p for p in directory.rglob("*")
                if p.suffix.lower() in _IMAGE_EXTENSIONS and
                not p.name.startswith(".") and p.is_file())


def load_folder(root, image_size: tuple[int, int] | None
                ) -> tuple[_Arrays, _Arrays | None, tuple[str, ...]]:
  """Decodes an image folder.

  Args:
    root: the folder holding `train/<class>/`.
    image_size: (H, W) to resize to, or None (all images must then agree).

  Returns:
    (train, test, class_names): train and test as (uint8 [N, H, W, C],
    int32 [N]); test is None without a labelled test folder; class names in
    label order (sorted folder names).
  """
  root = pathlib.Path(root)
  train_dir = root / "train"
  if not train_dir.is_dir():
    raise DataNotFoundError(
        f"{train_dir} not found; lay images out as <root>/train/<class_name>/"
        f"*.png|jpg (+ optional <root>/test/<class_name>/)")
  class_names = tuple(sorted(d.name for d in train_dir.iterdir()
                             if d.is_dir() and not d.name.startswith(".")))
  if not class_names:
    raise ValueError(f"{train_dir} holds no class folders")
  index = {c: i for i, c in enumerate(class_names)}
  files, labels, empty = [], [], []
  for c in class_names:
    found = _image_files(train_dir / c)
    files += found
    labels += [index[c]] * len(found)
    if not found:
      empty.append(c)
  if not files:
    raise ValueError(f"{train_dir} holds no .png/.jpg/.jpeg/.bmp/.gif images")
  if empty:
    # A class without train images can never be predicted; an empty folder
    # is a mistake in the layout.
    raise ValueError(f"{train_dir}: {len(empty)} of {len(class_names)} class "
                     f"folders hold no images (e.g. {empty[:3]}); remove "
                     "them.")
  train = (_decode_images(files, image_size), np.asarray(labels, np.int32))

  test = None
  test_files = _labelled_test_files(root, index)
  if test_files is not None:
    files, labels = test_files
    test = (_decode_images(files, image_size), np.asarray(labels, np.int32))
  return train, test, class_names


def _labelled_test_files(root: pathlib.Path, index: dict[str, int]):
  """Files and labels of the first labelled test folder, or None."""
  for name in ("test", "val", "validation"):
    directory = root / name
    if not directory.is_dir():
      continue
    annotations = directory / "val_annotations.txt"
    if annotations.is_file():
      # Tiny-ImageNet's val/: images/<file> listed with their class (wnid).
      wnid_of = {}
      for line in annotations.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
          wnid_of[fields[0]] = fields[1]
      files = [p for p in _image_files(directory) if p.name in wnid_of]
      unknown = {wnid_of[p.name] for p in files} - index.keys()
      if unknown:
        raise ValueError(f"{annotations} names classes not in train/: "
                         f"{sorted(unknown)[:5]}")
      return files, [index[wnid_of[p.name]] for p in files]
    subdirs = sorted(d.name for d in directory.iterdir()
                     if d.is_dir() and not d.name.startswith("."))
    known = [d for d in subdirs if d in index]
    if not known:
      continue  # unlabelled, e.g. Tiny-ImageNet's test/images
    if len(known) != len(subdirs):
      raise ValueError(f"{directory} has class folders not in train/: "
                       f"{sorted(set(subdirs) - set(known))[:5]}")
    files, labels = [], []
    for c in subdirs:
      found = _image_files(directory / c)
      files += found
      labels += [index[c]] * len(found)
    return files, labels
  return None


def _decode_images(files: Sequence[pathlib.Path],
                   image_size: tuple[int, int] | None) -> np.ndarray:
  """Decodes image files to uint8 [N, H, W, C] in the order given."""
  tf = images_lib.import_tf()

  def decode(path):
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    if image_size is not None:
      image = images_lib.tf_resize(tf, image, image_size)
    return image

  ds = tf.data.Dataset.from_tensor_slices([os.fspath(p) for p in files])
  # deterministic=True: parallel decoding must not reorder, the ids depend on
  # the order.
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  try:
    images = list(ds.as_numpy_iterator())
  except tf.errors.OpError:
    # Find the file that failed to decode, to name it.
    for path in files:
      try:
        decode(os.fspath(path))
      except tf.errors.OpError as e:
        raise ValueError(f"{path}: cannot decode the image "
                         f"({e.message.splitlines()[0][:120]})") from None
    raise
  # Files may mix grayscale, RGB and alpha (Tiny-ImageNet has grayscale
  # JPEGs): drop alpha and make everything RGB unless all are grayscale.
  channels = 3 if any(x.shape[-1] >= 3 for x in images) else 1
  for i, x in enumerate(images):
    if x.shape[-1] in (2, 4):
      x = x[..., :-1]
    if x.shape[-1] != channels:
      x = np.repeat(x, channels, axis=-1)
    images[i] = x
  shapes = sorted({x.shape for x in images})
  if len(shapes) > 1:
    raise ValueError(f"images differ in size ({shapes[:3]}...); pass "
                     f"image_size=(H, W) to resize them")
  return np.stack(images)


