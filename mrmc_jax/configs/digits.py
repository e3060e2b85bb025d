"""UCI digits (8x8, 1,437 train / 360 test after the seeded holdout)."""

from mrmc_jax.configs import default


def get_config(arg: str | None = None):
  return default.get_config(arg)
