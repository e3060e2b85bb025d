"""CIFAR-100 with the paper's settings: CIFAR-10's config on 100 classes.

Presets as in configs/cifar10.py (`quick`, `paper`).
"""

from mrmc_jax.configs import base
from mrmc_jax.configs import cifar10


def get_config(arg: str | None = None):
  config = cifar10.get_config(arg)
  config.dataset.name = "cifar100"
  # Again, so that an explicit field in `arg` wins over the line above.
  return base.apply_overrides(config, arg, known=("quick",))
