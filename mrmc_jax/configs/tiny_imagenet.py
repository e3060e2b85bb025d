"""Tiny-ImageNet (64x64, 200 classes) from a local folder: ResNet-34,
batch 256, 100 epochs, weight decay 1e-4, R = 20.

Set `--config.dataset.data_dir` to the folder holding `train/<class>/...` and
`val/<class>/...` (see README.md for converting the official layout).
"""

from mrmc_jax.configs import base


def get_config(arg: str | None = None):
  config = base.get_base_config()
  config.dataset.name = "folder"
  config.model.name = "resnet34_tiny"
  config.selection.warmup_epochs = 20
  config.train.epochs = 100
  config.train.batch_size = 256
  config.train.learning_rate = 0.1
  config.train.weight_decay = 1e-4
  config.train.augment = True
  return base.apply_overrides(config, arg)
