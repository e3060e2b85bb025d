"""Selection methods by name: what each needs from the warm-up, and its mask.

`select(method, artefacts, labels, ratio, ...)` turns the stored warm-up
artefacts into `(scores, mask)`, so one warm-up serves every method and
ratio. Artefacts are host numpy arrays:
  `loss`, `correct`, `p_true`, `el2n`, `visits`: `[N, R]` trajectories;
  `features`: `[N, D]` penultimate features at the end of warm-up;
  `grad_norms`: `[N]` per-example gradient norms at the end of warm-up.
"""

import dataclasses
from typing import Any, Optional

import numpy as np

from mrmc_jax import mrmc_r
from mrmc_jax import scoring
from mrmc_jax import selection


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
  """Every knob of every method, with defaults; see configs/base.py."""
  class_balanced: bool = True
  skip_epochs: int = 0
  score: str = "literal"
  max_initial_ratio: float = scoring.DEFAULT_MAX_INITIAL_RATIO
  epoch_offset: int = 1
  rho: float = 0.3
  gamma: float = 2.0
  score_scale: str = "none"
  proxy_learning_rate: float = 0.01
  proxy_batch_size: int = 512
  proxy_epochs: int = 10
  el2n_epochs: Optional[int] = None
  dyn_unc_window: int = 10
  ccs_beta: float = 0.1
  ccs_strata: int = 50
  ccs_score: str = "forgetting"
  d2_k: int = 10
  d2_gamma: float = 1.0
  d2_score: str = "forgetting"
  seed: int = 0


# What each method needs from the warm-up.
NEEDS: dict[str, frozenset[str]] = {
    "full": frozenset(),
    "random": frozenset(),
    "mrmc": frozenset({"trajectory"}),
    "mrmc_r": frozenset({"trajectory", "features"}),
}


def method_names() -> tuple[str, ...]:
  return tuple(NEEDS)


def check_method(method: str) -> None:
  if method not in NEEDS:
    raise ValueError(f"selection.method={method!r} is not allowed: use one "
                     f"of {', '.join(NEEDS)}.")


def needs(methods) -> frozenset[str]:
  """Union of the warm-up artefacts the given methods need."""
  out = set()
  for m in methods:
    check_method(m)
    out |= NEEDS[m]
  return frozenset(out)


def mrmc_from_artefacts(art: dict[str, np.ndarray], opts: SelectionOptions
                        ) -> np.ndarray:
  """MRMC scores from the stored trajectory, after the burn-in."""
  r = art["loss"].shape[1]
  if not 0 <= opts.skip_epochs <= r - 2:
    raise ValueError(f"selection.skip_epochs={opts.skip_epochs} is not "
                     f"allowed: it must be in [0, {r - 2}] so that at least "
                     f"2 of the {r} warm-up epochs are fitted.")
  s = opts.skip_epochs
  return np.asarray(scoring.mrmc_scores(
      art["loss"][:, s:], art["visits"][:, s:] > 0, score=opts.score,
      max_initial_ratio=opts.max_initial_ratio,
      epoch_offset=opts.epoch_offset + s))


def select(method: str,
           art: dict[str, Any],
           labels: np.ndarray,
           ratio: float,
           *,
           num_classes: int,
           opts: SelectionOptions) -> tuple[np.ndarray, np.ndarray]:
  """Scores and selects.

  Args:
    method: a name from `method_names()`.
    art: warm-up artefacts (see the module docstring).
    labels: int `[N]`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    opts: method options.

  Returns:
    `(scores float32 [N], mask bool [N])`; for `full`, all ones.
  """
  check_method(method)
  n = labels.shape[0]
  if method == "full":
    return np.ones(n, np.float32), np.ones(n, bool)
  if method == "random":
    scores = np.random.default_rng(opts.seed).random(n).astype(np.float32)
  elif method in ("mrmc", "mrmc_r"):
    scores = mrmc_from_artefacts(art, opts)
  if method == "mrmc_r":
    mask, info = mrmc_r.mrmc_r_select(
        scores, art["features"], labels, ratio, num_classes=num_classes,
        rho=opts.rho, gamma=opts.gamma,
        learning_rate=opts.proxy_learning_rate,
        batch_size=opts.proxy_batch_size, epochs=opts.proxy_epochs,
        seed=opts.seed, class_balanced=opts.class_balanced,
        score_scale=opts.score_scale)
    return np.asarray(info["phi"], np.float32), np.asarray(mask)
  mask = selection.select_mask(scores, labels, ratio, num_classes=num_classes,
                               class_balanced=opts.class_balanced)
  return np.asarray(scores, np.float32), np.asarray(mask)
