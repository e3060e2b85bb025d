"""The embedded offline default: UCI digits, an MLP, about a minute on 2 CPUs.

Run: python experiments/main.py --config=configs/default.py --workdir=DIR
"""

from mrmc_jax.configs import base


def get_config(arg: str | None = None):
  config = base.get_base_config()
  config.dataset.name = "digits"
  config.model.name = "mlp"
  config.selection.method = "mrmc"
  config.selection.ratio = 0.3
  config.selection.warmup_epochs = 10
  config.train.epochs = 30
  config.train.batch_size = 64
  config.train.learning_rate = 0.05
  config.train.augment = False
  return base.apply_overrides(config, arg)
