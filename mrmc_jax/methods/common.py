"""Helpers shared by the method families: rows, trajectory view, checks.

`Method` is one registry row (see `registry`). `trajectory_view` cuts the
stored warm-up trajectory the options ask for; `select_top` is the last step
of every score method; the `check_*` functions give the one-line ValueErrors
of the method functions (as in `validation`).
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import numpy as np

from mrmc_jax import selection
from mrmc_jax import trajectory
from mrmc_jax import validation
from mrmc_jax.methods import options as options_lib

Array = jax.Array
# A method module declares its options with these (`options` docstring).
Option = options_lib.Option
declare = options_lib.declare
# `class_balanced` and `seed`, read by every method that keeps top scores.
COMMON = options_lib.COMMON
# `seed` alone, for the methods whose own option chooses per class or not.
SEED = tuple(o for o in COMMON if o.name == "seed")

# Artefacts a method can need from the warm-up (`registry.needs` adds
# "eval_trajectory" when a trajectory method reads the evaluation pass).
# "margin" adds `trajectory.MARGIN_FIELDS` to the recorded trajectories;
# "uncertainty" is `[N, 4]` softmax scores at the end of warm-up;
# "boundary" the `[N]` distances to the decision boundary (`boundary`).
ARTEFACTS = frozenset({"trajectory", "features", "grad_norms", "margin",
                       "uncertainty", "boundary"})
# The per-epoch columns of a stored trajectory, `[N, R]` each.
# The arrays of a trajectory (recorded fields, then visit counts).
TRAJECTORY_KEYS = trajectory.KEYS
LOSS_SOURCES = ("train", "eval")
# The options `trajectory_view` reads.
TRAJECTORY_OPTIONS = tuple(o.name for o in options_lib.declare(
    options_lib.Option(
        "loss_source", str, "train", "trajectory of the training pass "
        "(train) or of an evaluation pass after each epoch (eval)",
        choices=LOSS_SOURCES, paper="train"),
    options_lib.Option(
        "epochs", int, None, "the first R' warm-up epochs used (spec only; "
        "None: all R)", low=1, optional=True, in_config=False),
))

# fn(art, labels, ratio, *, num_classes, opts, cache) -> (scores, mask).
SelectFn = Callable[..., tuple[np.ndarray, np.ndarray]]
# fn(art, opts) -> (observed [N, R''], fitted [N, R''], epochs [R'']).
CurvesFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
# How a comparison's plots draw a method (`Method.role`).
ROLES = ("peer", "proposed", "baseline", "reference")


@dataclasses.dataclass(frozen=True)
class Method:
  """One registry row: a selection method and what it needs.

  Attributes:
    name: the spec name (`mrmc`, `d2`, ...).
    needs: warm-up artefacts it reads, a subset of `ARTEFACTS`.
    options: the options it reads, as their declarations (`options.declare`
      returns them: the method's own, scoped to it, and shared ones such as
      `options.COMMON`) or their keys; stored as keys (`Option.key`).
    select: `fn(art, labels, ratio, *, num_classes, opts, cache)` returning
      `(scores float32 [N], mask bool [N])`; `art` holds the warm-up
      artefacts (`registry` docstring), `labels` int `[N]`, `opts` the
      resolved `SelectionOptions`, `cache` a dict reused across calls on the
      same artefacts (or None).
    summary: one line.
    ratio_free: the method ignores the ratio (it keeps all data: `full`,
      the reference; the runner runs it once, at ratio 1).
    extra_needs: optional `fn(opts) -> frozenset` of artefacts needed
      beyond `needs` under these options (e.g. CCS keyed by AUM needs the
      margins).
    role: how a comparison draws it, one of `ROLES`: "proposed" (solid
      lines), "peer" (the default), "baseline" (the grey reference line:
      `random`), "reference" (a horizontal line: `full`).
    label: its legend label (empty: the spec).
    curves: optional plot hook `fn(art, opts) -> (observed float [N, R''],
      fitted float [N, R''], epochs [R''])`: the per-example trajectories
      the method fitted and its fitted curves, drawn with the scores in the
      run's `plots/trajectories.png`.
    row_keys: optional `fn(art, opts, num_classes) -> (scores float32
      [n], keys float32 [n], class_balanced bool)` for a method that
      scores each example from its own rows alone and selects the highest
      `keys` under the quotas (`select_top` with that `class_balanced`
      and `opts.seed`): `art` may then hold any subset of the rows (`[n,
      ...]` each), and the runner of a multi-process job computes them
      where the rows lie and selects with `sharded_selection.select_rows`,
      never gathering the warm-up's `[N, R]` arrays. Its `select` must
      equal that (`registry_test` checks every such row).
  """
  name: str
  needs: frozenset[str]
  options: tuple[Any, ...]
  select: SelectFn
  summary: str
  ratio_free: bool = False
  extra_needs: Optional[Callable[[Any], frozenset[str]]] = None
  role: str = "peer"
  label: str = ""
  curves: Optional[CurvesFn] = None
  row_keys: Optional[Callable[..., tuple[Any, Any]]] = None

  def __post_init__(self):
    keys = tuple(o.key if isinstance(o, options_lib.Option) else o
                 for o in self.options)
    object.__setattr__(self, "options", tuple(dict.fromkeys(keys)))
    if self.role not in ROLES:
      raise ValueError(f"method {self.name!r}: role={self.role!r} is not "
                       f"allowed: use one of {', '.join(ROLES)}.")


def trajectory_view(art: dict[str, np.ndarray],
                    opts: options_lib.SelectionOptions,
                    keys: tuple[str, ...] = TRAJECTORY_KEYS
                    ) -> dict[str, np.ndarray]:
  """The `[N, R']` trajectory the options ask for: source and epochs.

  Args:
    art: warm-up artefacts with `loss`, ... `visits` (`[N, R]` each), and
      `eval_loss`, ... when the evaluation pass was recorded.
    opts: reads `loss_source` ("train" or "eval") and `epochs` (the first
      R' columns; None: all R).
    keys: the arrays wanted (e.g. `trajectory.MARGIN_FIELDS`).

  Returns:
    Dict of `keys` -> `[N, R']` arrays (views, not copies).

  Raises:
    ValueError: if the source or a key was not recorded or R' is not in
      [2, R].
  """
  prefix = "eval_" if opts.loss_source == "eval" else ""
  if prefix + "loss" not in art:
    raise ValueError(f"loss_source={opts.loss_source!r} needs the "
                     f"{prefix or 'training-pass '}trajectory, which this "
                     "warm-up did not record.")
  missing = [prefix + k for k in keys if prefix + k not in art]
  if missing:
    raise ValueError(f"the warm-up artefacts lack {missing}: the warm-up "
                     "records them only when a method needs them.")
  r = art[prefix + "loss"].shape[1]
  used = r if opts.epochs is None else opts.epochs
  if not 2 <= used <= r:
    raise ValueError(f"epochs={opts.epochs!r} is not allowed: it must be in "
                     f"[2, {r}] (the warm-up recorded {r}).")
  return {k: art[prefix + k][:, :used] for k in keys}


def select_top(scores: Any, labels: np.ndarray, ratio: float, *,
               num_classes: int, class_balanced: bool, seed: Optional[int]
               ) -> tuple[np.ndarray, np.ndarray]:
  """Keeps the highest scores under the quotas (`selection.select_mask`).

  Ties go in a random order seeded by `seed` (the run's `opts.seed`), or to
  the lower id with `seed=None`.

  Args:
    scores: float `[N]`, higher = keep.
    labels: int `[N]`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas, or the global budget.
    seed: the tie-break seed (int >= 0), or None.

  Returns:
    `(scores float32 [N], mask bool [N])` as host numpy arrays.
  """
  scores = np.asarray(scores, np.float32)
  mask = selection.select_mask_host(scores, labels, ratio,
                                    num_classes=num_classes,
                                    class_balanced=class_balanced,
                                    tie_seed=seed)
  return scores, np.asarray(mask)


def select_by_row_keys(row_keys: Callable[..., tuple[Any, Any, bool]]):
  """A method's `select` from its `row_keys` (the two cannot disagree)."""
  def select(art, labels, ratio, *, num_classes, opts, cache):
    del cache  # Unused.
    scores, keys, class_balanced = row_keys(art, opts, num_classes)
    _, mask = select_top(keys, labels, ratio, num_classes=num_classes,
                         class_balanced=class_balanced, seed=opts.seed)
    return np.asarray(scores, np.float32), mask
  # It is the method's own select: it belongs to the module of `row_keys`.
  select.__module__ = row_keys.__module__
  select.__qualname__ = f"select_by_row_keys({row_keys.__qualname__})"
  return select


def check_ndim(x: Any, ndim: int, name: str, shape_doc: str) -> None:
  """Checks that `x` has `ndim` dimensions; `shape_doc` names them."""
  if np.ndim(x) != ndim:
    raise ValueError(f"{name} has shape {np.shape(x)}; expected a {ndim}-D "
                     f"{shape_doc} array.")


def check_finite(x: Any, name: str, allow_inf: bool = False) -> None:
  """Rejects NaN (and +-inf unless `allow_inf`) in a concrete array."""
  if not validation.is_concrete(x):
    return
  a = np.asarray(x, dtype=np.float64)
  bad = np.isnan(a) if allow_inf else ~np.isfinite(a)
  if bad.any():
    what = "NaN" if allow_inf else "NaN or infinite"
    first = np.unravel_index(int(np.argmax(bad)), a.shape)
    raise ValueError(f"{name} holds {int(bad.sum())} {what} values (first at "
                     f"index {tuple(int(i) for i in first)}); they must be "
                     "finite.")


def check_number(value: Any, name: str, lo: float, hi: float,
                  lo_open: bool = False, hi_open: bool = False) -> None:
  """Checks lo <(=) value <(=) hi for a finite real scalar."""
  ok = (isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool) and np.isfinite(value))
  if ok:
    v = float(value)
    ok = ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi))
  if not ok:
    interval = (("(" if lo_open else "[") + f"{lo}, {hi}"
                + (")" if hi_open else "]"))
    raise ValueError(f"{name}={value!r} is not allowed: it must be a number "
                     f"in {interval}.")


