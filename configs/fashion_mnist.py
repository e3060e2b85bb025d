"""Full Fashion-MNIST from Debian's dataset-fashion-mnist; an MLP on CPU.

The config is `mrmc_jax/configs/fashion_mnist.py`, installed with the package;
this file is what `--config=configs/fashion_mnist.py` names.
"""

from mrmc_jax.configs.fashion_mnist import get_config

__all__ = ["get_config"]
