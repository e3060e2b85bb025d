"""ImageNet-1k on a TPU pod slice: configs/imagenet.py scaled out.

The config is `mrmc_jax/configs/imagenet_tpu.py`, installed with the package;
this file is what `--config=configs/imagenet_tpu.py` names.
"""

from mrmc_jax.configs.imagenet_tpu import get_config

__all__ = ["get_config"]
