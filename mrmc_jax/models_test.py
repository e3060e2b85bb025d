"""Tests for mrmc_jax.models.

Full-size ResNets are only checked through `jax.eval_shape` (tracing, no
compilation): XLA compiles convolutions slowly on CPU. Numerical checks run
on MLP, SmallCNN, one resnet18_cifar forward pass and a ResNet shrunk
through `create_model` kwargs, and `init` is compiled once per model, which
keeps the file to seconds.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax import models
from mrmc_jax import train_step

RESNETS = {
    # name: (image shape, feature dim)
    "resnet18_cifar": ((32, 32, 3), 512),
    "resnet34_cifar": ((32, 32, 3), 512),
    "resnet18_tiny": ((64, 64, 3), 512),
    "resnet34_tiny": ((64, 64, 3), 512),
    "resnet18": ((64, 64, 3), 512),
    "resnet34": ((64, 64, 3), 512),
    "resnet50": ((64, 64, 3), 2048),
}


def _num_params(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _images(shape, batch=2, seed=0):
  # numpy, not jax.random: each new shape would compile a sampler (seconds).
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((batch, *shape), np.float32))


def _head_logits(model, variables, features):
  """Applies the model's `head` params on its features, as MRMC-R does."""
  head = nn.Dense(model.num_classes, dtype=model.dtype)
  return head.apply({"params": variables["params"]["head"]}, features)


def _small_resnet(num_classes=3, dtype=jnp.float32):
  # Two stages of one block and 4 filters: same code path, cheap to compile.
  return models.create_model("resnet18_cifar", num_classes, dtype=dtype,
                              stage_sizes=(1, 1), num_filters=4)


@functools.lru_cache(maxsize=None)
def _init(name, shape):
  """Returns (float32 model, variables), cached across tests.

  Compiling `init` is the slowest step on CPU (a truncated-normal sampler per
  kernel), and bf16 models reuse the float32 variables.
  """
  model = (_small_resnet() if name == "small_resnet"
           else models.create_model(name, 7))
  return model, models.init_variables(model, jax.random.key(0), shape)


@pytest.mark.parametrize("name,shape", [
    ("mlp", (28, 28, 1)), ("small_cnn", (28, 28, 1)), ("small_cnn", (8, 8, 1))])
def test_small_models_shapes_and_head(name, shape):
  model, variables = _init(name, shape)
  assert set(variables) == {"params"}
  assert not models.has_batch_norm(variables)

  @jax.jit
  def run(v, x):
    outputs = train_step.module_apply_fn(model)(v, x, train=True,
                                 return_features=True)
    return outputs, model.apply(v, x, train=False)

  ((logits, features), stats), plain = run(variables, _images(shape))
  assert stats is None
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert features.shape == (2, 256 if name == "mlp" else 128)
  np.testing.assert_allclose(
      _head_logits(model, variables, features), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(plain, logits, rtol=1e-6, atol=1e-6)


def test_small_cnn_accepts_missing_channel_axis():
  model, variables = _init("small_cnn", (28, 28, 1))
  without, with_ = jax.jit(
      lambda v, x: (model.apply(v, x[..., 0]), model.apply(v, x)))(
          variables, _images((28, 28, 1)))
  np.testing.assert_array_equal(without, with_)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 5, 3)])
def test_max_pool_2x2_matches_flax(shape):
  x = _images(shape[1:], batch=shape[0])
  expected = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(jax.jit(models.max_pool_2x2)(x), expected)


def test_mlp_hidden_kwarg():
  model = models.create_model("mlp", 5, hidden=(16,))
  variables = jax.eval_shape(
      lambda rng: models.init_variables(model, rng, (4, 4, 1)),
      jax.random.key(0))
  _, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, return_features=True), variables,
      jax.ShapeDtypeStruct((2, 4, 4, 1), jnp.float32))
  assert features.shape == (2, 16)


