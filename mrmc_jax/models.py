"""Flax Linen image classifiers: MLP, a small CNN and the ResNet family.

All models take NHWC float images and share one call signature:

  logits = model.apply(variables, x, train=...)
  logits, features = model.apply(variables, x, train=..., return_features=True)

`logits` is float32 [B, num_classes] whatever the compute dtype, and
`features` is the float32 penultimate representation [B, D]: exactly the input
of the final `nn.Dense` submodule, which is always named `head`. MRMC-R trains
a proxy output layer on these features, so `params['head']` applied to
`features` reproduces `logits`.

The ResNets follow flax `examples/imagenet/models.py` (BatchNorm with momentum
0.9 and epsilon 1e-5, zero-initialised last BatchNorm scale in each residual
branch, bias-free convolutions, `dtype` for bf16 compute with float32
parameters) and differ only in the stem, chosen by input resolution:

  * `cifar`: 3x3 conv, stride 1, no max-pool. The standard CIFAR ResNet for
    32x32 inputs (ResNet-18 has 11,173,962 parameters with 10 classes).
  * `tiny`: the same 3x3 stride-1 stem without max-pool, for 64x64 inputs
    (Tiny-ImageNet); it is a separate name so that configs state the intended
    resolution. Full resolution into stage 1 keeps an 8x8 final map, where
    the ImageNet stem (overall stride 4) would leave 2x2; a 7x7 stride-1 stem
    would add parameters and FLOPs for no gain at this size. The cost is 4x
    the FLOPs of the same network on 32x32.
  * `imagenet`: 7x7 conv stride 2 and 3x3 max-pool stride 2, for 224x224.

MLP and SmallCNN have no BatchNorm, so their variables hold only `params`;
the ResNets also have a `batch_stats` collection.
"""

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any
Dtype = Any


