"""Tiny-ImageNet (64x64, 200 classes) from a local folder: ResNet-34, batch
256, 100 epochs, weight decay 1e-4, R = 20.

The config is `mrmc_jax/configs/tiny_imagenet.py`, installed with the package;
this file is what `--config=configs/tiny_imagenet.py` names.
"""

from mrmc_jax.configs.tiny_imagenet import get_config

__all__ = ["get_config"]
