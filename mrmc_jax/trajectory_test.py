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
  traj = trajectory.init_trajectory(4, 1)
  traj = trajectory.record(traj, _stats([0, 1, 1], [True] * 3, [1., 2., 3.]), 0)
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
