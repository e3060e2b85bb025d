"""Geometry baselines as DeepCore: k-center greedy and herding on features.

Both are greedy procedures on the warm-up's penultimate features (the
`features` artefact, `[N, D]`), as DeepCore's `kcentergreedy.py` and
`herding.py` (PatrickZH/DeepCore) run them on the embedding of a model
trained for `selection_epochs`. With class quotas (`class_balanced`, the
default, DeepCore's `main.py` default `--balance True`) each class runs
its own greedy on its own rows with its quota; without, one greedy over all
N with the global budget. Quotas are the selector's (largest remainder, so
the core-set has exactly `floor(ratio * N)` examples; DeepCore rounds
`fraction * n_c` per class).

Distances are DeepCore's `euclidean_dist` up to the square root (a
monotone map, so the same picks): `max(|x|^2 + |c|^2 - 2 x.c, 1e-12)`.
Each step computes the distances of one centre to every row of the group,
so memory is O(n D) per group, never `[N, N]`. Groups are packed into
chunks of a fixed shape `[groups, rows, D]` (rows rounded up to a multiple
of 128, padding masked), each chunk one jitted loop over the budget:
the greedy runs on the accelerator, one compilation per run. Ties go to
the lowest id of the group, as `torch.argmax` (first maximum) does there.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import validation
from mrmc_jax.methods import common

Array = jax.Array

# Floats of one chunk's features (the fixed chunk shape is chosen so that
# groups * rows * D is at most this, or one group).
CHUNK_ELEMENTS = 2**26
_ROW_MULTIPLE = 128
HERDING_PICKS = ("farthest", "closest")


def _sq_dist(x, xx, c):
  """Squared distances `[G, n]` of centres `c [G, D]` to rows `x [G, n, D]`."""
  cc = jnp.sum(c * c, axis=-1)
  dot = jnp.einsum("gnd,gd->gn", x, c, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(xx + cc[:, None] - 2.0 * dot, 1e-12)


@jax.jit
def _kcenter_chunk(x, valid, budgets, first):
  """Pick steps `[G, n]` (-1: not picked) of k-center greedy per group."""
  g, n, _ = x.shape
  rows = jnp.arange(g)
  xx = jnp.sum(x * x, axis=-1)
  step = jnp.full((g, n), -1, jnp.int32)
  step = step.at[rows, first].set(jnp.where(budgets > 0, 0, -1))
  # Distance to the nearest centre; -inf for picked rows and padding
  # (DeepCore keeps -1 there), so argmax never returns them.
  mins = jnp.where(valid & (step < 0), _sq_dist(x, xx, x[rows, first]),
                   -jnp.inf)

  def body(i, carry):
    step, mins = carry
    p = jnp.argmax(mins, axis=1)
    active = i < budgets
    step = step.at[rows, p].set(jnp.where(active, i, step[rows, p]))
    new = jnp.minimum(mins, _sq_dist(x, xx, x[rows, p]))
    new = new.at[rows, p].set(-jnp.inf)
    return step, jnp.where(active[:, None], new, mins)

  return jax.lax.fori_loop(1, jnp.max(budgets), body, (step, mins))[0]


@functools.partial(jax.jit, static_argnames=("closest",))
def _herding_chunk(x, valid, budgets, closest):
  """Pick steps `[G, n]` (-1: not picked) of herding per group."""
  g, n, _ = x.shape
  rows = jnp.arange(g)
  xx = jnp.sum(x * x, axis=-1)
  mu = (jnp.sum(jnp.where(valid[..., None], x, 0.0), axis=1)
        / jnp.maximum(jnp.sum(valid, axis=1), 1)[:, None])

  def body(i, carry):
    step, total = carry
    dist = _sq_dist(x, xx, (i + 1) * mu - total)
    free = valid & (step < 0)
    p = jnp.argmax(jnp.where(free, -dist if closest else dist, -jnp.inf),
                   axis=1)
    active = i < budgets
    step = step.at[rows, p].set(jnp.where(active, i, step[rows, p]))
    total = total + jnp.where(active[:, None], x[rows, p], 0.0)
    return step, total

  step = jnp.full((g, n), -1, jnp.int32)
  total = jnp.zeros_like(mu)
  return jax.lax.fori_loop(0, jnp.max(budgets), body, (step, total))[0]


def _greedy(features: Any, labels: Any, ratio: float, *, num_classes: int,
            class_balanced: bool, run_chunk,
            chunk_elements: int) -> tuple[np.ndarray, np.ndarray]:
  """Runs `run_chunk(x, valid, budgets, group_sizes)` on fixed-shape chunks
  of groups; returns `(scores, mask)` (scores: `quota - step` of the picked,
  0 for the others)."""
  common.check_ndim(features, 2, "features", "[N, D]")
  common.check_ratio_labels(labels, ratio, num_classes, features=features)
  common.check_finite(features, "features")
  validation.check_int(chunk_elements, "chunk_elements")
  feats = np.asarray(features, np.float32)
  n, dim = feats.shape
  groups, quotas, num_groups = common.group_quotas(
      np.asarray(labels, np.int64), num_classes, ratio, class_balanced)
  by_group = np.argsort(groups, kind="stable")  # ascending ids per group
  sizes = np.bincount(groups, minlength=num_groups)
  starts = np.cumsum(sizes) - sizes
  rows = max(_ROW_MULTIPLE, -(-int(sizes.max()) // _ROW_MULTIPLE)
             * _ROW_MULTIPLE)
  per_chunk = int(max(1, min(num_groups, chunk_elements // (rows * dim))))
  scores = np.zeros(n, np.float32)
  mask = np.zeros(n, bool)
  for g0 in range(0, num_groups, per_chunk):
    gs = np.arange(g0, g0 + per_chunk)
    real = gs < num_groups
    gs = np.minimum(gs, num_groups - 1)
    size = np.where(real, sizes[gs], 0)
    slot = np.arange(rows)
    valid = slot[None, :] < size[:, None]
    ids = np.where(valid, by_group[np.minimum(starts[gs][:, None] + slot,
                                              n - 1)], 0)
    x = np.where(valid[..., None], feats[ids], 0.0).astype(np.float32)
    budgets = np.where(real, quotas[gs], 0).astype(np.int32)
    step = np.asarray(run_chunk(jnp.asarray(x), jnp.asarray(valid),
                                jnp.asarray(budgets), size))
    picked = valid & (step >= 0)
    mask[ids[picked]] = True
    scores[ids[picked]] = (budgets[:, None] - step)[picked]
  return scores, mask


def kcenter_select(features: Any, labels: Any, ratio: float, *,
                   num_classes: int, class_balanced: bool = True,
                   seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS
                   ) -> tuple[np.ndarray, np.ndarray]:
  """k-center greedy (Sener & Savarese 2018) as DeepCore's `k_center_greedy`.

  Per group (class, or all N): the first centre is
  `np.random.RandomState(seed).randint(0, n_g)` (DeepCore reseeds numpy
  with the run's seed before every call), then `quota - 1` times the row
  farthest from its nearest centre (first maximum) joins the centres.

  Args:
    features: float `[N, D]`.
    labels: int `[N]` in `[0, num_classes)`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    class_balanced: per-class greedy and quotas (default), or one global.
    seed: int >= 0, the first centre.
    chunk_elements: the fixed chunk's size in floats (module docstring).

  Returns:
    `(scores float32 [N], mask bool [N])`; scores are `quota - step` of
    the picked rows (the first centre highest), 0 elsewhere.

  Raises:
    ValueError: on bad shapes, NaN/inf features, bad labels or ratio.
  """
  validation.check_seed(seed)

  def run(x, valid, budgets, size):
    first = np.array([np.random.RandomState(seed).randint(0, s) if s else 0
                      for s in size], np.int32)
    return _kcenter_chunk(x, valid, budgets, jnp.asarray(first))

  return _greedy(features, labels, ratio, num_classes=num_classes,
                 class_balanced=class_balanced, run_chunk=run,
                 chunk_elements=chunk_elements)


def herding_select(features: Any, labels: Any, ratio: float, *,
                   num_classes: int, class_balanced: bool = True,
                   pick: str = "farthest",
                   chunk_elements: int = CHUNK_ELEMENTS
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Herding (Welling 2009) as DeepCore's `Herding.herding`.

  Per group, with `mu` the group's mean feature and `S_t` the sum of the
  `t` rows picked so far, step `t` picks among the unpicked rows the one
  at the largest (`pick="farthest"`, DeepCore's code: `torch.argmax` of
  the distances) or smallest (`"closest"`, herding as its paper and
  Welling describe it: the pick that brings the picked rows' mean closest
  to `mu`) distance to `(t + 1) mu - S_t`; ties to the first row.
  Deterministic.

  Args:
    features: float `[N, D]`.
    labels: int `[N]` in `[0, num_classes)`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    class_balanced: per-class herding and quotas (default), or one global.
    pick: "farthest" (DeepCore's code, default) or "closest".
    chunk_elements: the fixed chunk's size in floats (module docstring).

  Returns:
    `(scores float32 [N], mask bool [N])` as `kcenter_select`.

  Raises:
    ValueError: on bad shapes, NaN/inf features, bad labels, ratio or pick.
  """
  if pick not in HERDING_PICKS:
    raise ValueError(f"pick={pick!r} is not allowed: use one of "
                     f"{', '.join(HERDING_PICKS)}.")

  def run(x, valid, budgets, size):
    del size  # Unused.
    return _herding_chunk(x, valid, budgets, closest=pick == "closest")

  return _greedy(features, labels, ratio, num_classes=num_classes,
                 class_balanced=class_balanced, run_chunk=run,
                 chunk_elements=chunk_elements)


def _select_kcenter(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  return kcenter_select(art["features"], labels, ratio,
                        num_classes=num_classes,
                        class_balanced=opts.class_balanced, seed=opts.seed)


def _select_herding(art, labels, ratio, *, num_classes, opts, cache):
  del cache  # Unused.
  return herding_select(art["features"], labels, ratio,
                        num_classes=num_classes,
                        class_balanced=opts.class_balanced,
                        pick=opts.herding_pick)


OPTIONS = common.declare(
    common.Option("pick", str, "farthest", "herding: the row "
                  "farthest from (t+1) mu - S_t (DeepCore's code) or the "
                  "closest (the herding of its paper)",
                  choices=HERDING_PICKS, absent="farthest",
                  legacy="herding_pick"),
    scope="herding")

KCENTER = common.Method(
    "kcenter", frozenset({"features"}), common.COMMON,
    _select_kcenter, "k-center greedy on warm-up features (DeepCore)")
HERDING = common.Method(
    "herding", frozenset({"features"}), (common.COMMON[0],) + OPTIONS,
    _select_herding, "herding on warm-up features (DeepCore)")
