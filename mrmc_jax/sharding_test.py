"""The user's mesh: any batch axis name, a NamedSharding, 2-D meshes.

pytest sees 8 simulated CPU devices (conftest.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import trajectory

N, B, EPOCHS = 40, 16, 2


def _batch(start, x, y):
  ids = np.arange(start, start + B)
  valid = ids < N
  ids = np.where(valid, ids, 0)
  return {"image": x[ids], "label": y[ids].astype(np.int32),
          "id": ids.astype(np.int32), "mask": valid}


def _data():
  rng = np.random.default_rng(0)
  return (rng.normal(size=(N, 4)).astype(np.float32),
          rng.integers(0, 3, N))


def test_shard_batch_on_a_batch_axis_of_another_name():
  mesh = Mesh(np.asarray(jax.devices()), ("batch",))
  x, y = _data()
  out = sharding.shard_batch(_batch(0, x, y), mesh, axis="batch")
  assert out["image"].sharding.spec == P("batch")
  assert out["image"].addressable_shards[0].data.shape == (B // 8, 4)
  np.testing.assert_array_equal(np.asarray(out["label"]), y[:B])
  # The default axis is named in the error, with the mesh's own axes.
  with pytest.raises(ValueError, match=r"axis='data' is not allowed: the "
                     r"mesh has axes \('batch',\)"):
    sharding.shard_batch(_batch(0, x, y), mesh)


def test_shard_batch_takes_a_named_sharding():
  mesh = Mesh(np.asarray(jax.devices()).reshape(2, 4), ("replica", "data"))
  spec = NamedSharding(mesh, P(("replica", "data")))
  x, y = _data()
  out = sharding.shard_batch(_batch(0, x, y), spec)
  assert out["id"].sharding == spec
  assert out["id"].addressable_shards[0].data.shape == (B // 8,)
  # The same split by axis names.
  same = sharding.shard_batch(_batch(0, x, y), mesh, axis=("replica", "data"))
  assert same["id"].sharding == spec
  with pytest.raises(ValueError, match="not allowed with a NamedSharding"):
    sharding.shard_batch(_batch(0, x, y), spec, axis="replica")
  with pytest.raises(ValueError, match=r"axis=0 is not allowed: pass a mesh "
                     "axis name"):
    sharding.shard_batch(_batch(0, x, y), mesh, axis=0)
  with pytest.raises(ValueError, match=r"mesh='data' is not allowed"):
    sharding.replicate({"a": np.zeros(2)}, "data")


def test_two_d_mesh_splits_the_batch_on_data_only():
  mesh = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("data", "model"))
  x, y = _data()
  out = sharding.shard_batch(_batch(0, x, y), mesh)
  assert out["image"].sharding.spec == P("data")
  # 4 ways on `data`, each slice held by the 2 devices of `model`.
  assert out["image"].addressable_shards[0].data.shape == (B // 4, 4)
  sharding.check_batch_size(12, mesh)  # a multiple of 4, not of 8
  with pytest.raises(ValueError, match="device count 4 of the batch axis"):
    sharding.check_batch_size(10, mesh)
  with pytest.raises(ValueError, match="device count 8 of the batch axis"):
    sharding.check_batch_size(12, sharding.make_mesh())


class _Mlp(nn.Module):

  @nn.compact
  def __call__(self, x):
    hidden = nn.relu(nn.Dense(8, name="hidden")(x))
    return nn.Dense(3, name="out")(hidden)


def _warmup(mesh, axis, shard_params=False):
  """Two epochs of the fused train-and-record step; returns the trajectory."""
  model = _Mlp()
  apply_fn = lambda v, x, train, mask=None: (model.apply(v, x), None)
  tx = optax.sgd(0.1)
  x, y = _data()
  step = jax.jit(trajectory.make_recording_step(
      train_step.make_train_step(apply_fn, tx), mesh=mesh),
                 donate_argnums=(0, 1))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
  state = train_step.create_train_state(variables, tx)
  traj = trajectory.init_trajectory(N, EPOCHS)
  if mesh is not None:
    state = sharding.replicate(state, mesh)
    traj = sharding.replicate(traj, mesh)
    if shard_params:  # model parallel: the hidden layer split on `model`
      kernel = NamedSharding(mesh, P(None, "model"))
      params = state.params
      params["hidden"]["kernel"] = jax.device_put(
          params["hidden"]["kernel"], kernel)
      state = state.replace(params=params)
  for epoch in range(EPOCHS):
    for start in range(0, 48, B):  # 3 batches, the last padded
      batch = _batch(start, x, y)
      if mesh is not None:
        batch = sharding.shard_batch(batch, mesh, axis)
      state, traj, _ = step(state, traj, batch, epoch)
  assert mesh is None or traj["loss"].sharding.is_fully_replicated
  return jax.tree.map(np.asarray, traj), state


@pytest.mark.parametrize("layout", ["batch_axis", "named_sharding",
                                    "data_x_model"])
def test_recording_on_the_users_mesh_equals_one_device(layout):
  devices = np.asarray(jax.devices())
  if layout == "batch_axis":
    mesh, axis, shard_params = Mesh(devices, ("batch",)), "batch", False
  elif layout == "named_sharding":
    mesh = NamedSharding(Mesh(devices, ("batch",)), P("batch"))
    axis, shard_params = sharding.DATA_AXIS, False
  else:
    mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
    axis, shard_params = sharding.DATA_AXIS, True
  want, _ = _warmup(None, None)
  got, state = _warmup(mesh, axis, shard_params)
  trajectory.check_visits(got["visits"])
  np.testing.assert_array_equal(got["visits"], want["visits"])
  np.testing.assert_array_equal(got["correct"], want["correct"])
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-6)
  if shard_params:  # the step kept the user's model-parallel layout
    assert state.params["hidden"]["kernel"].sharding.spec == P(None, "model")


def test_typed_prng_keys_cross_processes_as_key_data():
  """The multi-process path of `replicate` (NNX states hold typed keys)."""
  mesh = sharding.make_mesh()
  key = jax.random.key(3)
  tree = {"key": key, "w": np.arange(3.0)}
  out = jax.tree.map(
      lambda x: sharding._from_every_process(sharding.replicated(mesh), x),
      tree)
  assert out["key"].dtype == key.dtype
  assert out["key"].sharding.is_fully_replicated
  np.testing.assert_array_equal(jax.random.key_data(out["key"]),
                                jax.random.key_data(key))
  np.testing.assert_array_equal(out["w"], tree["w"])


def test_row_sharded_buffers_pad_split_and_map_rows():
  mesh2d = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("data", "model"))
  named = NamedSharding(mesh2d, P(("data", "model")))
  assert sharding.num_row_shards(mesh2d) == 4
  assert sharding.num_row_shards(named) == 8
  assert [sharding.padded_rows(n, mesh2d) for n in (0, 1, 4, 5)] == [0, 4, 4, 8]
  with pytest.raises(ValueError, match="num_rows=2.5 is not allowed"):
    sharding.padded_rows(2.5, mesh2d)
  # Created in place: each device allocates only its own rows.
  x = sharding.zeros((8, 3), jnp.int32, sharding.rows_sharding(mesh2d))
  assert x.sharding.spec == P("data")
  assert {s.data.shape for s in x.addressable_shards} == {(2, 3)}
  # A row-wise fn runs on each device's rows, with no gather.
  fn = sharding.map_rows(lambda v: jnp.sum(v, axis=1), named)
  rows = jax.device_put(jnp.arange(24.).reshape(8, 3),
                        sharding.rows_sharding(named))
  out = jax.jit(fn)(rows)
  np.testing.assert_array_equal(out, np.arange(24.).reshape(8, 3).sum(1))
  assert {s.data.shape for s in out.addressable_shards} == {(1,)}
  assert "all-gather" not in jax.jit(fn).lower(rows).compile().as_text()


def test_the_users_batch_axis_name_everywhere():
  # A 1-D mesh whose axis is not called `data`: the sharded trajectory,
  # record, map_rows and unpad take axis= like shard_batch.
  from mrmc_jax import scoring  # pylint: disable=g-import-not-at-top
  from mrmc_jax import trajectory  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.asarray(jax.devices()), ("batch",))
  n, r = 13, 3
  traj = trajectory.init_trajectory(n, r, mesh=mesh, axis="batch")
  assert traj["loss"].shape == (16, r)
  assert traj["loss"].sharding.spec == P("batch")
  rec = jax.jit(lambda t, s, e: trajectory.record(
      t, s, e, mesh=mesh, sharded=True, axis="batch"))
  rng = np.random.default_rng(0)
  for e in range(r):
    ids = np.r_[rng.permutation(n), [0, 0, 0]].astype(np.int32)
    loss = (ids + 1.0) * 0.8**e
    stats = {"id": ids, "mask": np.r_[np.ones(n, bool), np.zeros(3, bool)],
             "loss": loss.astype(np.float32), "correct": loss < 1,
             "p_true": np.zeros(16, np.float32),
             "el2n": np.zeros(16, np.float32)}
    traj = rec(traj, sharding.shard_batch(stats, mesh, axis="batch"),
               jnp.int32(e))
  np.testing.assert_array_equal(traj["visits"][:n], 1)
  np.testing.assert_allclose(traj["loss"][:n, 2], (np.arange(n) + 1) * 0.64,
                             rtol=1e-6)
  scores = sharding.map_rows(scoring.mrmc_scores, mesh, axis="batch")(
      traj["loss"])
  assert scores.sharding.spec == P("batch")
  np.testing.assert_allclose(scores[:n], scoring.mrmc_scores(traj["loss"][:n]),
                             rtol=1e-5)
  # unpad: replicated by default, or kept split by rows when asked.
  small = trajectory.unpad(traj, 8)
  assert small["loss"].shape == (8, r)
  kept = trajectory.unpad(traj, 8, mesh=mesh, axis="batch")
  assert kept["loss"].sharding.spec == P("batch")
  np.testing.assert_array_equal(kept["loss"], traj["loss"][:8])
  with pytest.raises(ValueError, match=r"num_examples=13 is not allowed "
                     r"with mesh=: the rows are split over 8 devices"):
    trajectory.unpad(traj, 13, mesh=mesh, axis="batch")
  # A NamedSharding says it directly; the default axis names the mesh's own.
  where = NamedSharding(mesh, P("batch"))
  assert sharding.padded_rows(n, where) == 16
  assert sharding.padded_rows(n, mesh, axis="batch") == 16
  with pytest.raises(ValueError, match=r"axis='data' is not allowed: the "
                     r"mesh has axes \('batch',\)"):
    trajectory.init_trajectory(n, r, mesh=mesh)
