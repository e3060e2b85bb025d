"""Full Fashion-MNIST from Debian's dataset-fashion-mnist; an MLP on CPU.

Preset `tfds` reads it through tensorflow-datasets instead.
"""

from configs import base


def get_config(arg: str | None = None):
  config = base.get_base_config()
  config.dataset.name = "fashion_mnist_idx"
  if "tfds" in base.presets(arg):
    config.dataset.name = "fashion_mnist"
  config.model.name = "mlp"
  config.selection.warmup_epochs = 10
  config.train.epochs = 15
  config.train.batch_size = 256
  config.train.learning_rate = 0.1
  config.train.augment = False
  return base.apply_overrides(config, arg)