def check_bool_matrix(x: Any, name: str) -> None:
  """Checks a `[N, R]` matrix of bools (or 0/1 ints), R >= 1."""
  check_ndim(x, 2, name, "[N, R]")
  if np.shape(x)[1] < 1:
    raise ValueError(f"{name} has shape {np.shape(x)}; it needs at least one "
                     "epoch column (R >= 1).")
  if validation.is_concrete(x):
    a = np.asarray(x)
    if a.dtype != np.bool_ and not np.isin(a, (0, 1)).all():
      raise ValueError(f"{name} holds values other than 0/1 (dtype "
                       f"{a.dtype}); it must be boolean.")


def check_ratio_labels(labels: Any, ratio: float, num_classes: int,
                       **same_length: Any) -> None:
  """Checks ratio and labels, and that the named arrays match labels' N."""
  validation.check_ratio(ratio)
  validation.check_labels(labels, num_classes)
  validation.check_same_length(labels=labels, **same_length)


def group_quotas(labels: np.ndarray, num_classes: int, ratio: float,
                 class_balanced: bool) -> tuple[np.ndarray, np.ndarray, int]:
  """Returns (group labels [N], quotas [G], G): classes, or one global group.

  The ratio and the labels are the caller's, already checked (every method
  function checks its input once, at its start).
  """
  if class_balanced:
    return (labels, selection.checked_class_quotas(
        np.asarray(labels), num_classes, ratio, None), num_classes)
  n = labels.shape[0]
  return (np.zeros(n, np.int64),
          np.array([selection.checked_budget(ratio, n)], np.int64), 1)


