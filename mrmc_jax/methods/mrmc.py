"""MRMC: scores from the stored warm-up trajectory, then the top per class.

The fit itself is `scoring.mrmc_scores`; this module reads it from the
warm-up artefacts with the options that only change how the warm-up is read
(loss source, the number of warm-up epochs used, the burn-in, the fit), so
the ablations of MRMC's open choices all share one warm-up. Using the first
`epochs` columns of an R-epoch warm-up is the same as an `epochs`-epoch
warm-up when the warm-up runs the truncated training schedule (the default,
`train.warmup_schedule="truncated"`).
"""

import numpy as np

from mrmc_jax import scoring
from mrmc_jax.methods import common
from mrmc_jax.methods import options as options_lib

# The options `mrmc_from_artefacts` reads.
MRMC_OPTIONS = common.TRAJECTORY_OPTIONS + tuple(o.name for o in (
    options_lib.declare(
        options_lib.Option(
            "skip_epochs", int, 0, "burn-in epochs left out of the fit (at "
            "least 2 fitted epochs must remain)", low=0),
        options_lib.Option(
            "score", str, "literal", "literal q(1-w^-R) or observed "
            "q(w^-r1 - w^-rR)", choices=scoring.SCORES),
        options_lib.Option(
            "max_initial_ratio", float, scoring.DEFAULT_MAX_INITIAL_RATIO,
            "bound on the fitted epoch-0 loss, as a multiple of the row's "
            "largest observed loss", low=1.0, low_open=True),
        options_lib.Option(
            "epoch_offset", int, 1, "1 fits r = 1..R (paper), 0 fits "
            "r = 0..R-1", low=0),
    )))


def mrmc_from_artefacts(art: dict[str, np.ndarray],
                        opts: options_lib.SelectionOptions) -> np.ndarray:
  """MRMC scores from the stored trajectory, after the burn-in.

  Args:
    art: warm-up artefacts (`common.trajectory_view`).
    opts: reads `MRMC_OPTIONS`.

  Returns:
    float32 `[N]` MRMC scores, higher = keep.

  Raises:
    ValueError: on a missing source, bad `epochs` or `skip_epochs` (it must
      leave at least 2 fitted epochs).
  """
  traj = common.trajectory_view(art, opts)
  r = traj["loss"].shape[1]
  s = opts.skip_epochs
  if not 0 <= s <= r - 2:
    raise ValueError(f"skip_epochs={s} is not allowed: it must be in "
                     f"[0, {r - 2}] so that at least 2 of the {r} warm-up "
                     "epochs are fitted.")
  return np.asarray(scoring.mrmc_scores(
      traj["loss"][:, s:], traj["visits"][:, s:] > 0, score=opts.score,
      max_initial_ratio=opts.max_initial_ratio,
      epoch_offset=opts.epoch_offset + s))


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  return common.select_top(mrmc_from_artefacts(art, opts), labels, ratio,
                           num_classes=num_classes,
                           class_balanced=opts.class_balanced,
                           seed=opts.seed)


METHOD = common.Method(
    "mrmc", frozenset({"trajectory"}),
    ("class_balanced", "seed") + MRMC_OPTIONS,
    _select, "maximum reduction as maximum contribution; keep highest")
