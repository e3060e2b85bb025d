"""NNX steps: in place and pure agree, BatchNorm, Dropout, padding, meshes."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mrmc_jax import losses
from mrmc_jax import nnx_adapter
from mrmc_jax import sharding
from mrmc_jax import trajectory

N, B, C = 40, 16, 3


class Net(nnx.Module):
  """Linear -> BatchNorm (masked) -> ReLU -> Dropout -> Linear."""

  def __init__(self, rngs: nnx.Rngs, rate: float = 0.3):
    self.hidden = nnx.Linear(4, 8, rngs=rngs)
    self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
    self.drop = nnx.Dropout(rate, rngs=rngs)
    self.out = nnx.Linear(8, C, rngs=rngs)

  def __call__(self, x, *, mask=None):
    bn_mask = None if mask is None else mask[:, None]  # [B, 1] over [B, 8]
    x = nnx.relu(self.bn(self.hidden(x), mask=bn_mask))
    return self.out(self.drop(x))


def _pair(rate=0.3, seed=0):
  model = Net(nnx.Rngs(seed, dropout=seed + 1), rate)
  return model, nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9),
                              wrt=nnx.Param)


def _batches():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, 4)).astype(np.float32)
  y = rng.integers(0, C, N).astype(np.int32)
  out = []
  for start in range(0, 48, B):  # 3 batches, the last padded
    ids = np.arange(start, start + B)
    valid = ids < N
    ids = np.where(valid, ids, 0)
    out.append({"image": x[ids], "label": y[ids], "id": ids.astype(np.int32),
                "mask": valid})
  return out


def _leaves(state):
  return [np.asarray(jax.random.key_data(v) if jnp.issubdtype(
      v.dtype, jax.dtypes.prng_key) else v) for v in jax.tree.leaves(state)]


def test_pure_step_equals_in_place_step_under_nnx_jit():
  model, optimizer = _pair()
  in_place = nnx.jit(nnx_adapter.nnx_train_step)
  graphdef, state = nnx.split(_pair())
  pure = jax.jit(nnx_adapter.make_nnx_train_step(graphdef), donate_argnums=0)
  for batch in _batches():
    want = in_place(model, optimizer, batch)
    state, got = pure(state, batch)
    for k in ("id", "mask", "loss", "correct", "p_true", "el2n"):
      np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]),
                                 rtol=1e-6, err_msg=k)
  for a, b in zip(_leaves(state), _leaves(nnx.state((model, optimizer)))):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert int(optimizer.step[...]) == 3


def test_stats_come_from_the_training_forward_pass():
  model, optimizer = _pair(rate=0.0)
  batch = _batches()[-1]  # 8 valid rows, 8 padding rows
  before = np.array(model.out.kernel[...])
  h = np.asarray(model.hidden(batch["image"]))
  train_view = nnx.view(model, use_running_average=False)
  logits = nnx.clone(train_view)(batch["image"], mask=batch["mask"])
  stats = nnx.jit(nnx_adapter.nnx_train_step)(model, optimizer, batch)
  want = losses.per_example_stats(logits, batch["label"], batch["mask"])
  np.testing.assert_allclose(stats["loss"], want["loss"], rtol=1e-5)
  np.testing.assert_array_equal(stats["loss"][8:], 0.0)
  np.testing.assert_array_equal(stats["mask"], batch["mask"])
  # The parameters moved; the batch statistics saw only the valid rows.
  assert not np.allclose(model.out.kernel[...], before)
  np.testing.assert_allclose(model.bn.mean[...],
                             0.1 * np.mean(h[:8], axis=0), rtol=1e-5)


def test_custom_loss_and_plain_step():
  graphdef, state = nnx.split(_pair())
  smooth = lambda logits, labels: optax.softmax_cross_entropy(
      logits, optax.smooth_labels(jax.nn.one_hot(labels, C), 0.1))
  step = jax.jit(nnx_adapter.make_nnx_train_step(graphdef, loss_fn=smooth,
                                                  with_stats=False))
  _, out = step(state, _batches()[0])
  assert set(out) == {"train_loss", "train_accuracy", "num_bad_labels"}
  assert np.isfinite(out["train_loss"])


def test_dropout_in_training_off_in_eval():
  graphdef, state = nnx.split(_pair(rate=0.5))
  eval_step = jax.jit(nnx_adapter.make_nnx_eval_step(graphdef))
  batch = _batches()[0]
  one, two = eval_step(state, batch), eval_step(state, batch)
  np.testing.assert_array_equal(one["loss"], two["loss"])  # deterministic
  # The model's own graphdef works too, with the model's state.
  model, _ = nnx.merge(graphdef, state)
  model_def, model_state = nnx.split(model)
  alone = nnx_adapter.make_nnx_eval_step(model_def)(model_state, batch)
  np.testing.assert_allclose(alone["loss"], one["loss"], rtol=1e-6)
  # Two training steps from the same state differ only by Dropout's stream,
  # whose counter is part of the state.
  step = jax.jit(nnx_adapter.make_nnx_train_step(graphdef))
  state1, a = step(state, batch)
  _, b = step(state1, batch)
  _, a_again = step(state, batch)
  np.testing.assert_array_equal(a["loss"], a_again["loss"])
  assert not np.allclose(a["loss"], b["loss"])


def test_bad_use_is_refused():
  model, optimizer = _pair()
  graphdef, state = nnx.split(model)
  with pytest.raises(ValueError, match=r"nnx.split\(\(model, optimizer\)\)"):
    nnx_adapter.make_nnx_train_step(graphdef)(state, _batches()[0])
  graphdef, state = nnx.split((model, optimizer))
  with pytest.raises(ValueError, match="rng is not allowed in an NNX step"):
    nnx_adapter.make_nnx_train_step(graphdef)(state, _batches()[0],
                                              jax.random.key(0))


def test_recording_on_8_devices_equals_1_device():
  out = {}
  for devices in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:devices])
    graphdef, state = nnx.split(_pair())
    step = jax.jit(trajectory.make_recording_step(
        nnx_adapter.make_nnx_train_step(graphdef), mesh=mesh),
                   donate_argnums=(0, 1))
    state = sharding.replicate(state, mesh)
    traj = sharding.replicate(trajectory.init_trajectory(N, 2), mesh)
    for epoch in range(2):
      for batch in _batches():
        state, traj, _ = step(state, traj, sharding.shard_batch(batch, mesh),
                              epoch)
    out[devices] = jax.tree.map(np.asarray, traj)
  trajectory.check_visits(out[8]["visits"])
  np.testing.assert_array_equal(out[8]["correct"], out[1]["correct"])
  np.testing.assert_allclose(out[8]["loss"], out[1]["loss"], rtol=1e-5,
                             atol=1e-6)
