"""Tests for train_step.py: stats from the training pass, padding ignored."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mrmc_jax import losses
from mrmc_jax import train_step


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x, train=True):
    del train
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _setup(lr=0.1):
  model = _Tiny()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
  tx = optax.sgd(lr)
  return (train_step.module_apply_fn(model),
          train_step.create_train_state(variables, tx), tx)


def _batch(x, y, ids, mask):
  return {"image": jnp.asarray(x, jnp.float32), "label": jnp.asarray(y),
          "id": jnp.asarray(ids, jnp.int32), "mask": jnp.asarray(mask)}


def test_stats_come_from_the_training_forward_pass():
  apply_fn, state, tx = _setup()
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(5, 4)), np.array([0, 1, 2, 0, 1])
  batch = _batch(x, y, [10, 11, 12, 13, 0], [True] * 4 + [False])
  step = jax.jit(train_step.make_train_step(apply_fn, tx), donate_argnums=0)
  logits = apply_fn(state.variables, batch["image"], train=False)[0]
  new_state, stats = step(state, batch)
  # Statistics of the pre-update parameters (the pass that made the gradient).
  ref = losses.per_example_stats(logits, batch["label"], batch["mask"])
  for k in ("loss", "correct", "p_true", "el2n"):
    np.testing.assert_allclose(stats[k], ref[k], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(stats["id"], [10, 11, 12, 13, 0])
  np.testing.assert_array_equal(stats["mask"], batch["mask"])
  assert stats["loss"][4] == 0.0 and not stats["correct"][4]
  np.testing.assert_allclose(stats["train_loss"], np.mean(ref["loss"][:4]),
                             rtol=1e-6)
  assert int(new_state.step) == 1


def test_padding_rows_never_reach_the_gradient():
  apply_fn, state, tx = _setup()
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(3, 4)), np.array([0, 1, 2])
  step = jax.jit(train_step.make_train_step(apply_fn, tx, with_stats=False))
  plain, _ = step(state, _batch(x, y, [0, 1, 2], [True] * 3))
  # Same 3 examples plus 2 padding rows holding huge garbage.
  xp = np.concatenate([x, 1e6 * np.ones((2, 4))])
  padded, _ = step(state, _batch(xp, np.array([0, 1, 2, 2, 2]),
                                 [0, 1, 2, -1, -1], [True] * 3 + [False] * 2))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      plain.params, padded.params)


def test_sgd_update_by_hand():
  # Linear softmax, w = 0: grad_b = mean(p - onehot) with p uniform (1/3).
  apply_fn, state, tx = _setup(lr=1.0)
  state = state.replace(params=jax.tree_util.tree_map(jnp.zeros_like,
                                                      state.params))
  batch = _batch(np.zeros((2, 4)), np.array([0, 1]), [0, 1], [True, True])
  new, stats = train_step.make_train_step(apply_fn, tx)(state, batch)
  b = new.params["Dense_0"]["bias"]
  np.testing.assert_allclose(b, [1 / 2 - 1 / 3, 1 / 2 - 1 / 3, -1 / 3],
                             rtol=1e-6)
  np.testing.assert_allclose(stats["loss"], [np.log(3)] * 2, rtol=1e-6)


def test_step_compiles_once_and_eval_step():
  apply_fn, state, tx = _setup()
  traces = []

  def counted(s, b):
    traces.append(1)
    return train_step.make_train_step(apply_fn, tx)(s, b)

  step = jax.jit(counted, donate_argnums=0)
  rng = np.random.default_rng(2)
  for i in range(3):
    batch = _batch(rng.normal(size=(4, 4)), rng.integers(0, 3, 4),
                   np.arange(4) + 4 * i, [True, True, True, i != 2])
    state, _ = step(state, batch)
  assert len(traces) == 1
  out = jax.jit(train_step.make_eval_step(apply_fn))(state.variables, batch)
  assert out["loss"].shape == (4,) and out["loss"][3] == 0.0


class _Dropout(nn.Module):

  @nn.compact
  def __call__(self, x, train=True):
    x = nn.Dense(8)(x.reshape(x.shape[0], -1))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(3)(x)


def _flax_state(model, tx, cls=None):
  from flax.training import train_state  # pylint: disable=g-import-not-at-top
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4)), train=False)
  cls = cls or train_state.TrainState
  return cls.create(apply_fn=model.apply, params=variables["params"], tx=tx)


def test_flax_train_state_without_batch_stats_and_its_own_tx():
  from flax.training import train_state  # pylint: disable=g-import-not-at-top
  model, tx = _Tiny(), optax.sgd(0.1)
  state = _flax_state(model, tx)
  apply_fn = train_step.module_apply_fn(model)
  x, y = np.random.default_rng(2).normal(size=(4, 4)), np.array([0, 1, 2, 0])
  batch = _batch(x, y, [0, 1, 2, 3], [True] * 4)
  # tx=None: the state's own optimiser; the same update as passing it.
  new, stats = jax.jit(train_step.make_train_step(apply_fn))(state, batch)
  ref, _ = train_step.make_train_step(apply_fn, tx)(state, batch)
  assert int(new.step) == 1 and stats["loss"].shape == (4,)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # A different optimiser given as well is refused, not silently used.
  with pytest.raises(ValueError, match="carries another one"):
    train_step.make_train_step(apply_fn, optax.adam(1e-3))(state, batch)
  own = train_step.create_train_state({"params": state.params}, tx)
  assert isinstance(own, train_state.TrainState)  # flax's own class
  with pytest.raises(ValueError, match="has no `tx` field"):
    train_step.make_train_step(apply_fn)(own, batch)


def test_dropout_rng_is_folded_with_the_step():
  model = _Dropout()
  state = _flax_state(model, optax.sgd(0.0))  # lr 0: only the rng moves
  step = jax.jit(train_step.make_train_step(train_step.module_apply_fn(model)))
  x, y = np.random.default_rng(3).normal(size=(6, 4)), np.zeros(6, int)
  batch = _batch(x, y, range(6), [True] * 6)
  rng = jax.random.key(7)
  s1, a = step(state, batch, rng)
  _, b = step(s1, batch, rng)          # next step: another dropout mask
  _, again = step(state, batch, rng)   # same step and key: the same mask
  assert not np.allclose(a["loss"], b["loss"])
  np.testing.assert_array_equal(a["loss"], again["loss"])
  with pytest.raises(Exception, match="dropout"):
    step(state, batch)  # a Dropout model needs a key in training


def test_user_loss_is_trained_and_recorded():
  apply_fn, state, tx = _setup()
  x, y = np.random.default_rng(4).normal(size=(5, 4)), np.array([0, 1, 2, 0, 1])
  batch = _batch(x, y, [0, 1, 2, 3, 4], [True] * 4 + [False])

  def smoothed(logits, labels):
    return optax.softmax_cross_entropy(
        logits, optax.smooth_labels(jax.nn.one_hot(labels, 3), 0.2))

  _, stats = jax.jit(train_step.make_train_step(apply_fn, tx,
                                                loss_fn=smoothed))(state, batch)
  logits = apply_fn(state.variables, batch["image"], train=True)[0]
  want = np.asarray(smoothed(logits, batch["label"]))
  np.testing.assert_allclose(stats["loss"][:4], want[:4], rtol=1e-5)
  assert stats["loss"][4] == 0.0  # padding
  np.testing.assert_allclose(stats["train_loss"], want[:4].mean(), rtol=1e-5)
  # Other statistics still come from the logits.
  ref = losses.per_example_stats(logits, batch["label"], batch["mask"])
  np.testing.assert_allclose(stats["p_true"], ref["p_true"], rtol=1e-5)


def test_a_label_outside_the_classes_is_not_recorded_and_is_counted():
  # Under jax.jit: the row leaves the loss (no gradient), is masked out of
  # recording (its id counts no visit) and is counted in the stats.
  from mrmc_jax import trajectory  # pylint: disable=g-import-not-at-top
  apply_fn, state, tx = _setup()
  x = np.random.default_rng(0).normal(size=(4, 4))
  good = _batch(x, [0, 1, 2, 0], [0, 1, 2, 3], [True] * 4)
  bad = {**good, "label": jnp.array([0, 3, 2, 0])}
  step = jax.jit(trajectory.make_recording_step(
      train_step.make_train_step(apply_fn, tx)))
  traj = trajectory.init_trajectory(4, 1)
  new_state, traj, stats = step(state, traj, bad, jnp.int32(0))
  np.testing.assert_array_equal(traj["visits"][:, 0], [1, 0, 1, 1])
  assert int(stats["num_bad_labels"]) == 1
  np.testing.assert_array_equal(stats["bad_label"], [False, True, False, False])
  assert not bool(stats["mask"][1])
  assert np.isfinite(float(stats["train_loss"]))
  # The update equals one on the three good rows alone.
  only_good = {**good, "mask": jnp.array([True, False, True, True])}
  ref_state, _, _ = step(state, trajectory.init_trajectory(4, 1), only_good,
                         jnp.int32(0))
  for a, b in zip(jax.tree_util.tree_leaves(new_state.params),
                  jax.tree_util.tree_leaves(ref_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert int(step(state, trajectory.init_trajectory(4, 1), good,
                  jnp.int32(0))[2]["num_bad_labels"]) == 0


def test_a_state_that_is_not_a_train_state_is_refused():
  apply_fn, state, tx = _setup()
  step = train_step.make_train_step(apply_fn, tx)
  batch = _batch(np.zeros((2, 4)), [0, 1], [0, 1], [True, True])
  as_dict = {"params": state.params, "opt_state": state.opt_state}
  with pytest.raises(ValueError, match=r"make_train_step's step got a state "
                     r"of type dict; expected .*params, opt_state and "
                     r"replace"):
    jax.jit(step)(as_dict, batch)


def test_eval_step_masks_a_label_outside_the_classes():
  apply_fn, state, _ = _setup()
  batch = _batch(np.zeros((3, 4)), [0, 3, 1], [0, 1, 2], [True] * 3)
  out = jax.jit(train_step.make_eval_step(apply_fn))(state.variables, batch)
  np.testing.assert_array_equal(out["mask"], [True, False, True])
  np.testing.assert_array_equal(out["bad_label"], [False, True, False])
  assert np.isnan(out["loss"][1])
