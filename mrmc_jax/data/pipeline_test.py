"""Tests for mrmc_jax.data.pipeline on tiny arrays."""

import numpy as np
import pytest

from mrmc_jax.data import pipeline as ip
from mrmc_jax.data import splits

N = 37  # not a multiple of the batch size
B = 8


def _id_split(n=N, size=4, channels=1):
  """Images whose every pixel is their id, so batches reveal what they hold."""
  images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                           (n, size, size, channels)).copy()
  return splits.ArraySplit(images, np.arange(n) % 3)


def _random_split(n=12, size=32):
  rng = np.random.default_rng(0)
  return splits.ArraySplit(
      rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
      rng.integers(0, 10, n))


def _batches(ds):
  return list(ip.as_numpy(ds))


def _stack(batches, key):
  return np.concatenate([b[key] for b in batches])


def _pixel(batch_images):
  # Undo mean=0, std=1/255 normalisation: the image is the raw pixel.
  return np.rint(batch_images[:, 0, 0, 0]).astype(int)


def _train(split, **kwargs):
  kwargs = {"batch_size": B, "seed": 0, "epoch": 0, "augment": False,
            "mean": 0.0, "std": 1 / 255, **kwargs}
  return _batches(ip.train_dataset(split, **kwargs))


def test_num_batches():
  assert [ip.num_batches(n, 8) for n in (0, 1, 8, 9, 16)] == [0, 1, 1, 2, 2]


def test_epoch_visits_every_id_once_and_masks_exactly_the_padding():
  split = _id_split()
  ds = ip.train_dataset(split, batch_size=B, seed=0, epoch=0, augment=False,
                        mean=0.0, std=1 / 255)
  assert ds.element_spec["image"].shape == (B, 4, 4, 1)  # static
  batches = _batches(ds)
  assert len(batches) == ip.num_batches(N, B) == 5
  ids, mask = _stack(batches, "id"), _stack(batches, "mask")
  assert sorted(ids[mask].tolist()) == list(range(N))
  np.testing.assert_array_equal(mask, np.arange(5 * B) < N)
  np.testing.assert_array_equal(ids[~mask], ip.PAD_ID)
  np.testing.assert_array_equal(ids[mask], ip.epoch_order(N, 0, 0))
  # Each row holds its own example; padding rows are zeros.
  images = _stack(batches, "image")
  np.testing.assert_array_equal(_pixel(images)[mask], ids[mask])
  np.testing.assert_array_equal(_stack(batches, "label")[mask], ids[mask] % 3)
  assert not images[~mask].any()
  for b in batches:
    assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
    assert b["id"].dtype == np.int32 and b["mask"].dtype == bool


def test_order_depends_on_seed_and_epoch_only():
  split = _id_split()

  def order(seed, epoch):
    return _stack(_train(split, seed=seed, epoch=epoch), "id")

  np.testing.assert_array_equal(order(0, 1), order(0, 1))
  assert not np.array_equal(order(0, 1), order(0, 2))
  assert not np.array_equal(order(0, 1), order(1, 1))
  # The id order of the given ids does not matter.
  np.testing.assert_array_equal(ip.epoch_order([5, 1, 3], 2, 3),
                                ip.epoch_order([3, 5, 1], 2, 3))
  with pytest.raises(ValueError, match="repeat"):
    ip.epoch_order([1, 1], 0, 0)


def test_normalisation():
  split = _id_split()
  batch = _train(split, mean=[0.1], std=[0.5])[0]
  expected = (batch["id"].astype(np.float32) / 255 - 0.1) / 0.5
  np.testing.assert_allclose(batch["image"][:, 0, 0, 0], expected, rtol=1e-5)


def _reference_augment(image, dy, dx, flip, padding, mode):
  padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)],
                  mode=mode)
  h, w, _ = image.shape
  crop = padded[dy:dy + h, dx:dx + w]
  return crop[:, ::-1] if flip else crop


@pytest.mark.parametrize("pad_mode,np_mode", [("constant", "constant"),
                                              ("reflect", "reflect")])
def test_augmentation_matches_reference_and_is_deterministic(pad_mode,
                                                             np_mode):
  split = _random_split()
  kwargs = {"augment": True, "epoch": 3, "pad_mode": pad_mode, "std": 1 / 255}
  a = _train(split, **kwargs)
  b = _train(split, **kwargs)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  ids, mask = _stack(a, "id"), _stack(a, "mask")
  images = _stack(a, "image")
  params = ip.augment_params(ids[mask], 0, 3)
  assert params["flip"].any() and (params["dx"] != 4).any()
  for k, i in enumerate(ids[mask]):
    expected = _reference_augment(split.images[i], params["dy"][k],
                                  params["dx"][k], params["flip"][k], 4,
                                  np_mode)
    np.testing.assert_array_equal(np.rint(images[mask][k]), expected)


def test_augmentation_is_keyed_by_example_not_batch():
  split = _random_split()

  def by_id(batch_size, epoch):
    batches = _train(split, augment=True, batch_size=batch_size, epoch=epoch)
    ids, mask = _stack(batches, "id"), _stack(batches, "mask")
    return _stack(batches, "image")[mask][np.argsort(ids[mask])]

  np.testing.assert_array_equal(by_id(4, 0), by_id(6, 0))
  assert not np.array_equal(by_id(4, 0), by_id(4, 1))


def test_no_augmentation_below_32_pixels():
  split = _id_split(size=16, channels=3)
  plain = _train(split, augment=False)
  augmented = _train(split, augment=True)
  for x, y in zip(plain, augmented):
    np.testing.assert_array_equal(x["image"], y["image"])
  big = _random_split(size=32)
  assert not all(
      np.array_equal(x["image"], y["image"])
      for x, y in zip(_train(big, augment=False), _train(big, augment=True)))


