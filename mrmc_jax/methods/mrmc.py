"""MRMC: scores from the stored warm-up trajectory, then the top per class.

The fit itself is `scoring.mrmc_scores`; this module reads it from the
warm-up artefacts with the options that only change how the warm-up is read
(loss source, the number of warm-up epochs used, the burn-in, the fit), so
the ablations of MRMC's open choices all share one warm-up. Using the first
`epochs` columns of an R-epoch warm-up is the same as an `epochs`-epoch
warm-up when the warm-up runs the truncated training schedule (the default,
`train.warmup_schedule="truncated"`).

Under label noise (`fit_filter`, docs/results/label_noise.md): the fit
splits each example's fitted initial loss `q` into the part the warm-up
removed (MRMC's score) and the part it left, `q * w**-R`. A flipped label's
loss drops about as much as a clean example's but stays high, so MRMC's top
holds flipped labels; `fit_filter=f` leaves out the examples whose fitted
remaining loss is above `f * log(C)` (a uniform prediction's loss) before
the top is taken. 0.75 was chosen on a noisy validation split; 0 (off) is
the default and the paper's method.

Under class-conditional noise (look-alike classes flipped, `aum_filter`,
docs/results/class_conditional_noise.md) a flipped label ends the warm-up
with a moderate loss (the model gives it about the share of flipped labels
in its class), below `fit_filter`'s limit, so the fitted remaining loss
does not find it; but the model prefers the look-alike class through the
warm-up. `aum_filter=t` leaves out the examples whose AUM (the mean logit
margin over the warm-up epochs, Pleiss et al. 2020; `methods.aum`) is
below `t` before the top is taken. None (off) is the default.
"""

from typing import Any

import numpy as np

from mrmc_jax import scoring
from mrmc_jax import trajectory
from mrmc_jax.methods import aum
from mrmc_jax.methods import common
from mrmc_jax.methods import options as options_lib

# The options `mrmc_from_artefacts` reads.
MRMC_OPTIONS = common.TRAJECTORY_OPTIONS + tuple(o.name for o in (
    options_lib.declare(
        options_lib.Option(
            "skip_epochs", int, 0, "burn-in epochs left out of the fit (at "
            "least 2 fitted epochs must remain)", low=0, paper=0),
        options_lib.Option(
            "score", str, "literal", "literal q(1-w^-R) or observed "
            "q(w^-r1 - w^-rR)", choices=scoring.SCORES, paper="literal"),
        options_lib.Option(
            "max_initial_ratio", float, scoring.DEFAULT_MAX_INITIAL_RATIO,
            "bound on the fitted epoch-0 loss, as a multiple of the row's "
            "largest observed loss", low=1.0, low_open=True, paper=1e30),
        options_lib.Option(
            "epoch_offset", int, 1, "1 fits r = 1..R (paper), 0 fits "
            "r = 0..R-1", low=0, paper=1),
    )))


