"""Selection methods by name: what each needs from the warm-up, and its mask.

`select(spec, artefacts, labels, ratio, ...)` turns stored warm-up artefacts
into `(scores, mask)`, so one warm-up serves every method and ratio.
Artefacts are host numpy arrays:
  `loss`, `correct`, `p_true`, `el2n`, `visits`: `[N, R]` training-pass
    trajectories (always recorded: they cost nothing);
  `eval_loss`, ... `eval_visits`: the same from a separate evaluation pass
    after each epoch (recorded only if a method uses `loss_source=eval`);
  `features`: `[N, D]` penultimate features at the end of warm-up;
  `grad_norms`: `[N]` per-example gradient norms at the end of warm-up.

A method spec is a name with optional option overrides, e.g. `mrmc`,
`mrmc(loss_source=eval)` or `mrmc(skip_epochs=2;score=observed)`. Options
that only change how the warm-up is read (loss source, burn-in, the number
of warm-up epochs used, the fit) are applied at selection time, so the
ablations of MRMC's open choices all share one warm-up. Using the first
`epochs` columns of an R-epoch warm-up is the same as an `epochs`-epoch
warm-up when the warm-up runs the truncated training schedule (the default,
`train.warmup_schedule="truncated"`).
"""

import ast
import dataclasses
from typing import Any, Iterable, Optional

import numpy as np

from mrmc_jax import baselines
from mrmc_jax import mrmc_r
from mrmc_jax import scoring
from mrmc_jax import selection

LOSS_SOURCES = ("train", "eval")
DIFFICULTY_SCORES = ("forgetting", "el2n", "mrmc")


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
  """Every knob of every method, with defaults; see configs/base.py."""
  class_balanced: bool = True
  loss_source: str = "train"
  epochs: Optional[int] = None       # warm-up epochs used (None: all R)
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
  el2n_epochs: Optional[int] = None  # last k epochs of the window (None: all)
  dyn_unc_window: int = 10
  ccs_beta: float = 0.1
  ccs_strata: int = 50
  ccs_score: str = "forgetting"
  d2_k: int = 10
  d2_gamma: float = 1.0
  d2_gamma_reverse: float = 0.1
  d2_score: str = "forgetting"
  seed: int = 0


_OWN = {
    "full": frozenset(),
    "mrmc": frozenset({"trajectory"}),
    "mrmc_r": frozenset({"trajectory", "features"}),
}