@pytest.mark.parametrize("name", list(RESNETS))
def test_resnet_shapes(name):
  shape, dim = RESNETS[name]
  model = models.create_model(name, 10)
  variables = jax.eval_shape(
      lambda rng: models.init_variables(model, rng, shape), jax.random.key(0))
  assert set(variables) == {"params", "batch_stats"}
  assert "head" in variables["params"]
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  for train in (True, False):
    (logits, features), stats = jax.eval_shape(
        lambda v, x, train=train: train_step.module_apply_fn(model)(
            v, x, train=train, return_features=True), variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert features.shape == (2, dim) and features.dtype == jnp.float32
    assert (stats is not None) == train


@pytest.mark.parametrize("name,count", [
    ("resnet18_cifar", 11_173_962),
    # torchvision's counts for the ImageNet models (1000 classes).
    ("resnet18", 11_689_512),
    ("resnet50", 25_557_032),
])
def test_param_counts(name, count):
  num_classes = 10 if name.endswith("cifar") else 1000
  model = models.create_model(name, num_classes)
  variables = jax.eval_shape(
      lambda rng: models.init_variables(model, rng, (32, 32, 3)),
      jax.random.key(0))
  assert _num_params(variables["params"]) == count


def test_resnet18_cifar_forward():
  # Real forward pass of the full model; the variables come from numpy on
  # the eval_shape structure because compiling its `init` takes ~7 s on CPU
  # (init_variables itself is exercised on the smaller models).
  model = models.create_model("resnet18_cifar", 10)
  shapes = jax.eval_shape(
      lambda rng: models.init_variables(model, rng, (32, 32, 3)),
      jax.random.key(0))
  rng = np.random.default_rng(0)
  variables = {
      "params": jax.tree.map(
          lambda s: 0.05 * rng.standard_normal(s.shape, np.float32),
          shapes["params"]),
      "batch_stats": jax.tree.map(
          lambda s: np.ones(s.shape, np.float32), shapes["batch_stats"]),
  }
  assert models.has_batch_norm(variables)
  (logits, features), stats = jax.jit(
      lambda v, x: train_step.module_apply_fn(model)(v, x, train=False,
                                      return_features=True))(
                                          variables, _images((32, 32, 3)))
  assert stats is None
  assert logits.shape == (2, 10) and features.shape == (2, 512)
  assert np.isfinite(logits).all() and np.abs(features).max() > 0
  np.testing.assert_allclose(
      _head_logits(model, variables, features), logits, rtol=1e-5, atol=1e-5)


def test_batch_norm_train_vs_eval():
  model, variables = _init("small_resnet", (8, 8, 3))
  assert set(variables) == {"params", "batch_stats"}
  assert models.has_batch_norm(variables)
  run = jax.jit(
      lambda v, x, train: train_step.module_apply_fn(model)(v, x, train=train),
      static_argnums=2)
  x = _images((8, 8, 3), batch=4)
  # Same example 0, different companions (same shape: no recompilation).
  x_other = jnp.concatenate([x[:1], _images((8, 8, 3), batch=3, seed=1)])

  # Eval: deterministic, per-example (no batch dependence), no stats update.
  eval_out, stats = run(variables, x, False)
  assert stats is None
  np.testing.assert_array_equal(run(variables, x, False)[0], eval_out)
  other, _ = run(variables, x_other, False)
  np.testing.assert_allclose(other[0], eval_out[0], rtol=1e-5, atol=1e-6)

  # Train: batch statistics, so example 0 depends on its companions, and the
  # running averages move by (1 - momentum) towards the batch statistics.
  train_out, new_stats = run(variables, x, True)
  assert train_out.shape == (4, 3)
  assert (jax.tree.structure(new_stats)
          == jax.tree.structure(variables["batch_stats"]))
  np.testing.assert_array_equal(variables["batch_stats"]["bn_init"]["mean"],
                                0.0)
  conv_out = nn.Conv(4, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False).apply(
      {"params": variables["params"]["conv_init"]}, x)
  np.testing.assert_allclose(new_stats["bn_init"]["mean"],
                             0.1 * conv_out.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  other, _ = run(variables, x_other, True)
  assert not np.allclose(other[0], train_out[0], atol=1e-6)


def test_train_step_gradients_flow():
  model, variables = _init("small_resnet", (8, 8, 3))
  x, y = _images((8, 8, 3), batch=2), jnp.array([0, 2])

  def loss_fn(params):
    logits, stats = train_step.module_apply_fn(model)(
        {"params": params, "batch_stats": variables["batch_stats"]}, x,
        train=True)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), stats

  grads, stats = jax.jit(jax.grad(loss_fn, has_aux=True))(variables["params"])
  assert stats is not None
  assert float(jnp.abs(grads["head"]["kernel"]).sum()) > 0
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name,shape", [
    ("mlp", (28, 28, 1)), ("small_cnn", (8, 8, 1)),
    ("small_resnet", (8, 8, 3))])
def test_bf16_compute_gives_float32_outputs(name, shape):
  # bf16 only changes the compute dtype, so the float32 variables fit.
  _, variables = _init(name, shape)
  if name == "small_resnet":
    model = _small_resnet(dtype=jnp.bfloat16)
  else:
    model = models.create_model(name, 7, dtype=jnp.bfloat16)
  bf16_init = jax.eval_shape(
      lambda rng: models.init_variables(model, rng, shape), jax.random.key(0))
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(bf16_init["params"]))
  (logits, features), _ = jax.jit(
      lambda v, x: train_step.module_apply_fn(model)(v, x, train=True,
                                      return_features=True))(
                                          variables, _images(shape))
  assert logits.dtype == jnp.float32 and features.dtype == jnp.float32
  # The bf16 features are cast up exactly, so a bf16 head reproduces them.
  np.testing.assert_allclose(_head_logits(model, variables, features), logits,
                             rtol=1e-2, atol=1e-2)


def test_unknown_model_name():
  with pytest.raises(ValueError, match="resnet18_cifar") as info:
    models.create_model("resnet19", 10)
  message = str(info.value)
  assert "\n" not in message
  assert all(name in message for name in models.MODEL_NAMES)


def test_unknown_stem():
  model = models.create_model("resnet18", 10, stem="huge")
  with pytest.raises(ValueError, match="stem"):
    jax.eval_shape(lambda rng: models.init_variables(model, rng, (8, 8, 3)),
                   jax.random.key(0))


def test_batch_norm_mask_ignores_padding_rows():
  model = _small_resnet()
  variables = models.init_variables(model, jax.random.key(0), (8, 8, 3))
  x = _images((8, 8, 3), batch=3, seed=1)
  padded = jnp.concatenate([x, 100.0 * jnp.ones((2, 8, 8, 3))])
  mask = jnp.array([True, True, True, False, False])
  ref, ref_stats = model.apply(variables, x, train=True,
                               mutable=["batch_stats"])
  out, stats = model.apply(variables, padded, train=True, mask=mask,
                           mutable=["batch_stats"])
  np.testing.assert_allclose(out[:3], ref, rtol=1e-4, atol=1e-5)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      stats, ref_stats)