def within_group_position(scores: Any, groups: np.ndarray, seed: int
                          ) -> np.ndarray:
  """Position of each score within its group, ascending: 0 .. n_g - 1.

  0 is the group's lowest score and n_g - 1 its highest. Ties are ordered
  by a random permutation seeded by `seed`, so equal scores get distinct,
  reproducible positions.

  Args:
    scores: float `[N]`, finite or +-inf, no NaN.
    groups: int `[N]` group ids >= 0.
    seed: int >= 0.

  Returns:
    int64 `[N]`.
  """
  s = np.asarray(scores, np.float64)
  g = np.asarray(groups, np.int64)
  tie = np.random.default_rng(seed).permutation(s.shape[0])
  # The order of np.lexsort((tie, s, g)) in two stable sorts: the examples
  # in tie order (the inverse permutation, O(N)), then by score, then by
  # group (a radix sort when the ids fit in int16). 2.2x faster than the
  # lexsort at 1.28M examples and 1000 classes, the same positions.
  by_tie = np.empty_like(tie)
  by_tie[tie] = np.arange(tie.shape[0])
  order = by_tie[np.argsort(s[by_tie], kind="stable")]
  keys = g[order]
  if keys.size and keys.max() < 2**15:
    keys = keys.astype(np.int16)
  order = order[np.argsort(keys, kind="stable")]
  sizes = np.bincount(g)
  starts = np.cumsum(sizes) - sizes
  pos = np.empty(s.shape[0], np.int64)
  pos[order] = np.arange(s.shape[0]) - starts[g[order]]
  return pos


