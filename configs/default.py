"""The embedded offline default: UCI digits, an MLP, about a minute on 2 CPUs.

The config is `mrmc_jax/configs/default.py`, installed with the package; this
file is what `--config=configs/default.py` names.
"""

from mrmc_jax.configs.default import get_config

__all__ = ["get_config"]
