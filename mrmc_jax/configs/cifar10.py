"""CIFAR-10 with the paper's settings: ResNet-18, batch 128, 200 epochs,
SGD 0.1 momentum 0.9, weight decay 5e-4, cosine to 1e-4, R = 20.

Presets: `quick` (5 epochs, R = 2, for a smoke run on an accelerator).
"""

from mrmc_jax.configs import base


def get_config(arg: str | None = None):
  config = base.get_base_config()
  config.dataset.name = "cifar10"
  config.model.name = "resnet18_cifar"
  config.selection.warmup_epochs = 20
  config.train.epochs = 200
  config.train.batch_size = 128
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.train.schedule = "cosine"
  config.train.end_learning_rate = 1e-4
  config.train.augment = True
  if "quick" in base.presets(arg):
    config.selection.warmup_epochs = 2
    config.train.epochs = 5
  return base.apply_overrides(config, arg, known=("quick",))
