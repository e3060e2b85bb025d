"""IdMap: string and sparse keys <-> dense ids, on the host and in tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from mrmc_jax import ids as ids_lib

NAMES = ["dog/7.png", "cat/1.png", "ant/3.png", "cat/10.png"]


def test_string_keys_round_trip():
  m = ids_lib.IdMap(NAMES)
  assert m.num_examples == 4
  np.testing.assert_array_equal(m.to_ids(["ant/3.png", "dog/7.png"]), [2, 0])
  np.testing.assert_array_equal(m.to_ids([b"cat/10.png"]), [3])  # bytes too
  np.testing.assert_array_equal(m.to_keys([2, 0]), ["ant/3.png", "dog/7.png"])
  mask = np.array([False, True, False, True])
  np.testing.assert_array_equal(m.selected_keys(mask),
                                ["cat/1.png", "cat/10.png"])


def test_sparse_int_keys_in_a_tf_data_pipeline():
  keys = np.array([900_000_000_123, 7, 42, 5_000_000], np.int64)
  m = ids_lib.IdMap(keys)
  ds = tf.data.Dataset.from_tensor_slices(
      {"key": keys[[2, 0, 3]], "x": np.arange(3.0)})
  got = [int(ex["id"]) for ex in m.add_ids(ds).as_numpy_iterator()]
  assert got == [2, 0, 3]
  # int32 keys in the pipeline are looked up as int64.
  ds32 = tf.data.Dataset.from_tensor_slices({"key": np.int32([42, 7])})
  assert [int(e["id"]) for e in m.add_ids(ds32).as_numpy_iterator()] == [2, 1]


def test_string_keys_in_a_tf_data_pipeline_and_unknown_keys_stop_it():
  m = ids_lib.IdMap(NAMES)
  ds = tf.data.Dataset.from_tensor_slices({"file": ["cat/10.png", "dog/7.png"]})
  out = list(m.add_ids(ds, key="file").as_numpy_iterator())
  assert [int(e["id"]) for e in out] == [3, 0]
  bad = tf.data.Dataset.from_tensor_slices({"key": ["cat/1.png", "emu/2.png"]})
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="a `key` that is not in the map"):
    list(m.add_ids(bad).as_numpy_iterator())
  assert int(m.table().lookup(tf.constant("emu/2.png"))) == -1


def test_bad_keys_and_ids_are_refused():
  with pytest.raises(ValueError, match=r"1 repeated keys \(first 'a'\)"):
    ids_lib.IdMap(["a", "b", "a"])
  with pytest.raises(ValueError, match="keys is empty"):
    ids_lib.IdMap([])
  with pytest.raises(ValueError, match=r"must be 1-D \[N\], got shape"):
    ids_lib.IdMap([[1, 2]])
  with pytest.raises(ValueError, match="keys must be strings, bytes or int"):
    ids_lib.IdMap([0.5, 1.5])
  m = ids_lib.IdMap(NAMES)
  with pytest.raises(ValueError, match=r"1 keys are not in the map \(first "
                     r"'emu/2.png'\)"):
    m.to_ids(["cat/1.png", "emu/2.png"])
  with pytest.raises(ValueError, match=r"id -1 is not allowed: ids are in "
                     r"\[0, 4\)"):
    m.to_keys([0, -1])
  with pytest.raises(ValueError, match=r"mask must be bool \[4\]"):
    m.selected_keys(np.ones(3, bool))
  with pytest.raises(ValueError, match="do not match"):
    m.to_ids([1, 2])


def test_subset_source_and_the_one_line_filter():
  source = [{"id": i, "x": 10 * i} for i in range(6)]
  mask = np.array([True, False, False, True, True, False])
  sub = ids_lib.subset_source(source, mask)
  assert len(sub) == 3 and [sub[j]["id"] for j in range(3)] == [0, 3, 4]
  # The README's one-line filter for any pipeline of examples with an id
  # (grain: `.filter(lambda ex: mask[ex["id"]])`), here on a plain iterable.
  kept = list(filter(lambda ex: mask[ex["id"]], source))
  assert [ex["id"] for ex in kept] == [0, 3, 4]
  with pytest.raises(ValueError, match=r"mask must be bool \[6\]"):
    ids_lib.subset_source(source, mask[:5])
