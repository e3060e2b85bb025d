"""CIFAR-10 with the paper's settings: ResNet-18, batch 128, 200 epochs, SGD
0.1 momentum 0.9, weight decay 5e-4, cosine to 1e-4, R = 20.

The config is `mrmc_jax/configs/cifar10.py`, installed with the package; this
file is what `--config=configs/cifar10.py` names.
"""

from mrmc_jax.configs.cifar10 import get_config

__all__ = ["get_config"]
