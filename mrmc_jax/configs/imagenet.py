"""ImageNet-1k through tfds (manual download): ResNet-34, batch 256,
60 epochs, weight decay 1e-4, R = 20, 224px; a mid-epoch checkpoint every
1,000 steps (an epoch is 5,005), so a kill without notice loses minutes, not
an epoch.

Put the official tar files in `<data_dir>/downloads/manual/`.
"""

from mrmc_jax.configs import base


def get_config(arg: str | None = None):
  config = base.get_base_config()
  config.dataset.name = "imagenet2012"
  config.dataset.image_size = 224
  config.model.name = "resnet34"
  config.selection.warmup_epochs = 20
  config.train.epochs = 60
  config.train.batch_size = 256
  config.train.eval_batch_size = 256
  config.train.learning_rate = 0.1
  config.train.weight_decay = 1e-4
  config.train.augment = True
  config.train.checkpoint_every_steps = 1000
  return base.apply_overrides(config, arg)
