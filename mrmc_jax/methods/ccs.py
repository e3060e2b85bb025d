"""CCS: coverage-centric core-set selection (Zheng et al. 2023).

A selection procedure on difficulty scores (`difficulty.difficulty`, by
`ccs_score`): drop the hardest by a drop key (`ccs.drop`), then fill the
quota stratum by stratum. The mask keeps exactly the per-class quotas
(`selection.class_quotas`) when class-balanced, or the global budget
`selection.budget(ratio, N)`.

The row's defaults follow the authors' code (haizhongzheng/Coverage-centric-
coreset-selection, `train.py --coreset-mode stratified` and `core/data/
Coreset.py:mislabel_mask, stratified_sampling`, commit b37f166): the key and
the drop key are the accumulated probability margin (`aum_prob`; README
"CCS with AUM"), the drop takes the lowest margins over all N and the strata
are filled over all N (`ccs.per_class=False`). `ccs(drop=score)`
drops by the key itself and `ccs(per_class=True)` works within
each class's quota (the library's earlier rule, now variants).
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import difficulty

Array = jax.Array

_EPS = 1e-9


def _ccs_allocate(sizes: np.ndarray, quotas: np.ndarray) -> np.ndarray:
  """CCS Algorithm 1 budget split, for all groups at once.

  Strata are visited from the sparsest up (ties: lower stratum first); each
  non-empty one takes `min(size, remaining // remaining non-empty strata)`.
  This never leaves budget over when `quota <= sum(sizes)`: once a stratum
  is not exhausted, the later (larger) strata can each absorb the even share,
  which grows by at most one per step.

  Args:
    sizes: int `[G, K]` stratum sizes.
    quotas: int `[G]`, each <= the row sum.

  Returns:
    int `[G, K]` takes, each row summing to its quota.
  """
  order = np.argsort(sizes, axis=1, kind="stable")
  sorted_sizes = np.take_along_axis(sizes, order, axis=1)
  remaining = quotas.astype(np.int64).copy()
  strata_left = (sorted_sizes > 0).sum(axis=1)
  takes = np.zeros_like(sorted_sizes)
  for t in range(sizes.shape[1]):
    size = sorted_sizes[:, t]
    nonempty = size > 0
    share = remaining // np.maximum(strata_left, 1)
    takes[:, t] = np.where(nonempty, np.minimum(size, share), 0)
    remaining -= takes[:, t]
    strata_left -= nonempty
  if np.any(remaining):
    raise AssertionError(f"CCS allocation left {remaining} unassigned.")
  out = np.zeros_like(takes)
  np.put_along_axis(out, order, takes, axis=1)
  return out


def ccs_select(scores: Array,
               labels: Array,
               ratio: float,
               *,
               num_classes: int,
               class_balanced: bool = True,
               beta: float = 0.1,
               num_strata: int = 50,
               seed: int = 0,
               drop_scores: Optional[Array] = None) -> Array:
  """Coverage-centric core-set selection (Zheng et al. 2023, Algorithm 1).

  1. Mislabel guard: drop the hardest `floor(beta * n)` examples (highest
     `drop_scores`, default `scores`; ties in the order of the keyed hash
     `selection.tie_keys(id, seed)`), per class when `class_balanced`
     (n = class size), else globally. If that leaves fewer examples than the
     quota, fewer are dropped (`n - quota`), i.e. beta is reduced just enough
     for the quota to be met (e.g. ratio 0.95 with beta 0.1).
  2. Split the remaining scores' range `[min, max]` into `num_strata`
     equal-width strata `[lo + i w, lo + (i + 1) w)`, the maximum in the last
     one (all in the first if the range is empty).
  3. Fill the quota from the sparsest non-empty stratum up: each takes
     `min(its size, remaining // remaining non-empty strata)` (`_ccs_allocate`),
     sampled uniformly without replacement.
  With `class_balanced`, steps 1-3 run within each class on its quota from
  `selection.class_quotas`; otherwise once over all N with
  `selection.budget(ratio, N)`. Vectorised over classes and examples; the
  only Python loop is over the K strata.

  Args:
    scores: float `[N]` difficulty scores, higher = harder (e.g. EL2N,
      forgetting, AUM negated).
    labels: int `[N]` in `[0, num_classes)`.
    ratio: fraction to keep, in (0, 1].
    num_classes: C.
    class_balanced: per-class quotas (default) or one global budget.
    beta: hard fraction to drop, in [0, 1).
    num_strata: K >= 1.
    seed: int >= 0 for the within-stratum sampling and the drop's ties.
    drop_scores: optional float `[N]`, higher = dropped first (CCS's code:
      the negated accumulated margin); None: `scores`.

  Returns:
    bool `[N]` mask with exactly the per-class quotas (or the global budget).

  Raises:
    ValueError: on bad shapes, NaN/inf scores, bad ratio, beta or num_strata.
  """
  common.check_ndim(scores, 1, "scores", "[N]")
  common.check_ratio_labels(labels, ratio, num_classes, scores=scores)
  common.check_finite(scores, "scores")
  common.check_number(beta, "beta", 0.0, 1.0, hi_open=True)
  validation.check_int(num_strata, "num_strata")
  validation.check_seed(seed)
  s = np.asarray(scores, np.float64)
  if drop_scores is None:
    drop = s
  else:
    common.check_ndim(drop_scores, 1, "drop_scores", "[N]")
    common.check_finite(drop_scores, "drop_scores")
    drop = np.asarray(drop_scores, np.float64)
    if drop.shape != s.shape:
      raise ValueError(f"drop_scores has shape {drop.shape}; it must be "
                       f"{s.shape}, like scores.")
  group, quotas, num_groups = common.group_quotas(
      np.asarray(labels, np.int64), num_classes, ratio, class_balanced)
  n = s.shape[0]
  ids = np.arange(n)
  sizes = np.bincount(group, minlength=num_groups)
  starts = np.cumsum(sizes) - sizes

  # 1) Rank within group from hardest by the drop key, ties by the keyed
  # hash of the id; drop the first n_drop of each group.
  n_drop = np.minimum(np.floor(beta * sizes + _EPS).astype(np.int64),
                      sizes - quotas)
  ties = np.asarray(selection.tie_keys(ids, seed))
  order = np.lexsort((ties, -drop, group))
  rank = np.empty(n, np.int64)
  rank[order] = ids - starts[group[order]]
  kept = rank >= n_drop[group]

  # 2) Equal-width strata over each group's kept range.
  lo = np.full(num_groups, np.inf)
  hi = np.full(num_groups, -np.inf)
  np.minimum.at(lo, group[kept], s[kept])
  np.maximum.at(hi, group[kept], s[kept])
  span = np.where(hi > lo, hi - lo, 1.0)[group]
  stratum = np.floor((s - lo[group]) * num_strata / span)
  stratum = np.clip(np.nan_to_num(stratum), 0, num_strata - 1).astype(np.int64)
  cell = group * num_strata + stratum
  cell_sizes = np.bincount(cell[kept], minlength=num_groups * num_strata
                           ).reshape(num_groups, num_strata)

  # 3) Budget per stratum, then a uniform sample: the `take` smallest random
  # keys of each (group, stratum) cell.
  takes = _ccs_allocate(cell_sizes, quotas).reshape(-1)
  keys = np.random.default_rng(seed).permutation(n)
  kept_ids = ids[kept]
  kept_cell = cell[kept]
  by_cell = kept_ids[np.lexsort((keys[kept_ids], kept_cell))]
  flat_sizes = cell_sizes.reshape(-1)
  cell_starts = np.cumsum(flat_sizes) - flat_sizes
  pos = np.arange(by_cell.size) - cell_starts[cell[by_cell]]
  mask = np.zeros(n, bool)
  mask[by_cell[pos < takes[cell[by_cell]]]] = True
  return jnp.asarray(mask)


def _select(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  scores = difficulty.difficulty(opts.ccs_score, art, opts)
  drop = (None if opts.ccs_drop == "score" else
          difficulty.difficulty(opts.ccs_drop, art, opts))
  mask = ccs_select(scores, labels, ratio, num_classes=num_classes,
                    class_balanced=opts.ccs_class_balanced,
                    beta=opts.ccs_beta, num_strata=opts.ccs_strata,
                    seed=opts.seed, drop_scores=drop)
  # The scores are the difficulty input.
  return np.asarray(scores, np.float32), np.asarray(mask)


OPTIONS = common.declare(
    common.Option("beta", float, 0.1, "fraction of the hardest "
                       "examples dropped first", low=0.0, high=1.0,
                       high_open=True, legacy="ccs_beta"),
    common.Option("strata", int, 50, "number of difficulty strata",
                       low=1, legacy="ccs_strata"),
    # Not "score": that is MRMC's option, which the difficulty reads.
    common.Option("difficulty", str, "aum_prob", "the difficulty "
                       "input (CCS's code: aum_prob)",
                       choices=difficulty.DIFFICULTY_SCORES,
                       legacy="ccs_score"),
    # The variants of CCS's own rule (added in 0.3.0; `legacy` keeps the
    # key the method reads).
    common.Option("drop", str, "aum_prob", "CCS: the key of the "
                  "beta drop, its hardest first (CCS's code: the lowest "
                  "accumulated margin, aum_prob); score: the difficulty "
                  "itself", choices=("score",) + difficulty.DIFFICULTY_SCORES,
                  legacy="ccs_drop"),
    common.Option("per_class", bool, False, "CCS: drop and "
                  "stratify within each class's quota (True) or over all "
                  "N (False, CCS's code)", absent=True,
                  legacy="ccs_class_balanced"),
    scope="ccs")

METHOD = common.Method(
    "ccs", frozenset({"trajectory"}),
    common.SEED + OPTIONS + difficulty.OPTIONS, _select,
    "drop the lowest-AUM beta, stratified fill from the sparsest stratum"
    " (difficulty from the trajectory)",
    extra_needs=lambda o: (difficulty.needs(o.ccs_score) |
                           difficulty.needs(o.ccs_drop)))