def _outputs(logits: jax.Array, features: jax.Array, return_features: bool):
  """Casts to float32 and packs the (logits[, features]) return value."""
  # Losses, softmax and selection scores need float32 even under bf16
  # compute. Casting bf16 features up is exact, so a bf16 `head` applied to
  # them (which casts back down) still reproduces the logits bit for bit.
  logits = jnp.asarray(logits, jnp.float32)
  if return_features:
    return logits, jnp.asarray(features, jnp.float32)
  return logits


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, SAME padding, on [B, H, W, C].

  Same values as `nn.max_pool(x, (2, 2), (2, 2), "SAME")`, written as a
  reshape and max because the generic pool's gradient (select-and-scatter)
  is very slow on XLA:CPU: ~85% of a SmallCNN training step at batch 128 on
  28x28, against ~5x less this way. Ties share the gradient instead of
  going to the first maximum; after ReLU ties are zeros, whose gradient
  ReLU blocks anyway.
  """
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    # SAME padding: odd sizes get one -inf row/column at the end.
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)),
                constant_values=-jnp.inf)
    h, w = h + h % 2, w + w % 2
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class MLP(nn.Module):
  """Multi-layer perceptron on flattened inputs.

  Attributes:
    num_classes: number of output logits.
    hidden: widths of the ReLU hidden layers; the last one is the feature
      dimension D (D is the flattened input size when `hidden` is empty).
    dtype: compute dtype (parameters stay float32).
  """
  num_classes: int
  hidden: Sequence[int] = (512, 256)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, return_features: bool = False):
    """Applies the MLP.

    Args:
      x: float [B, ...] inputs, e.g. NHWC images; flattened per example.
      train: unused (no dropout or BatchNorm); kept for a uniform signature.
      return_features: also return the penultimate representation.

    Returns:
      float32 logits [B, num_classes], or (logits, features [B, D]).
    """
    del train
    x = jnp.reshape(x, (x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x)
      x = nn.relu(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return _outputs(logits, x, return_features)


class SmallCNN(nn.Module):
  """Two 3x3 conv layers (32, 64 filters) and a 128-unit dense layer.

  Each conv is followed by ReLU and a 2x2 max-pool while the spatial size is
  at least 4, so 28x28 inputs end at 7x7 (3136 features into the dense
  layer) and 8x8 inputs at 2x2; smaller maps skip the pool rather than
  collapse to nothing.

  Attributes:
    num_classes: number of output logits.
    dtype: compute dtype (parameters stay float32).
  """
  num_classes: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, return_features: bool = False):
    """Applies the CNN.

    Args:
      x: float [B, H, W, C] images; [B, H, W] is read as one channel.
      train: unused (no dropout or BatchNorm); kept for a uniform signature.
      return_features: also return the penultimate representation.

    Returns:
      float32 logits [B, num_classes], or (logits, features [B, 128]).
    """
    del train
    if x.ndim == 3:
      x = x[..., None]
    for i, filters in enumerate((32, 64)):
      x = nn.Conv(filters, (3, 3), dtype=self.dtype, name=f"conv_{i}")(x)
      x = nn.relu(x)
      if min(x.shape[1:3]) >= 4:
        x = max_pool_2x2(x)
    x = jnp.reshape(x, (x.shape[0], -1))
    x = nn.relu(nn.Dense(128, dtype=self.dtype, name="dense")(x))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
    return _outputs(logits, x, return_features)


class ResNetBlock(nn.Module):
  """Basic ResNet block: two 3x3 convs (ResNet-18/34)."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: Tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x, mask=None):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = self.norm()(y, mask=mask)
    y = self.act(y)
    y = self.conv(self.filters, (3, 3))(y)
    # Zero scale makes each block start as the identity, which stabilises
    # early training (Goyal et al., 2017), as in the flax example.
    y = self.norm(scale_init=nn.initializers.zeros_init())(y, mask=mask)

    if residual.shape != y.shape:
      residual = self.conv(
          self.filters, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual, mask=mask)

    return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck ResNet block: 1x1, 3x3, 1x1 convs, 4x expansion (ResNet-50+).
  """
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable
  strides: Tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x, mask=None):
    residual = x
    y = self.conv(self.filters, (1, 1))(x)
    y = self.norm()(y, mask=mask)
    y = self.act(y)
    y = self.conv(self.filters, (3, 3), self.strides)(y)
    y = self.norm()(y, mask=mask)
    y = self.act(y)
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y, mask=mask)

    if residual.shape != y.shape:
      residual = self.conv(
          self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual, mask=mask)

    return self.act(residual + y)


STEMS = ("cifar", "tiny", "imagenet")


class ResNet(nn.Module):
  """ResNet v1.5 (stride in the 3x3 conv) with a resolution-specific stem.

  Attributes:
    stage_sizes: number of blocks in each stage; stage i > 0 halves the
      spatial size and has `num_filters * 2**i` filters.
    block_cls: `ResNetBlock` or `BottleneckResNetBlock`.
    num_classes: number of output logits.
    stem: one of `STEMS` (see the module docstring).
    num_filters: filters of the stem and the first stage.
    dtype: compute dtype; parameters and BatchNorm statistics stay float32.
    act: activation function.
    bn_axis_name: set to the mapped axis name (e.g. "batch") to average
      BatchNorm statistics across devices under `pmap`/`shard_map`. Leave
      None under plain `jit`, where a sharded batch already gives global
      statistics.
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int
  stem: str = "imagenet"
  num_filters: int = 64
  dtype: Dtype = jnp.float32
  act: Callable = nn.relu
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = True, return_features: bool = False,
               mask=None):
    """Applies the ResNet.

    Args:
      x: float [B, H, W, C] images.
      train: use batch statistics and update `batch_stats` (the caller must
        pass `mutable=['batch_stats']`); False uses the running averages.
      return_features: also return the globally average-pooled features.
      mask: optional bool [B]; in train mode, BatchNorm computes its batch
        statistics over the rows where it is True only, so padding rows of
        the last batch do not shift them.

    Returns:
      float32 logits [B, num_classes], or (logits, features [B, D]) with
      D = 8 * num_filters (basic blocks) or 32 * num_filters (bottleneck).
    """
    if self.stem not in STEMS:
      raise ValueError(f"stem={self.stem!r} is not allowed: use one of "
                       f"{', '.join(STEMS)}.")
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=self.dtype,
        axis_name=self.bn_axis_name)

    bn_mask = None if mask is None else mask[:, None, None, None]
    if self.stem == "imagenet":
      x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)],
               name="conv_init")(x)
      x = norm(name="bn_init")(x, mask=bn_mask)
      x = self.act(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    else:
      # cifar and tiny: small inputs keep full resolution into stage 1.
      x = conv(self.num_filters, (3, 3), (1, 1), padding=[(1, 1), (1, 1)],
               name="conv_init")(x)
      x = norm(name="bn_init")(x, mask=bn_mask)
      x = self.act(x)

    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = self.block_cls(self.num_filters * 2**i, strides=strides,
                           conv=conv, norm=norm, act=self.act)(
                               x, mask=bn_mask)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(
        features)
    return _outputs(logits, features, return_features)


_resnet18 = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock)
_resnet34 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=ResNetBlock)
_resnet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock)