def mrmc_from_artefacts(art: dict[str, np.ndarray],
                        opts: options_lib.SelectionOptions) -> np.ndarray:
  """MRMC scores from the stored trajectory, after the burn-in.

  Args:
    art: warm-up artefacts (`common.trajectory_view`).
    opts: reads `MRMC_OPTIONS`.

  Returns:
    float32 `[N]` MRMC scores, higher = keep; -inf for a row that some
    fitted epoch never recorded (`scoring.mrmc_scores(..., visits=)`).

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
  visits = np.asarray(traj["visits"][:, s:]).astype(np.int32)
  # A row with an epoch never recorded scores -inf (left out, warned).
  return np.asarray(scoring.mrmc_scores(
      traj["loss"][:, s:], visits > 0, visits=visits, score=opts.score,
      max_initial_ratio=opts.max_initial_ratio,
      epoch_offset=opts.epoch_offset + s))


# The noise filters (`filter_keep`): from MRMC's fit and from the margins.
FILTER_OPTIONS = tuple(o.name for o in options_lib.declare(
    options_lib.Option(
        "fit_filter", float, 0.0, "drop examples whose fitted loss at the "
        "last warm-up epoch, q w^-R, exceeds fit_filter * log(C) (taken only "
        "if a class runs short); 0: off", low=0.0, absent=0.0),
    options_lib.Option(
        "aum_filter", float, None, "drop examples whose AUM (mean logit "
        "margin over the warm-up epochs) is below aum_filter (taken only if "
        "a class runs short); None: off", optional=True, absent=None),
))


def filter_needs(opts: options_lib.SelectionOptions) -> frozenset[str]:
  """The artefacts the filters need beyond the trajectory (`extra_needs`)."""
  return frozenset({"margin"}) if opts.aum_filter is not None else frozenset()


def fit_from_artefacts(art: dict[str, np.ndarray],
                       opts: options_lib.SelectionOptions
                       ) -> tuple[np.ndarray, Any, Any, np.ndarray]:
  """MRMC's fit of the stored trajectory, as `mrmc_from_artefacts` reads it.

  The same source, epochs, burn-in, bound and offset as the score.

  Args:
    art: warm-up artefacts (`common.trajectory_view`).
    opts: reads `MRMC_OPTIONS`.

  Returns:
    `(loss [N, R''], q [N], w [N], epochs [R''])`: the fitted columns (after
    the burn-in), the fit (`scoring.fit_exponential_decay`) and the epoch
    index r of each column.
  """
  traj = common.trajectory_view(art, opts)
  s = opts.skip_epochs
  loss = traj["loss"][:, s:]
  q, w = scoring.fit_exponential_decay(
      loss, traj["visits"][:, s:] > 0,
      max_initial_ratio=opts.max_initial_ratio,
      epoch_offset=opts.epoch_offset + s)
  return loss, q, w, np.arange(loss.shape[1]) + opts.epoch_offset + s


def fitted_curves(art: dict[str, np.ndarray],
                  opts: options_lib.SelectionOptions
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The plot hook of MRMC's rows (`common.Method.curves`).

  Args:
    art: warm-up artefacts (`common.trajectory_view`).
    opts: reads `MRMC_OPTIONS`.

  Returns:
    `(loss [N, R''], fitted [N, R''], epochs [R''])`: the fitted columns,
    the fitted curve at each, and the warm-up epoch (1-based) of each.
  """
  loss, q, w, epochs = fit_from_artefacts(art, opts)
  fitted = np.asarray(scoring.fitted_curve(q, w, epochs))
  return loss, fitted, np.arange(loss.shape[1]) + 1 + opts.skip_epochs


def fitted_last_loss(art: dict[str, np.ndarray],
                     opts: options_lib.SelectionOptions) -> np.ndarray:
  """MRMC's fitted loss at the last warm-up epoch, `q * w**-R_last`.

  The part of the fitted initial loss `q` that the warm-up has not removed:
  `q = mrmc score + fitted_last_loss` for the literal score
  (`fit_from_artefacts`).

  Args:
    art: warm-up artefacts (`common.trajectory_view`).
    opts: reads `MRMC_OPTIONS`.

  Returns:
    float64 `[N]`, >= 0.
  """
  _, q, w, epochs = fit_from_artefacts(art, opts)
  return np.asarray(scoring.fitted_curve(q, w, epochs[-1:]),
                    np.float64)[:, 0]


