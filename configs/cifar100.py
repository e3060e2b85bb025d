"""CIFAR-100 with the paper's settings: CIFAR-10's config on 100 classes.

The config is `mrmc_jax/configs/cifar100.py`, installed with the package; this
file is what `--config=configs/cifar100.py` names.
"""

from mrmc_jax.configs.cifar100 import get_config

__all__ = ["get_config"]
