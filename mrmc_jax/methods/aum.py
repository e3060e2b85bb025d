"""AUM: the area under the margin (Pleiss et al. 2020), as a pruning score.

The margin of an example at an epoch is its true-class logit minus the
largest other logit (`losses.per_example_stats`'s `margin`, recorded with
the trajectory when a method needs "margin"); its AUM is the mean margin
over the recorded epochs. A low (negative) AUM marks an example the model
keeps assigning to another class: hard or mislabelled.

Direction. Pleiss et al. remove the lowest AUMs as mislabelled; as a
core-set baseline, CCS's code (haizhongzheng/Coverage-centric-coreset-
selection, README "AUM": `--coreset-key accumulated_margin
--data-score-descending 0`) sorts the accumulated margin ascending and keeps
the first: the lowest AUM, i.e. the hardest examples, like the other
difficulty baselines keep the highest EL2N or forgetting. `aum` keeps the
lowest AUM. CCS's accumulated margin is the probability margin `p_y -
max_{k != y} p_k` summed over training (one presentation per epoch, so the
sum ranks as the mean); `aum_margin=prob` uses it, `logit` (the default) is
Pleiss et al.'s. CCS's command is global (`--class-balanced 0`), and so is
the row (`aum.per_class=False`); `aum(per_class=True)` keeps
each class's quota.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import trajectory
from mrmc_jax.methods import common

Array = jax.Array

# aum_margin -> the recorded field.
MARGIN_KEYS = {"logit": "margin", "prob": "p_margin"}


def aum_scores(margins: Array) -> Array:
  """AUM: the mean margin over the recorded epochs.

  Args:
    margins: float `[N, R]`, `trajectory["margin"]` (or `["p_margin"]`).

  Returns:
    float32 `[N]`; low = hard (kept first by the `aum` method).

  Raises:
    ValueError: on a bad shape or NaN/inf margins.
  """
  common.check_ndim(margins, 2, "margins", "[N, R]")
  common.check_finite(margins, "margins")
  return jnp.mean(jnp.asarray(margins, jnp.float32), axis=1)


def margin_view(art, opts) -> Array:
  """The `[N, R']` margins the options ask for (`aum_margin`, the source
  and epochs of `common.trajectory_view`)."""
  key = MARGIN_KEYS[opts.aum_margin]
  return common.trajectory_view(art, opts, trajectory.MARGIN_FIELDS)[key]


def _rows(art, opts, num_classes):
  del num_classes  # Unused.
  aum = np.asarray(aum_scores(margin_view(art, opts)), np.float32)
  return aum, -aum, bool(opts.aum_class_balanced)


OPTIONS = common.declare(
    common.Option("margin", str, "logit", "AUM: the logit margin "
                  "(Pleiss et al.) or the probability margin (CCS's "
                  "accumulated_margin)", choices=tuple(MARGIN_KEYS),
                  absent="logit", legacy="aum_margin"),
    # The variant of CCS's command (added in 0.3.0).
    common.Option("per_class", bool, False, "AUM: each class's "
                  "quota (True) or the lowest over all N (False, CCS's "
                  "command, --class-balanced 0)", absent=True,
                  legacy="aum_class_balanced"),
    scope="aum")

METHOD = common.Method(
    "aum", frozenset({"trajectory", "margin"}),
    common.SEED + common.TRAJECTORY_OPTIONS + OPTIONS,
    common.select_by_row_keys(_rows), "lowest mean margin over warm-up "
    "epochs (AUM; as CCS's baseline)", row_keys=_rows)
