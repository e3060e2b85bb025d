"""Tests for ccs.py: cases worked out by hand, and errors."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import ccs


def test_ccs_allocation_sparse_strata_give_all_they_have():
  # Non-empty strata by size: 1, 2, 3, 10; quota 9.
  # 9 // 4 = 2 -> the size-1 stratum gives 1 (rest 8); 8 // 3 = 2 -> size 2
  # gives 2 (rest 6); 6 // 2 = 3 -> size 3 gives 3 (rest 3); the densest
  # takes the remaining 3. The empty stratum takes nothing.
  sizes = np.array([[0, 3, 1, 10, 2]])
  np.testing.assert_array_equal(
      ccs._ccs_allocate(sizes, np.array([9])), [[0, 3, 1, 3, 2]])


def _ccs_case():
  # After dropping the two hardest (100, 50) the range is [0, 4]; with 4
  # strata of width 1 the sizes are 1, 2, 5, 10 (the max 4.0 in the last).
  kept = ([0.0] + [1.2, 1.5] + [2.0, 2.1, 2.3, 2.5, 2.9]
          + [3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 4.0])
  scores = np.array(kept + [100.0, 50.0])
  stratum = np.array([0] + [1] * 2 + [2] * 5 + [3] * 10 + [-1, -1])
  perm = np.random.default_rng(0).permutation(scores.size)
  return scores[perm], stratum[perm]


def test_ccs_strata_filling_and_beta_pruning_by_hand():
  scores, stratum = _ccs_case()
  labels = np.zeros(20, np.int32)
  # Budget floor(0.5 * 20) = 10 over sizes 1, 2, 5, 10: 10 // 4 = 2 -> 1
  # (all it has), 9 // 3 = 3 -> 2 (all), 7 // 2 = 3 -> 3, then 4.
  for seed in range(3):
    mask = np.asarray(ccs.ccs_select(
        scores, labels, 0.5, num_classes=1, beta=0.1, num_strata=4,
        seed=seed))
    assert mask.sum() == 10
    assert not mask[stratum == -1].any()
    np.testing.assert_array_equal(
        np.bincount(stratum[mask], minlength=4), [1, 2, 3, 4])
  # Budget 19 > 18 left after dropping 2: beta shrinks to drop only the
  # single hardest (100); 50 is kept and becomes the top of the range.
  mask = np.asarray(ccs.ccs_select(
      scores, labels, 0.95, num_classes=1, beta=0.1, num_strata=4))
  assert mask.sum() == 19
  assert not mask[scores == 100.0].any() and mask[scores == 50.0].all()


def test_ccs_seeded_sampling():
  scores, _ = _ccs_case()
  labels = np.zeros(20, np.int32)
  run = lambda seed: np.asarray(ccs.ccs_select(
      scores, labels, 0.5, num_classes=1, num_strata=4, seed=seed))
  np.testing.assert_array_equal(run(1), run(1))
  assert any(not np.array_equal(run(0), run(s)) for s in range(1, 5))


def test_ccs_exact_per_class_counts_and_per_class_pruning():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(3), [40, 25, 7])
  scores = rng.normal(size=labels.size)
  for ratio in (0.1, 0.33, 0.7, 0.95, 1.0):
    mask = np.asarray(ccs.ccs_select(
        scores, labels, ratio, num_classes=3, beta=0.1, num_strata=5))
    np.testing.assert_array_equal(
        np.bincount(labels[mask], minlength=3),
        selection.class_quotas(labels, 3, ratio))
  # At ratio 0.5 each class drops its floor(0.1 * n_c) = 4, 2, 0 hardest.
  mask = np.asarray(ccs.ccs_select(
      scores, labels, 0.5, num_classes=3, beta=0.1, num_strata=5))
  for c, drop in zip(range(3), (4, 2, 0)):
    ids = np.flatnonzero(labels == c)
    hardest = ids[np.argsort(-scores[ids])[:drop]]
    assert not mask[hardest].any()
  # Global budget: floor(0.3 * 72) = 21, class counts free.
  mask = ccs.ccs_select(scores, labels, 0.3, num_classes=3,
                              class_balanced=False)
  assert int(np.sum(mask)) == 21


def test_error_messages():
  labels = np.zeros(4, np.int32)
  with pytest.raises(ValueError,
                     match=r"beta=1.0 is not allowed.*\[0.0, 1.0\)"):
    ccs.ccs_select(np.ones(4), labels, 0.5, num_classes=1, beta=1.0)
  with pytest.raises(ValueError, match=r"beta=-0.1 is not allowed"):
    ccs.ccs_select(np.ones(4), labels, 0.5, num_classes=1, beta=-0.1)
  with pytest.raises(ValueError, match=r"ratio=0.0 is not allowed"):
    ccs.ccs_select(np.ones(4), labels, 0.0, num_classes=1)
  with pytest.raises(ValueError, match=r"num_strata=0 is not allowed"):
    ccs.ccs_select(np.ones(4), labels, 0.5, num_classes=1,
                         num_strata=0)
  with pytest.raises(ValueError, match=r"scores holds 1 NaN or infinite"):
    ccs.ccs_select(np.array([1.0, np.nan, 0, 0]), labels, 0.5,
                         num_classes=1)
  with pytest.raises(ValueError, match=r"mismatched leading dimensions"):
    ccs.ccs_select(np.ones(5), labels, 0.5, num_classes=1)
