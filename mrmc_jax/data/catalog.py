"""Data set names: what a name means, what it needs, whether it can stream.

The one place that knows the names: the local sources (files on this
machine, numpy only), the `npz:`/`folder:`/`tfds:` prefixes and plain tfds
names. Callers (the runner, the loaders) ask here instead of parsing names.
"""

from __future__ import annotations

from typing import NamedTuple

from mrmc_jax.data import images as images_lib

# Sources read from local files or embedded data, without tfds.
LOCAL_NAMES = ("digits", "mnist5k", "fashion_mnist_idx", "mnist_idx")
# Prefixes that take a path (or a tfds name) after the colon.
PREFIXES = ("npz", "folder", "tfds")
INPUTS = ("memory", "stream")

# The names `load_dataset` accepts, for messages and docs.
DATASET_NAMES = (
    *LOCAL_NAMES, "npz:<path>", "folder:<path>", "tfds:<name>",
    "<tfds image-classification name: cifar10, cifar100, mnist, "
    "fashion_mnist, imagenet2012, ...>")


class Source(NamedTuple):
  """What a data set name refers to.

  Attributes:
    kind: a `LOCAL_NAMES` entry, "npz", "folder" or "tfds".
    arg: the path of `npz:`/`folder:`, the tfds name of a tfds set, or "".
  """
  kind: str
  arg: str


def parse_name(name: str) -> Source:
  """Splits a data set name into its kind and argument.

  `npz:<path>` and `folder:<path>` give the path ("" for a bare `npz` or
  `folder`, whose path is then the data_dir); `tfds:<name>` and any other
  name give kind "tfds" and the tfds name.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"name={name!r} is not allowed: use one of "
                     f"{', '.join(DATASET_NAMES)}.")
  if name in LOCAL_NAMES:
    return Source(name, "")
  kind, sep, arg = name.partition(":")
  if kind in ("npz", "folder"):
    return Source(kind, arg if sep else "")
  if kind == "tfds" and sep:
    return Source("tfds", arg)
  return Source("tfds", name)


def is_local(name: str) -> bool:
  """Whether the data comes from files or packages here, not tfds."""
  return parse_name(name).kind != "tfds"


def can_stream(name: str) -> bool:
  """Whether `input='stream'` applies: only tfds sets (prepared as
  ArrayRecord) are read by id from storage."""
  return parse_name(name).kind == "tfds"


def check_source(name: str, *, input: str = "memory",  # pylint: disable=redefined-builtin
                 image_size=None, prefix: str = "") -> None:
  """Checks a data request before any data is read (no TensorFlow).

  Args:
    name: a data set name (`DATASET_NAMES`).
    input: "memory" or "stream".
    image_size: None, a positive int or (H, W) positive ints.
    prefix: put before the argument names in messages (e.g. "dataset." to
      name config fields).

  Raises:
    ValueError: an unknown name (a tfds name is looked up in tfds's
      registry, which imports tensorflow_datasets but reads no data), an
      input the source cannot give, or a bad image size.
  """
  if input not in INPUTS:
    raise ValueError(f"{prefix}input={input!r} is not allowed: use one of "
                     f"{', '.join(INPUTS)}.")
  images_lib.check_image_size(image_size, f"{prefix}image_size")
  if not isinstance(name, str) or not name:
    raise ValueError(f"{prefix}name={name!r} is not allowed: use one of "
                     f"{', '.join(DATASET_NAMES)}.")
  source = parse_name(name)
  if source.kind in ("npz", "folder", "tfds") and name.partition(":")[1] and (
      not source.arg):
    raise ValueError(f"{prefix}name={name!r} is not allowed: give a "
                     f"{'tfds name' if source.kind == 'tfds' else 'path'} "
                     "after the colon.")
  if input == "stream" and not can_stream(name):
    raise ValueError(f"{prefix}input='stream' is not allowed for "
                     f"{prefix}name={name!r}: streaming reads a tfds data set "
                     "prepared as ArrayRecord.")
  if source.kind == "tfds" and not name.startswith("tfds:"):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if source.arg.split("/")[0].split(":")[0] not in tfds.list_builders():
      raise ValueError(
          f"{prefix}name={name!r} is not allowed: use one of "
          f"{', '.join(LOCAL_NAMES)}, npz:<path>, folder:<path>, "
          "tfds:<name>, or a tfds image-classification name (cifar10, "
          "cifar100, mnist, fashion_mnist, imagenet2012).")