def method_names() -> tuple[str, ...]:
  """All method names: MRMC's, then the peers'."""
  return ("mrmc", "mrmc_r", "full") + baselines.method_names()


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """Splits `name(key=value;...)` into the name and its overrides."""
  spec = spec.strip()
  name, _, rest = spec.partition("(")
  overrides = {}
  if rest:
    if not rest.endswith(")"):
      raise ValueError(f"method spec {spec!r} is not allowed: use "
                       "name(key=value;key=value).")
    fields = {f.name for f in dataclasses.fields(SelectionOptions)}
    for item in filter(None, rest[:-1].split(";")):
      key, eq, value = (x.strip() for x in item.partition("="))
      if not eq or key not in fields:
        raise ValueError(f"option {item!r} in method spec {spec!r} is not "
                         f"allowed: use key=value with a key from "
                         f"{', '.join(sorted(fields))}.")
      try:
        overrides[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[key] = value
  if name not in method_names():
    raise ValueError(f"selection.method={name!r} is not allowed: use one of "
                     f"{', '.join(method_names())}.")
  return name, overrides


def resolve(spec: str, opts: SelectionOptions
            ) -> tuple[str, SelectionOptions]:
  """The method name and its options (defaults, then the spec's overrides)."""
  name, overrides = parse_spec(spec)
  opts = dataclasses.replace(opts, **overrides)
  if opts.loss_source not in LOSS_SOURCES:
    raise ValueError(f"loss_source={opts.loss_source!r} is not allowed: use "
                     f"one of {', '.join(LOSS_SOURCES)}.")
  for key in ("ccs_score", "d2_score"):
    if getattr(opts, key) not in DIFFICULTY_SCORES:
      raise ValueError(f"{key}={getattr(opts, key)!r} is not allowed: use "
                       f"one of {', '.join(DIFFICULTY_SCORES)}.")
  return name, opts


def check_method(spec: str) -> None:
  parse_spec(spec)


def _base_needs(name: str) -> frozenset[str]:
  if name in _OWN:
    return _OWN[name]
  return baselines.get_method(name).needs


def needs(specs: Iterable[str],
          opts: SelectionOptions = SelectionOptions()) -> frozenset[str]:
  """Union of the warm-up artefacts that the given method specs need."""
  out = set()
  for spec in specs:
    name, o = resolve(spec, opts)
    n = set(_base_needs(name))
    if name in ("ccs", "d2"):
      n.add("trajectory")
    if "trajectory" in n and o.loss_source == "eval":
      n.add("eval_trajectory")
    out |= n
  return frozenset(out)


def trajectory_view(art: dict[str, np.ndarray], opts: SelectionOptions
                    ) -> dict[str, np.ndarray]:
  """The `[N, R']` trajectory the options ask for: source and epochs."""
  prefix = "eval_" if opts.loss_source == "eval" else ""
  if prefix + "loss" not in art:
    raise ValueError(f"loss_source={opts.loss_source!r} needs the "
                     f"{prefix or 'training-pass '}trajectory, which this "
                     "warm-up did not record.")
  r = art[prefix + "loss"].shape[1]
  used = r if opts.epochs is None else opts.epochs
  if not 2 <= used <= r:
    raise ValueError(f"epochs={opts.epochs!r} is not allowed: it must be in "
                     f"[2, {r}] (the warm-up recorded {r}).")
  keys = ("loss", "correct", "p_true", "el2n", "visits")
  return {k: art[prefix + k][:, :used] for k in keys}


def mrmc_from_artefacts(art: dict[str, np.ndarray], opts: SelectionOptions
                        ) -> np.ndarray:
  """MRMC scores from the stored trajectory, after the burn-in."""
  traj = trajectory_view(art, opts)
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


def _difficulty(kind: str, art, opts) -> np.ndarray:
  traj = trajectory_view(art, opts)
  if kind == "forgetting":
    return np.asarray(baselines.forgetting_scores(traj["correct"]))
  if kind == "el2n":
    return np.asarray(baselines.el2n_scores(traj["el2n"]))
  return mrmc_from_artefacts(art, opts)


def select(spec: str,
           art: dict[str, Any],
           labels: np.ndarray,
           ratio: float,
           *,
           num_classes: int,
           opts: SelectionOptions,
           cache: Optional[dict[str, Any]] = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """Scores and selects.

  Args:
    spec: a method spec (module docstring).
    art: warm-up artefacts (module docstring).
    labels: int `[N]`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    opts: default options; the spec's overrides apply on top.
    cache: optional dict reused across calls on the same artefacts (D2's
      kNN graph is built once for every ratio).

  Returns:
    `(scores float32 [N], mask bool [N])`. For `full`, all ones. For methods
    that select by a procedure (CCS, D2) the scores are their difficulty
    input.
  """
  name, opts = resolve(spec, opts)
  n = labels.shape[0]
  cb = opts.class_balanced
  if name == "full":
    return np.ones(n, np.float32), np.ones(n, bool)
  if name in ("mrmc", "mrmc_r"):
    scores = mrmc_from_artefacts(art, opts)
    if name == "mrmc_r":
      mask, info = mrmc_r.mrmc_r_select(
          scores, art["features"], labels, ratio, num_classes=num_classes,
          rho=opts.rho, gamma=opts.gamma,
          learning_rate=opts.proxy_learning_rate,
          batch_size=opts.proxy_batch_size, epochs=opts.proxy_epochs,
          seed=opts.seed, class_balanced=cb, score_scale=opts.score_scale)
      return np.asarray(info["phi"], np.float32), np.asarray(mask)
  elif name == "random":
    scores = baselines.random_scores(n, opts.seed)
  elif name == "el2n":
    el2n = trajectory_view(art, opts)["el2n"]
    epochs = (None if opts.el2n_epochs is None else
              list(range(el2n.shape[1] - opts.el2n_epochs, el2n.shape[1])))
    scores = baselines.el2n_scores(el2n, epochs)
  elif name == "grand":
    scores = baselines.grand_scores(art["grad_norms"])
  elif name == "forgetting":
    scores = baselines.forgetting_scores(trajectory_view(art, opts)["correct"])
  elif name == "dyn_unc":
    p = trajectory_view(art, opts)["p_true"]
    scores = baselines.dyn_unc_scores(p, window=min(opts.dyn_unc_window,
                                                    p.shape[1]))
  elif name == "moderate":
    scores = baselines.moderate_scores(art["features"], labels,
                                       num_classes=num_classes)
  elif name == "ccs":
    scores = _difficulty(opts.ccs_score, art, opts)
    mask = baselines.ccs_select(scores, labels, ratio,
                                num_classes=num_classes, class_balanced=cb,
                                beta=opts.ccs_beta,
                                num_strata=opts.ccs_strata, seed=opts.seed)
    return np.asarray(scores, np.float32), np.asarray(mask)
  elif name == "d2":
    scores = _difficulty(opts.d2_score, art, opts)
    cache = {} if cache is None else cache
    key = ("d2_graph", opts.d2_k, cb)
    if key not in cache:
      cache[key] = baselines.knn_graph(art["features"], k=opts.d2_k,
                                       labels=labels if cb else None)
    mask = baselines.d2_select(
        None, scores, labels, ratio, num_classes=num_classes,
        class_balanced=cb, k=opts.d2_k, gamma_forward=opts.d2_gamma,
        gamma_reverse=opts.d2_gamma_reverse, graph=cache[key])
    return np.asarray(scores, np.float32), np.asarray(mask)
  else:  # pragma: no cover - parse_spec rejects unknown names
    raise AssertionError(name)
  mask = selection.select_mask_host(np.asarray(scores, np.float32), labels, ratio,
                               num_classes=num_classes, class_balanced=cb)
  return np.asarray(scores, np.float32), np.asarray(mask)
