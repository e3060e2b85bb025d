"""ImageNet-1k through tfds (manual download): ResNet-34, batch 256, 60 epochs,
weight decay 1e-4, R = 20, 224px; a mid-epoch checkpoint every 1,000 steps
(an epoch is 5,005), so a kill without notice loses minutes, not an epoch.

The config is `mrmc_jax/configs/imagenet.py`, installed with the package; this
file is what `--config=configs/imagenet.py` names.
"""

from mrmc_jax.configs.imagenet import get_config

__all__ = ["get_config"]
