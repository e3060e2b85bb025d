"""A user's own selection method, defined outside the package.

Loaded by the runner from `selection.plugins=tests/plugins/toy_method.py`;
everything a method with one knob needs: the knob's declaration, the
select function, and one `register` call.
"""

import numpy as np

from mrmc_jax import methods
from mrmc_jax.methods import common

# Scoped to the method: `selection.toy.power`, `toy(power=2.0)`.
OPTIONS = methods.declare(methods.Option(
    "power", float, 1.0, "toy: exponent of the mean warm-up loss",
    low=0.0, low_open=True), scope="toy")


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  loss = common.trajectory_view(art, opts)["loss"]
  scores = np.mean(loss, axis=1) ** opts.toy.power
  return common.select_top(scores, labels, ratio, num_classes=num_classes,
                           class_balanced=opts.class_balanced,
                           seed=opts.seed)


METHOD = methods.register(methods.Method(
    "toy", frozenset({"trajectory"}),
    common.COMMON + OPTIONS + common.TRAJECTORY_OPTIONS,
    _select, "mean warm-up loss to a power; keep highest"))