def sample_by_weight(log_weights: Any, labels: np.ndarray, ratio: float, *,
                     num_classes: int, class_balanced: bool, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Weighted sampling without replacement, with the exact quotas.

  Gumbel-top-k: the keys `log w_i + G_i` (G i.i.d. standard Gumbel, seeded)
  kept top-k under the quotas (`select_top`) are a sample without
  replacement in which each next pick is drawn with probability
  proportional to `w_i` among the remaining examples (the law of numpy's
  `choice(p=w / sum(w), replace=False)`). Examples with `w = 0` (log -inf)
  are taken only when a class has too few others, in a seeded random order.

  Args:
    log_weights: float `[N]` log-weights, -inf allowed, no NaN or +inf.
    labels: int `[N]`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas, or the global budget.
    seed: int >= 0 (the Gumbel noise and the ties).

  Returns:
    `(keys float32 [N], mask bool [N])`.
  """
  lw = np.asarray(log_weights, np.float64)
  if np.isnan(lw).any() or np.isposinf(lw).any():
    raise ValueError("log_weights holds NaN or +inf; weights must be finite "
                     "and >= 0.")
  gumbel = np.random.default_rng(seed).gumbel(size=lw.shape[0])
  keys = np.where(np.isfinite(lw), lw + gumbel, -np.inf).astype(np.float32)
  return select_top(keys, labels, ratio, num_classes=num_classes,
                    class_balanced=class_balanced, seed=seed)


def check_p_true_windows(p_true: Any, window: Any, method: str) -> None:
  """Checks `p_true [N, R]` (R >= 2, finite) and a window >= 2."""
  check_ndim(p_true, 2, "p_true", "[N, R]")
  validation.check_int(window, "window", minimum=2)
  if np.shape(p_true)[1] < 2:
    raise ValueError(f"p_true has shape {np.shape(p_true)}; {method} needs "
                     "at least 2 epochs (R >= 2).")
  check_finite(p_true, "p_true")