def fit_filter_keep(art: dict[str, np.ndarray],
                    opts: options_lib.SelectionOptions,
                    num_classes: int) -> np.ndarray | None:
  """Which examples MRMC's fit says are being learned (`fit_filter`).

  An example whose fitted loss at the last warm-up epoch is still above
  `fit_filter * log(C)` (log C: the loss of a uniform prediction) is not
  being learned by the warm-up; under label noise these are mostly the
  flipped examples (docs/results/label_noise.md). Such examples are left
  out of the selection and taken only when a class has too few others.

  Args:
    art: warm-up artefacts.
    opts: reads `fit_filter` and `MRMC_OPTIONS`.
    num_classes: C >= 2.

  Returns:
    bool `[N]`, True = may be selected; None when `fit_filter` is 0 (off).

  Raises:
    ValueError: `fit_filter` > 0 with fewer than 2 classes.
  """
  if not opts.fit_filter:
    return None
  if num_classes < 2:
    raise ValueError(f"fit_filter={opts.fit_filter} needs at least 2 classes "
                     f"(num_classes={num_classes}): its limit is "
                     "fit_filter * log(C).")
  limit = float(opts.fit_filter) * float(np.log(num_classes))
  return fitted_last_loss(art, opts) <= limit


def aum_filter_keep(art: dict[str, np.ndarray],
                    opts: options_lib.SelectionOptions) -> np.ndarray | None:
  """Which examples the warm-up's margins say are labelled as it predicts.

  An example whose AUM (its mean logit margin `z_y - max_{k != y} z_k` over
  the warm-up epochs, `aum.aum_scores`; the same source and epochs as the
  fit, burn-in included) is below `aum_filter` is one the warm-up kept
  assigning to another class: under look-alike label noise mostly a flipped
  label, whose loss stays below `fit_filter`'s limit (so that keeps it).
  Such examples are left out and taken only when a class has too few
  others.

  Args:
    art: warm-up artefacts with the margins (`trajectory.MARGIN_FIELDS`).
    opts: reads `aum_filter` and the trajectory options.

  Returns:
    bool `[N]`, True = may be selected; None when `aum_filter` is None.

  Raises:
    ValueError: the warm-up did not record the margins.
  """
  if opts.aum_filter is None:
    return None
  margins = common.trajectory_view(art, opts, trajectory.MARGIN_FIELDS)
  return np.asarray(aum.aum_scores(margins["margin"])) >= opts.aum_filter


def filter_keep(art: dict[str, np.ndarray],
                opts: options_lib.SelectionOptions,
                num_classes: int) -> np.ndarray | None:
  """The examples both filters allow (`fit_filter`, `aum_filter`).

  Args:
    art: warm-up artefacts.
    opts: reads `FILTER_OPTIONS` and `MRMC_OPTIONS`.
    num_classes: C.

  Returns:
    bool `[N]`, True = may be selected; None when both filters are off.
  """
  keeps = [k for k in (fit_filter_keep(art, opts, num_classes),
                       aum_filter_keep(art, opts)) if k is not None]
  if not keeps:
    return None
  return np.logical_and.reduce(keeps)


def row_keys(art: dict[str, np.ndarray], opts: options_lib.SelectionOptions,
             num_classes: int) -> tuple[np.ndarray, np.ndarray, bool]:
  """MRMC's scores and selection keys, row by row (any subset of rows).

  Args:
    art: warm-up artefacts, `[n, ...]` rows of any examples.
    opts: reads `MRMC_OPTIONS` and `FILTER_OPTIONS`.
    num_classes: C.

  Returns:
    `(scores float32 [n], keys float32 [n], class_balanced)`: the keys are
    the scores, -inf where a filter leaves the example out (taken only if a
    class runs short); the quotas per class unless `opts.class_balanced`
    is False.
  """
  scores = mrmc_from_artefacts(art, opts)
  keep = filter_keep(art, opts, num_classes)
  keys = scores if keep is None else np.where(keep, scores, -np.inf)
  return scores, np.asarray(keys, np.float32), bool(opts.class_balanced)


_select = common.select_by_row_keys(row_keys)


METHOD = common.Method(
    "mrmc", frozenset({"trajectory"}),
    options_lib.COMMON + MRMC_OPTIONS + FILTER_OPTIONS,
    _select, "maximum reduction as maximum contribution; keep highest",
    extra_needs=filter_needs, role="proposed", curves=fitted_curves,
    row_keys=row_keys)
