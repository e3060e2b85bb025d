"""Tests for common.py: the trajectory view, select_top, shared checks."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax import validation
from mrmc_jax.methods import common
from mrmc_jax.methods import options

F, T = False, True


def _art(n=5, r=4):
  loss = np.arange(n * r, dtype=np.float32).reshape(n, r)
  art = {k: loss + i for i, k in enumerate(common.TRAJECTORY_KEYS)}
  return art, {"eval_" + k: -v for k, v in art.items()}


def test_trajectory_view_source_and_epochs():
  train, evals = _art()
  view = common.trajectory_view(train, options.SelectionOptions(epochs=3))
  assert set(view) == set(common.TRAJECTORY_KEYS)
  np.testing.assert_array_equal(view["el2n"], train["el2n"][:, :3])
  view = common.trajectory_view({**train, **evals}, options.SelectionOptions(
      loss_source="eval"))
  np.testing.assert_array_equal(view["loss"], evals["eval_loss"])
  with pytest.raises(ValueError, match="loss_source='eval' needs the eval_"):
    common.trajectory_view(train, options.SelectionOptions(
        loss_source="eval"))
  with pytest.raises(ValueError, match=r"epochs=1 is not allowed.*\[2, 4\]"):
    common.trajectory_view(train, options.SelectionOptions(epochs=1))


def test_select_top_is_select_mask_on_float32():
  scores = np.array([0.5, 2.0, 1.0, 2.0, -1.0, 0.0], np.float64)
  labels = np.array([0, 0, 0, 1, 1, 1])
  got, mask = common.select_top(scores, labels, 0.34, num_classes=2,
                                class_balanced=True, seed=None)
  assert got.dtype == np.float32 and mask.dtype == bool
  np.testing.assert_array_equal(mask, [F, T, F, T, F, F])
  _, mask = common.select_top(scores, labels, 0.34, num_classes=2,
                              class_balanced=False, seed=None)
  np.testing.assert_array_equal(mask, selection.select_mask(
      scores.astype(np.float32), labels, 0.34, num_classes=2,
      class_balanced=False))


def test_group_quotas():
  labels = np.array([0, 1, 1, 1, 0, 2])
  groups, quotas, g = common.group_quotas(labels, 3, 0.5, True)
  np.testing.assert_array_equal(groups, labels)
  np.testing.assert_array_equal(quotas, selection.class_quotas(labels, 3,
                                                               0.5))
  assert g == 3
  groups, quotas, g = common.group_quotas(labels, 3, 0.5, False)
  assert g == 1 and quotas.tolist() == [3] and not groups.any()


def test_check_messages():
  with pytest.raises(ValueError, match=r"x has shape \(3,\); expected a 2-D"):
    common.check_ndim(np.ones(3), 2, "x", "[N, R]")
  with pytest.raises(ValueError, match=r"x holds 1 NaN values"):
    common.check_finite(np.array([1.0, np.nan, np.inf]), "x", allow_inf=True)
  common.check_number(1.0, "b", 0, 1, lo_open=True)
  with pytest.raises(ValueError, match=r"b=1.0 is not allowed.*\(0, 1\)"):
    common.check_number(1.0, "b", 0, 1, lo_open=True, hi_open=True)
  with pytest.raises(ValueError, match=r"seed=True is not allowed"):
    validation.check_seed(True)
  with pytest.raises(ValueError, match=r"c has shape \(2, 0\)"):
    common.check_bool_matrix(np.ones((2, 0), bool), "c")
  with pytest.raises(ValueError, match=r"mismatched leading dimensions"):
    common.check_ratio_labels(np.zeros(3, np.int32), 0.5, 1, s=np.ones(4))



def test_within_group_position_ties_seeded():
  scores = np.array([1.0, 0.0, 1.0, 1.0, 5.0, 2.0])
  groups = np.array([0, 0, 0, 0, 1, 1])
  pos = common.within_group_position(scores, groups, seed=3)
  # Group 0: 0.0 is lowest (0); the three 1.0 share positions 1..3.
  assert pos[1] == 0 and sorted(pos[[0, 2, 3]]) == [1, 2, 3]
  np.testing.assert_array_equal(pos[4:], [1, 0])
  np.testing.assert_array_equal(
      pos, common.within_group_position(scores, groups, seed=3))
  orders = {tuple(common.within_group_position(scores, groups, seed=s)[[0, 2,
                                                                       3]])
            for s in range(20)}
  assert len(orders) > 1  # Another seed, another order of the ties.


def test_sample_by_weight_exact_quotas_and_law():
  labels = np.repeat([0, 1], 4)
  # Weight 0 (log -inf) is never drawn while others remain.
  with np.errstate(divide="ignore"):
    log_w = np.log(np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    for seed in range(5):
      _, mask = common.sample_by_weight(log_w, labels, 0.5, num_classes=2,
                                        class_balanced=True, seed=seed)
      assert mask[[0, 1, 4]].all() and mask.sum() == 4
  # One draw of one from weights 1:3: frequency of the heavy one ~ 3/4.
  log_w = np.log(np.array([1.0, 3.0]))
  hits = sum(common.sample_by_weight(log_w, np.zeros(2, int), 0.5,
                                     num_classes=1, class_balanced=True,
                                     seed=s)[1][1] for s in range(400))
  assert 0.68 < hits / 400 < 0.82
  with pytest.raises(ValueError, match="NaN or \\+inf"):
    common.sample_by_weight(np.array([np.nan, 0.0]), np.zeros(2, int), 0.5,
                            num_classes=1, class_balanced=True, seed=0)


@pytest.mark.parametrize("num_groups", [7, 40_000])
def test_within_group_position_is_the_lexsort_order(num_groups):
  # Two stable sorts give the positions of lexsort((tie, score, group)),
  # ties included, with small (int16) and large group ids.
  rng = np.random.default_rng(num_groups)
  n = 5000
  scores = np.round(rng.random(n) * 8) / 8
  scores[:20] = -np.inf
  groups = rng.integers(0, num_groups, n)
  tie = np.random.default_rng(11).permutation(n)
  order = np.lexsort((tie, scores, groups))
  sizes = np.bincount(groups)
  starts = np.cumsum(sizes) - sizes
  want = np.empty(n, np.int64)
  want[order] = np.arange(n) - starts[groups[order]]
  np.testing.assert_array_equal(
      common.within_group_position(scores, groups, seed=11), want)