def test_ids_restrict_the_epoch_to_a_core_set():
  split = _id_split()
  core = np.array([30, 2, 17, 5, 11, 23, 36, 0, 8, 9, 12])
  batches = _train(split, ids=core)
  assert len(batches) == ip.num_batches(len(core), B) == 2
  ids, mask = _stack(batches, "id"), _stack(batches, "mask")
  assert sorted(ids[mask].tolist()) == sorted(core.tolist())
  np.testing.assert_array_equal(_pixel(_stack(batches, "image"))[mask],
                                ids[mask])
  with pytest.raises(ValueError, match="ids must lie in"):
    _train(split, ids=[N])


@pytest.mark.parametrize("make", ["train", "eval"])
def test_process_slices_reconstruct_the_global_batch(make):
  split = _id_split()

  def batches(process_index, process_count):
    kwargs = {"batch_size": B, "mean": 0.0, "std": 1 / 255,
              "process_index": process_index, "process_count": process_count}
    if make == "train":
      ds = ip.train_dataset(split, seed=1, epoch=2, augment=False, **kwargs)
    else:
      ds = ip.eval_dataset(split, **kwargs)
    return _batches(ds)

  global_batches = batches(0, 1)
  parts = [batches(0, 2), batches(1, 2)]
  assert len(parts[0]) == len(parts[1]) == len(global_batches)
  for g, p0, p1 in zip(global_batches, *parts):
    assert p0["image"].shape[0] == B // 2
    for key in g:
      np.testing.assert_array_equal(g[key], np.concatenate([p0[key],
                                                            p1[key]]))


def test_batch_size_must_divide_among_processes():
  with pytest.raises(ValueError, match="not divisible by process_count"):
    ip.train_dataset(_id_split(), batch_size=6, seed=0, epoch=0,
                     augment=False, mean=0.0, std=1.0, process_count=4)


def test_eval_is_ordered_padded_and_masked():
  split = _id_split()
  batches = _batches(ip.eval_dataset(split, batch_size=B, mean=0.0,
                                     std=1 / 255))
  assert len(batches) == 5
  ids, mask = _stack(batches, "id"), _stack(batches, "mask")
  np.testing.assert_array_equal(ids[mask], np.arange(N))
  np.testing.assert_array_equal(mask, np.arange(5 * B) < N)
  assert batches[-1]["image"].shape == (B, 4, 4, 1)
  sub = _batches(ip.eval_dataset(split, batch_size=B, mean=0.0, std=1.0,
                                 ids=[9, 3]))
  assert len(sub) == 1 and sub[0]["id"][:2].tolist() == [3, 9]


def test_drop_remainder_and_unpadded_last_batch():
  split = _id_split()
  dropped = _train(split, drop_remainder=True)
  assert len(dropped) == N // B and all(b["mask"].all() for b in dropped)
  short = _train(split, pad_to_batch=False)
  assert [len(b["id"]) for b in short] == [B] * 4 + [N % B]
  # Unpadded but whole batches still split between processes.
  even = _id_split(n=2 * B)
  parts = [_stack(_train(even, pad_to_batch=False, process_index=p,
                         process_count=2), "id") for p in range(2)]
  assert sorted(np.concatenate(parts).tolist()) == list(range(2 * B))
  with pytest.raises(ValueError, match="pad_to_batch"):
    _train(split, pad_to_batch=False, process_count=2)


def test_global_ids_of_a_sliced_split():
  split = _id_split().slice(*splits.process_slice(N, 1, 2))
  batches = _batches(ip.eval_dataset(split, batch_size=B, mean=0.0,
                                     std=1 / 255))
  ids, mask = _stack(batches, "id"), _stack(batches, "mask")
  np.testing.assert_array_equal(ids[mask], np.arange(19, N))
  np.testing.assert_array_equal(_pixel(_stack(batches, "image"))[mask],
                                ids[mask])


@pytest.mark.parametrize("process_count", [1, 2])
def test_start_step_yields_the_rest_of_the_epoch(process_count):
  # Resuming at batch k gives exactly batches k.. of the whole epoch (ids,
  # pixels, augmentation) on every process, so the epoch still visits
  # every id once.
  split = _random_split(n=37)
  kwargs = {"batch_size": B, "seed": 3, "epoch": 1, "augment": True,
            "mean": 0.0, "std": 1 / 255, "process_count": process_count}
  for p in range(process_count):
    whole = _batches(ip.train_dataset(split, process_index=p, **kwargs))
    assert len(whole) == ip.num_batches(37, B)
    for k in (0, 2, len(whole)):
      rest = _batches(ip.train_dataset(split, process_index=p, start_step=k,
                                       **kwargs))
      assert len(rest) == len(whole) - k
      for got, want in zip(rest, whole[k:]):
        for key in want:
          np.testing.assert_array_equal(got[key], want[key])
  ids = _stack(_train(_id_split(), start_step=0), "id")
  resumed = np.concatenate([_stack(_train(_id_split())[:3], "id"),
                            _stack(_train(_id_split(), start_step=3), "id")])
  np.testing.assert_array_equal(resumed, ids)
  assert sorted(ids[ids >= 0]) == list(range(N))


@pytest.mark.parametrize("bad", [-1, 6, 1.5, True])
def test_start_step_out_of_range_is_refused(bad):
  with pytest.raises(ValueError, match=r"start_step=.* in \[0, 5\]"):
    ip.train_dataset(_id_split(), batch_size=B, seed=0, epoch=0,
                     augment=False, mean=0.0, std=1.0, start_step=bad)
