"""Tests for mrmc_jax.data.catalog: names, what they need, early checks."""

import pytest

from mrmc_jax.data import catalog
from mrmc_jax.data import images


def test_parse_name():
  assert catalog.parse_name("digits") == ("digits", "")
  assert catalog.parse_name("npz:/d/x.npz") == ("npz", "/d/x.npz")
  assert catalog.parse_name("folder") == ("folder", "")
  assert catalog.parse_name("tfds:cifar10") == ("tfds", "cifar10")
  assert catalog.parse_name("imagenet2012") == ("tfds", "imagenet2012")
  assert catalog.is_local("mnist_idx") and catalog.is_local("npz:x")
  assert not catalog.is_local("cifar10")
  assert catalog.can_stream("tfds:x") and not catalog.can_stream("digits")


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="digits", input="disk"), r"dataset.input='disk' is not"),
    (dict(name="digits", input="stream"),
     r"dataset.input='stream' is not allowed for dataset.name='digits'"),
    (dict(name="npz:x", input="stream"), "streaming reads a tfds"),
    (dict(name="npz:"), r"dataset.name='npz:' is not allowed: give a path"),
    (dict(name="no_such_set"), r"dataset.name='no_such_set' is not allowed"),
    (dict(name="digits", image_size=0),
     r"dataset.image_size=0 is not allowed: it must be a positive int"),
])
def test_check_source_refuses_in_one_line(kwargs, match):
  with pytest.raises(ValueError, match=match) as info:
    catalog.check_source(**kwargs, prefix="dataset.")
  assert "\n" not in str(info.value)


def test_check_source_accepts():
  catalog.check_source("digits", image_size=32)
  catalog.check_source("tfds:anything", input="stream")
  catalog.check_source("cifar10", image_size=(24, 32))


def test_check_image_size():
  assert images.check_image_size(None) is None
  assert images.check_image_size(8) == (8, 8)
  assert images.check_image_size((4, 6)) == (4, 6)
  for bad in (0, -1, (3, 0), (1, 2, 3), "32", 2.0, False):
    with pytest.raises(ValueError, match="size=.* is not allowed"):
      images.check_image_size(bad, "size")
