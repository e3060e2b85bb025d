"""Loss-reduction attribution on Fashion-MNIST: stability and symmetry.

The config is `mrmc_jax/configs/attribution.py`, installed with the package;
this file is what `--config=configs/attribution.py` names.
"""

from mrmc_jax.configs.attribution import get_config

__all__ = ["get_config"]
