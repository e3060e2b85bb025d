"""Difficulty scores by name, the input of CCS and D2-pruning.

`DIFFICULTY_SCORES` names them; each is read from the stored
warm-up trajectory with the same options as its own method.
"""

import numpy as np

from mrmc_jax.methods import common
from mrmc_jax.methods import mrmc
from mrmc_jax.methods import options as options_lib
from mrmc_jax.methods import scores

# The options `difficulty` may read (MRMC's include the trajectory's).
OPTIONS = mrmc.MRMC_OPTIONS
DIFFICULTY_SCORES = ("forgetting", "el2n", "mrmc")


def _forgetting(art, opts):
  return np.asarray(scores.forgetting_scores(
      common.trajectory_view(art, opts)["correct"]))


def _el2n(art, opts):
  return np.asarray(scores.el2n_scores(
      common.trajectory_view(art, opts)["el2n"]))


_SCORES = {"forgetting": _forgetting, "el2n": _el2n,
           "mrmc": mrmc.mrmc_from_artefacts}


def difficulty(kind: str, art: dict[str, np.ndarray],
               opts: options_lib.SelectionOptions) -> np.ndarray:
  """Difficulty scores, higher = harder.

  Args:
    kind: one of `DIFFICULTY_SCORES`: "forgetting" (forgetting
      events), "el2n" (mean EL2N over all used epochs) or "mrmc".
    art: warm-up artefacts with the trajectory.
    opts: reads `OPTIONS` (the trajectory view; MRMC's fit for "mrmc").

  Returns:
    float32 `[N]`.

  Raises:
    ValueError: on an unknown kind, or from the score's own checks.
  """
  if kind not in _SCORES:
    raise ValueError(f"difficulty={kind!r} is not allowed: use one of "
                     f"{', '.join(DIFFICULTY_SCORES)}.")
  return _SCORES[kind](art, opts)