# Constructors taking (num_classes=..., dtype=..., **kwargs).
_MODELS = {
    "mlp": MLP,
    "mlp_small": functools.partial(MLP, hidden=(128,)),
    "small_cnn": SmallCNN,
    "resnet18_cifar": functools.partial(_resnet18, stem="cifar"),
    "resnet34_cifar": functools.partial(_resnet34, stem="cifar"),
    "resnet18_tiny": functools.partial(_resnet18, stem="tiny"),
    "resnet34_tiny": functools.partial(_resnet34, stem="tiny"),
    "resnet18": functools.partial(_resnet18, stem="imagenet"),
    "resnet34": functools.partial(_resnet34, stem="imagenet"),
    "resnet50": functools.partial(_resnet50, stem="imagenet"),
}

MODEL_NAMES = tuple(_MODELS)


def create_model(name: str, num_classes: int, *, dtype: Dtype = jnp.float32,
                 **kwargs) -> nn.Module:
  """Builds a model by name.

  Args:
    name: one of `MODEL_NAMES`.
    num_classes: number of output logits.
    dtype: compute dtype, e.g. `jnp.bfloat16`; logits are float32 anyway.
    **kwargs: further module attributes, e.g. `hidden=(128,)` for "mlp" or
      `num_filters=32` for a ResNet.

  Returns:
    An unbound `nn.Module`.

  Raises:
    ValueError: `name` is not a known model.
  """
  if name not in _MODELS:
    raise ValueError(f"model name {name!r} is not allowed: use one of "
                     f"{', '.join(MODEL_NAMES)}.")
  return _MODELS[name](num_classes=num_classes, dtype=dtype, **kwargs)


_CPU_INIT_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def init_variables(model: nn.Module, rng: jax.Array,
                   image_shape: Sequence[int]) -> dict:
  """Initialises a model's variables from a dummy batch of one image.

  Args:
    model: a module from this file (or any with the same call signature).
    rng: PRNG key.
    image_shape: per-example input shape, e.g. (28, 28, 1) or (32, 32, 3).

  Returns:
    `{'params': ..., 'batch_stats': ...}`; 'batch_stats' only when the model
    has BatchNorm.
  """
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  # The initial values do not depend on the mode (BatchNorm statistics start
  # at 0/1 either way); eval mode skips computing unused batch statistics.
  init = functools.partial(model.init, train=False)
  # `init` runs once but holds a truncated-normal sampler per kernel, which
  # XLA:CPU's optimising backend compiles slowly (~10 s for a small ResNet on
  # 2 cores, 5-10x slower than unoptimised). Other backends keep defaults.
  # Options are only allowed on a top-level jit: inside another trace (jit,
  # eval_shape, vmap), where even `dummy` is a tracer, the caller's
  # compilation decides.
  traced = any(isinstance(a, jax.core.Tracer) for a in (rng, dummy))
  options = (_CPU_INIT_OPTIONS
             if jax.default_backend() == "cpu" and not traced else None)
  variables = jax.jit(init, compiler_options=options)(rng, dummy)
  return {k: variables[k] for k in ("params", "batch_stats")
          if k in variables}


def has_batch_norm(variables: dict) -> bool:
  """True when `variables` holds a non-empty 'batch_stats' collection."""
  return bool(variables.get("batch_stats"))
