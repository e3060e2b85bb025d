"""Tests for trajectory.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax import trajectory


def _stats(ids, mask, loss):
  ids = jnp.asarray(ids, jnp.int32)
  loss = jnp.asarray(loss, jnp.float32)
  return {"id": ids, "mask": jnp.asarray(mask), "loss": loss,
          "correct": loss < 1.0, "p_true": jnp.exp(-loss), "el2n": loss / 2}


def test_record_scatters_by_id_and_skips_padding():
  traj = trajectory.init_trajectory(4, 2)
  rec = jax.jit(trajectory.record, donate_argnums=0)
  traj = rec(traj, _stats([2, 0, 0], [True, True, False], [5.0, 0.5, 9.0]), 0)
  traj = rec(traj, _stats([3, 1, 0], [True, True, False], [7.0, 0.25, 9.0]), 0)
  np.testing.assert_array_equal(traj["loss"][:, 0], [0.5, 0.25, 5.0, 7.0])
  np.testing.assert_array_equal(traj["correct"][:, 0],
                                [True, True, False, False])
  np.testing.assert_array_equal(traj["visits"][:, 0], [1, 1, 1, 1])
  np.testing.assert_array_equal(traj["visits"][:, 1], [0, 0, 0, 0])
  trajectory.check_visits(traj["visits"], epochs=[0])


def test_missing_and_duplicate_are_detected():
  # Under jax.jit (duplicates are refused when the ids are concrete).
  traj = trajectory.init_trajectory(4, 1)
  traj = jax.jit(trajectory.record)(
      traj, _stats([0, 1, 1], [True] * 3, [1., 2., 3.]), jnp.int32(0))
  report = trajectory.visit_report(traj["visits"])
  np.testing.assert_array_equal(report[0]["missing"], [2, 3])
  np.testing.assert_array_equal(report[0]["duplicated"], [1])
  with pytest.raises(trajectory.VisitError, match="2 examples never recorded"):
    trajectory.check_visits(traj["visits"])


def test_record_traced_epoch_compiles_once():
  traj = trajectory.init_trajectory(3, 3)
  traces = []

  @jax.jit
  def rec(t, s, e):
    traces.append(1)
    return trajectory.record(t, s, e)

  for e in range(3):
    traj = rec(traj, _stats([0, 1, 2], [True] * 3, [e, e, e]), jnp.int32(e))
  assert len(traces) == 1
  np.testing.assert_array_equal(traj["loss"][0], [0.0, 1.0, 2.0])


def test_visit_error_names_the_epoch_of_a_single_column():
  visits = np.zeros((3, 5), np.int32)
  visits[:, :4] = 1
  visits[1, 3] = 0  # epoch 3 misses example 1
  trajectory.check_visits(visits[:, 2:3], first_epoch=2)
  with pytest.raises(trajectory.VisitError,
                     match=r"^epoch 3 \(0-based\): 1 examples never recorded"):
    trajectory.check_visits(visits[:, 3:4], first_epoch=3)


def test_recording_step_on_8_devices_equals_1_device():
  import optax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top
  from mrmc_jax import train_step  # pylint: disable=g-import-not-at-top

  model = nn.Dense(3)
  apply_fn = lambda v, x, train, mask=None: (model.apply(v, x), None)
  tx = optax.sgd(0.1)
  rng = np.random.default_rng(0)
  n, b = 40, 16
  x, y = rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)
  out = {}
  for devices in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:devices])
    step = jax.jit(trajectory.make_recording_step(
        train_step.make_train_step(apply_fn, tx), mesh=mesh),
                   donate_argnums=(0, 1))
    # A fresh init per run: the step donates the state's buffers.
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    state = sharding.replicate(train_step.create_train_state(variables, tx),
                               mesh)
    traj = sharding.replicate(trajectory.init_trajectory(n, 2), mesh)
    for epoch in range(2):
      for start in range(0, 48, b):  # 3 batches, the last padded
        ids = np.arange(start, start + b)
        valid = ids < n
        ids = np.where(valid, ids, 0)
        batch = {"image": x[ids], "label": y[ids].astype(np.int32),
                 "id": ids.astype(np.int32), "mask": valid}
        state, traj, _ = step(state, traj, sharding.shard_batch(batch, mesh),
                              epoch)
    out[devices] = jax.tree.map(np.asarray, traj)
  trajectory.check_visits(out[8]["visits"])
  np.testing.assert_array_equal(out[8]["correct"], out[1]["correct"])
  np.testing.assert_allclose(out[8]["loss"], out[1]["loss"], rtol=1e-5)


def test_record_a_field_with_trailing_axes_and_refuse_mismatched_ones():
  traj = {"value": jnp.zeros((4, 1, 2)), "visits": jnp.zeros((4, 1), jnp.int32)}
  stats = {"id": jnp.array([3, 1]), "mask": jnp.array([True, True]),
           "value": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
  out = jax.jit(trajectory.record)(traj, stats, 0)
  np.testing.assert_array_equal(out["value"][:, 0],
                                [[0, 0], [3, 4], [0, 0], [1, 2]])
  with pytest.raises(ValueError, match=r"stats\['value'\] has shape \(2, 3\)"):
    trajectory.record(traj, {**stats, "value": jnp.ones((2, 3))}, 0)


def _mlp_run(n, r, b, mesh, sharded):
  """A tiny MLP's warm-up on `mesh`, trajectory replicated or row-sharded."""
  import optax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top
  from mrmc_jax import train_step  # pylint: disable=g-import-not-at-top

  model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(3)])
  apply_fn = lambda v, x, train, mask=None: (model.apply(v, x), None)
  tx = optax.sgd(0.1)
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)
  step = jax.jit(trajectory.make_recording_step(
      train_step.make_train_step(apply_fn, tx), mesh=mesh, sharded=sharded),
                 donate_argnums=(0, 1))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
  state = sharding.replicate(train_step.create_train_state(variables, tx),
                             mesh)
  traj = (trajectory.init_trajectory(n, r, mesh=mesh) if sharded else
          sharding.replicate(trajectory.init_trajectory(n, r), mesh))
  for epoch in range(r):
    order = np.random.default_rng([0, epoch]).permutation(n)
    for start in range(0, n, b):  # the last batch padded
      ids = order[start:start + b]
      valid = np.arange(b) < len(ids)
      ids = np.pad(ids, (0, b - len(ids)))
      batch = {"image": x[ids], "label": y[ids].astype(np.int32),
               "id": ids.astype(np.int32), "mask": valid}
      state, traj, _ = step(state, traj, sharding.shard_batch(batch, mesh),
                            epoch)
  return traj, y


