"""Users' methods that break the selection contract, one way each.

Loaded by tests from `selection.plugins=tests/plugins/broken_methods.py`:
`methods.select` must refuse each with one line naming the method.
"""

import numpy as np

from mrmc_jax import methods


def _short_mask(art, labels, ratio, *, num_classes, opts, cache):
  del art, ratio, num_classes, opts, cache  # Unused.
  n = labels.shape[0] - 100
  return np.zeros(n, np.float32), np.arange(n) < n // 2


def _empty_mask(art, labels, ratio, *, num_classes, opts, cache):
  del art, ratio, num_classes, opts, cache  # Unused.
  n = labels.shape[0]
  return np.zeros(n, np.float32), np.zeros(n, bool)


def _wrong_count(art, labels, ratio, *, num_classes, opts, cache):
  del art, num_classes, opts, cache  # Unused.
  n = labels.shape[0]
  return np.zeros(n, np.float32), np.arange(n) < int(ratio * n) + 3


for _name, _fn in (("short_mask", _short_mask), ("empty_mask", _empty_mask),
                   ("wrong_count", _wrong_count)):
  methods.register(methods.Method(_name, frozenset(), (), _fn,
                                  "breaks the selection contract"))
