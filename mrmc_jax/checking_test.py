"""Tests for checking.py: the checked mode on a jitted, donated step."""

import flax.linen as nn
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mrmc_jax import checking
from mrmc_jax import train_step
from mrmc_jax import trajectory


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x, train=True):
    del train
    return nn.Dense(3)(x)


def _setup():
  model = _Tiny()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 2)))
  tx = optax.sgd(0.1)
  step = train_step.make_train_step(train_step.module_apply_fn(model), tx)
  return (trajectory.make_recording_step(step),
          train_step.create_train_state(variables, tx))


def _batch(labels=(0, 1, 2, 0), ids=(0, 1, 2, 3)):
  return {"image": jnp.arange(8.0).reshape(4, 2) / 8,
          "label": jnp.asarray(labels), "id": jnp.asarray(ids),
          "mask": jnp.array([True, True, True, False])}


def test_checked_step_equals_the_plain_step_on_good_input():
  step, state = _setup()
  traj = trajectory.init_trajectory(5, 2)
  plain = jax.jit(step)(state, traj, _batch(), jnp.int32(1))
  checked = checking.checked(jax.jit(step))(state, traj, _batch(),
                                            jnp.int32(1))
  for a, b in zip(jax.tree_util.tree_leaves(plain),
                  jax.tree_util.tree_leaves(checked)):
    np.testing.assert_array_equal(a, b)


def test_checked_step_raises_on_a_bad_label_and_ignores_padding():
  step, state = _setup()
  traj = trajectory.init_trajectory(5, 2)
  run = checking.checked(step, donate_argnums=(0, 1))
  # A bad label on the padding row (mask False) is not an error.
  state, traj, _ = run(state, traj, _batch(labels=(0, 1, 2, 9)),
                       jnp.int32(0))
  with pytest.raises(checking.CheckError,
                     match=r"label \(flat index 1\) = 5 is outside"):
    run(state, traj, _batch(labels=(0, 5, 2, 0)), jnp.int32(0))
  # The donated buffers are consumed even by a failing call.
  _, state = _setup()
  with pytest.raises(ValueError, match=r"id \(flat index 2\) = 7"):
    run(state, trajectory.init_trajectory(5, 2), _batch(ids=(0, 1, 7, 3)),
        jnp.int32(0))


def test_checks_cost_nothing_in_a_plain_jit():
  # The debug checks are dropped from the compiled program: the plain
  # step's HLO has no callback and no more ops than without the checks.
  step, state = _setup()
  args = (state, trajectory.init_trajectory(5, 2), _batch(), jnp.int32(0))
  hlo = jax.jit(step).lower(*args).compile().as_text()
  assert "callback" not in hlo.lower()


def test_user_errors_can_be_added():
  f = lambda x: jnp.log(x)
  run = checking.checked(f, errors=checkify.user_checks | checkify.nan_checks)
  with pytest.raises(checking.CheckError, match="nan generated"):
    run(jnp.array([-1.0]))
  np.testing.assert_allclose(run(jnp.array([1.0])), [0.0])
