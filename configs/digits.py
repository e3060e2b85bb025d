"""UCI digits (8x8, 1,437 train / 360 test after the seeded holdout).

The config is `mrmc_jax/configs/digits.py`, installed with the package; this
file is what `--config=configs/digits.py` names.
"""

from mrmc_jax.configs.digits import get_config

__all__ = ["get_config"]
