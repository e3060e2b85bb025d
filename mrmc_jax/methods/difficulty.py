"""Difficulty scores by name, the input of CCS and D2-pruning.

`DIFFICULTY_SCORES` names them; each is read from the stored
warm-up trajectory with the same options as its own method.
"""

import numpy as np

from mrmc_jax import trajectory
from mrmc_jax.methods import aum
from mrmc_jax.methods import common
from mrmc_jax.methods import mrmc
from mrmc_jax.methods import options as options_lib
from mrmc_jax.methods import scores

# The options `difficulty` may read (MRMC's include the trajectory's).
OPTIONS = mrmc.MRMC_OPTIONS
DIFFICULTY_SCORES = ("forgetting", "el2n", "mrmc", "aum", "aum_prob")


def _forgetting(art, opts):
  return np.asarray(scores.forgetting_scores(
      common.trajectory_view(art, opts)["correct"]))


def _el2n(art, opts):
  return np.asarray(scores.el2n_scores(
      common.trajectory_view(art, opts)["el2n"]))


def _aum(key):
  def score(art, opts):  # Negated: a low AUM is hard.
    m = common.trajectory_view(art, opts, trajectory.MARGIN_FIELDS)[key]
    return -np.asarray(aum.aum_scores(m))
  return score


_SCORES = {"forgetting": _forgetting, "el2n": _el2n,
           "mrmc": mrmc.mrmc_from_artefacts,
           "aum": _aum("margin"), "aum_prob": _aum("p_margin")}


def needs(kind: str) -> frozenset[str]:
  """Artefacts beyond the trajectory that difficulty `kind` reads."""
  return frozenset({"margin"}) if kind.startswith("aum") else frozenset()


def difficulty(kind: str, art: dict[str, np.ndarray],
               opts: options_lib.SelectionOptions) -> np.ndarray:
  """Difficulty scores, higher = harder.

  Args:
    kind: one of `DIFFICULTY_SCORES`: "forgetting" (forgetting
      events), "el2n" (mean EL2N over all used epochs), "mrmc", "aum"
      (minus the mean logit margin, `aum.aum_scores`) or "aum_prob"
      (minus the mean probability margin: CCS's accumulated_margin, whose
      lowest values CCS's code drops first).
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
