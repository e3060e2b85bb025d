"""The warm-up's refusal of features too large to gather to one chip."""

import pytest

from mrmc_jax.runner import warmup


def test_feature_rows_refused_above_half_a_chip():
  v5e = 16 * 2**30
  warmup.check_feature_rows(1_281_167, 512, v5e)  # ImageNet: 2.4 GiB
  warmup.check_feature_rows(4_194_304, 512, v5e)  # exactly 8 GiB
  with pytest.raises(ValueError) as e:
    warmup.check_feature_rows(4_194_305, 512, v5e)
  msg = str(e.value)
  assert "\n" not in msg
  assert msg.startswith("N=4194305 is not allowed")
  assert "run up to N=4194304 here" in msg
  with pytest.raises(ValueError, match="up to N=1048576 here"):
    warmup.check_feature_rows(100_000_000, 2048, v5e)


def test_no_limit_reported_checks_nothing():
  warmup.check_feature_rows(10**9, 2048, None)


def test_device_bytes_limit_is_none_or_positive():
  got = warmup.device_bytes_limit()
  assert got is None or got > 0