def test_sharded_trajectory_equals_replicated_and_selects_the_same_mask():
  from mrmc_jax import scoring  # pylint: disable=g-import-not-at-top
  from mrmc_jax import selection  # pylint: disable=g-import-not-at-top
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top

  n, r, b = 301, 3, 32  # N not a multiple of 8: padded to 304
  mesh = sharding.make_mesh()
  rep, y = _mlp_run(n, r, b, mesh, sharded=False)
  shd, _ = _mlp_run(n, r, b, mesh, sharded=True)
  n_pad = sharding.padded_rows(n, mesh)
  assert n_pad == 304
  for k, v in shd.items():
    assert v.shape == (n_pad, r) and v.sharding.spec == sharding.P("data")
    # Each of the 8 devices holds its own N_pad / 8 rows, not all N.
    assert len(v.addressable_shards) == 8
    for s in v.addressable_shards:
      assert s.data.shape == (n_pad // 8, r)
      assert s.data.nbytes == n_pad * r * v.dtype.itemsize // 8
    assert rep[k].addressable_shards[0].data.shape == (n, r)
    np.testing.assert_array_equal(np.asarray(v)[:n], np.asarray(rep[k]), k)
  trajectory.check_visits(np.asarray(trajectory.unpad(shd, n)["visits"]))
  assert [int(trajectory.epoch_visit_errors(shd["visits"], e, n))
          for e in range(r)] == [0] * r
  # One id recorded twice and one missed: two errors, on device.
  bad = shd["visits"].at[0, 1].add(1).at[5, 1].add(-1)
  assert int(trajectory.epoch_visit_errors(bad, 1, n)) == 2
  # The padding rows are never visited.
  np.testing.assert_array_equal(np.asarray(shd["visits"])[n:], 0)
  # Selection: score the sharded [N_pad, R] losses row-parallel (each device
  # its own rows), slice the [N] scores, select; the same scores and mask
  # as from the replicated trajectory.
  score_rows = sharding.map_rows(scoring.mrmc_scores, mesh)
  scores = jax.jit(lambda l: score_rows(l)[:n])(shd["loss"])
  want_scores = scoring.mrmc_scores(rep["loss"])
  np.testing.assert_array_equal(np.asarray(scores), np.asarray(want_scores))
  mask = selection.select_mask(scores, y, 0.3, num_classes=3)
  want = selection.select_mask(want_scores, y, 0.3, num_classes=3)
  assert int(np.sum(want)) == int(np.floor(0.3 * n))
  np.testing.assert_array_equal(np.asarray(mask), np.asarray(want))


@pytest.mark.parametrize("layout", ["2d", "named"])
def test_sharded_record_on_2d_meshes_with_a_trailing_axis_field(layout):
  from jax.sharding import Mesh, NamedSharding  # pylint: disable=g-import-not-at-top
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top

  devices = np.asarray(jax.devices()).reshape(4, 2)
  if layout == "2d":  # rows over `data` (4), replicated over `model`
    where, shards = Mesh(devices, ("data", "model")), 4
  else:  # the batch's own sharding, split over the product of two axes
    where = NamedSharding(Mesh(devices, ("a", "b")), sharding.P(("a", "b")))
    shards = 8
  n, d = 13, 2
  rows = sharding.padded_rows(n, where)
  assert rows == -(-n // shards) * shards
  traj = {"value": sharding.zeros((rows, 1, d), jnp.float32,
                                  sharding.rows_sharding(where)),
          "visits": trajectory.init_trajectory(n, 1, (), mesh=where)["visits"]}
  plain = {"value": jnp.zeros((n, 1, d)), "visits": jnp.zeros((n, 1), jnp.int32)}
  rec = jax.jit(trajectory.record, static_argnames=("mesh", "sharded"))
  order = np.random.default_rng(1).permutation(n)
  for start in range(0, 16, 8):
    ids = np.pad(order[start:start + 8], (0, max(0, start + 8 - n)))
    stats = {"id": ids.astype(np.int32), "mask": np.arange(start, start + 8) < n,
             "value": np.stack([ids, -ids], 1).astype(np.float32)}
    traj = rec(traj, sharding.shard_batch(stats, where), 0, mesh=where,
               sharded=True)
    plain = trajectory.record(plain, stats, 0)
  assert traj["value"].addressable_shards[0].data.shape == (rows // shards, 1, d)
  for k in traj:
    np.testing.assert_array_equal(np.asarray(traj[k])[:n], np.asarray(plain[k]))
  # Outside jit too (the value checks run on concrete ids).
  eager = trajectory.record(traj, sharding.shard_batch(stats, where), 0,
                            mesh=where, sharded=True)
  assert int(np.asarray(eager["visits"]).sum()) == n + int(stats["mask"].sum())


def test_sharded_record_refuses_a_missing_mesh_and_unpadded_rows():
  from mrmc_jax import sharding  # pylint: disable=g-import-not-at-top

  stats = _stats([0, 1], [True, True], [1.0, 2.0])
  with pytest.raises(ValueError, match="sharded=True is not allowed without"):
    trajectory.record(trajectory.init_trajectory(4, 1), stats, 0, sharded=True)
  mesh = sharding.make_mesh()
  with pytest.raises(ValueError, match=r"traj has 12 rows, not a multiple of "
                     r"the 8 devices.*padded_rows\(n, mesh\) = 16"):
    trajectory.record(trajectory.init_trajectory(12, 1), stats, 0, mesh=mesh,
                      sharded=True)
  with pytest.raises(ValueError, match="num_rows=-1 is not allowed"):
    sharding.padded_rows(-1, mesh)


_TWO_PROCESS_WORKER = r"""
import sys
import jax
import jax.numpy as jnp
import numpy as np
jax.distributed.initialize(sys.argv[2], 2, int(sys.argv[1]))
from mrmc_jax import sharding, trajectory
pid, n, mesh = jax.process_index(), 13, sharding.make_mesh()
traj = trajectory.init_trajectory(n, 2, mesh=mesh)
rec = jax.jit(lambda t, s, e: trajectory.record(t, s, e, mesh=mesh,
                                                sharded=True),
              donate_argnums=0)
for e in range(2):
  order = np.random.default_rng([0, e]).permutation(n)
  for start in range(0, 16, 8):
    ids = order[start:start + 8]
    mask = np.arange(8) < len(ids)
    ids = np.pad(ids, (0, 8 - len(ids)))[pid * 4:pid * 4 + 4]
    stats = {"id": ids.astype(np.int32), "mask": mask[pid * 4:pid * 4 + 4],
             "loss": ids.astype(np.float32) + e, "correct": ids % 2 == 0,
             "p_true": np.zeros(4, np.float32), "el2n": np.zeros(4, np.float32)}
    traj = rec(traj, sharding.shard_batch(stats, mesh), jnp.int32(e))
assert [s.data.shape for s in traj["loss"].addressable_shards] == [(4, 2)] * 2
assert int(trajectory.epoch_visit_errors(traj["visits"], 1, n)) == 0
host = sharding.to_host(trajectory.unpad(traj, n))
np.testing.assert_array_equal(host["loss"], np.arange(n)[:, None] + [0, 1])
np.testing.assert_array_equal(host["visits"], 1)
print("ok", pid)
"""


def test_sharded_record_across_two_processes():
  """2 processes x 2 devices: each process holds 2 of the 4 row shards."""
  import os  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root,
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      ["timeout", "-k", "5", "120", sys.executable, "-c", _TWO_PROCESS_WORKER,
       str(i), address], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=150)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"ok {i}" in out, out[-2000:]


def test_record_drops_rows_flagged_bad_label():
  traj = trajectory.init_trajectory(3, 1)
  stats = {**_stats([0, 1, 2], [True] * 3, [1.0, jnp.nan, 2.0]),
           "bad_label": jnp.array([False, True, False])}
  traj = jax.jit(trajectory.record)(traj, stats, jnp.int32(0))
  np.testing.assert_array_equal(traj["visits"][:, 0], [1, 0, 1])
  assert float(traj["loss"][1, 0]) == 0.0


def test_duplicate_ids_in_one_batch_are_refused_when_concrete():
  traj = trajectory.init_trajectory(4, 1)
  with pytest.raises(ValueError, match=r"stats\['id'\] holds id 1 on 2 real "
                     r"rows \(rows 1 and 2\).*once per batch"):
    trajectory.record(traj, _stats([0, 1, 1], [True] * 3, [1., 2., 3.]), 0)
  # Padding rows may repeat an id.
  trajectory.record(traj, _stats([0, 1, 1], [True, True, False], [1., 2., 3.]),
                    0)


def test_init_trajectory_refuses_unknown_fields():
  with pytest.raises(ValueError, match=r"fields=\('los',\) holds unknown "
                     r"names \['los'\]; allowed: 'loss', 'correct'"):
    trajectory.init_trajectory(4, 2, fields=("los",))
  with pytest.raises(ValueError, match=r"fields='loss' is not allowed: pass "
                     r"a tuple"):
    trajectory.init_trajectory(4, 2, fields="loss")
  with pytest.raises(ValueError, match=r"'visits' is always"):
    trajectory.init_trajectory(4, 2, fields=("loss", "visits"))
