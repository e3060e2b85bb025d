"""Test-wide setup: quiet TensorFlow, hide accelerators from it, 8 CPU devices.

The device count must be set before JAX initialises its backends, so it lives
here, imported by pytest before any test module.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (
      _flags + " --xla_force_host_platform_device_count=8").strip()
