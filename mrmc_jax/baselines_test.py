"""Tests for baselines.py: small cases worked out by hand, and errors."""

import numpy as np
import pytest

from mrmc_jax import baselines
from mrmc_jax import selection

T, F = True, False


# ---------------------------------------------------------------- scores ----


def test_forgetting_counts_by_hand():
  correct = np.array([
      [T, F, T, F],  # Two correct -> incorrect transitions.
      [F, F, F, F],  # Never learned: max(events) + 1 = 3.
      [T, T, T, T],  # Learned, never forgotten.
      [F, T, T, F],  # One.
      [F, F, F, T],  # Learned last epoch: 0, not "never learned".
  ])
  np.testing.assert_array_equal(baselines.forgetting_scores(correct),
                                [2, 3, 0, 1, 0])
  # One epoch: no transitions; the never-learned row still ranks first.
  np.testing.assert_array_equal(
      baselines.forgetting_scores(np.array([[T], [F]])), [0, 1])


def test_el2n_mean_over_chosen_epochs():
  el2n = np.array([[0.1, 0.2, 0.6],
                   [1.0, 0.0, 0.5]], np.float32)
  np.testing.assert_allclose(baselines.el2n_scores(el2n), [0.3, 0.5],
                             rtol=1e-6)
  np.testing.assert_allclose(baselines.el2n_scores(el2n, epochs=[0, 2]),
                             [0.35, 0.75], rtol=1e-6)
  np.testing.assert_allclose(baselines.el2n_scores(el2n, epochs=[1]),
                             [0.2, 0.0], rtol=1e-6)


def test_grand_is_a_validated_passthrough():
  norms = np.array([0.0, 2.5, 1.0], np.float32)
  np.testing.assert_array_equal(baselines.grand_scores(norms), norms)


def test_dyn_unc_window_two_by_hand():
  p = np.array([[0.2, 0.4, 0.4, 1.0],
                [0.5, 0.5, 0.5, 0.5]], np.float32)
  # Windows (0.2, 0.4), (0.4, 0.4), (0.4, 1.0): population stds 0.1, 0, 0.3.
  np.testing.assert_allclose(baselines.dyn_unc_scores(p, window=2),
                             [0.4 / 3, 0.0], atol=1e-6)
  # R = 4 < window = 10: one window of all four, mean 0.5, deviations
  # -0.3, -0.1, -0.1, 0.5, variance 0.36 / 4 = 0.09, std 0.3.
  np.testing.assert_allclose(baselines.dyn_unc_scores(p, window=10),
                             [0.3, 0.0], atol=1e-6)


def test_random_scores_deterministic_and_stratified():
  a = baselines.random_scores(50, seed=3)
  np.testing.assert_array_equal(a, baselines.random_scores(50, seed=3))
  assert not np.array_equal(a, baselines.random_scores(50, seed=4))
  assert a.shape == (50,) and float(a.min()) >= 0 and float(a.max()) < 1
  labels = np.array([0] * 30 + [1] * 20)
  mask = selection.select_mask_host(a, labels, 0.5, num_classes=2)
  np.testing.assert_array_equal(np.bincount(labels[np.asarray(mask)]),
                                [15, 10])


def test_moderate_median_distance_band_1d():
  # Class 0: x = 0, 1, 2, 4, 10 -> median 2, distances 2, 1, 0, 2, 8, their
  # median 2, scores -|d - 2| = 0, -1, -2, 0, -6.
  # Class 1: x = 5, 6 -> median 5.5 (mean of the middle two), distances
  # 0.5, 0.5, median 0.5, scores 0, 0.
  x = np.array([0, 5, 1, 2, 6, 4, 10], np.float32)[:, None]
  labels = np.array([0, 1, 0, 0, 1, 0, 0])
  scores = baselines.moderate_scores(x, labels, num_classes=2)
  np.testing.assert_allclose(scores, [0, 0, -1, -2, 0, 0, -6], atol=1e-6)
  # Keeping 3 of class 0 (quota 3 = floor(0.6 * 5)) keeps the band around
  # the median distance: d = 2, 2 (score 0) then d = 1 (score -1).
  mask = selection.select_mask_host(scores[labels == 0], labels[labels == 0], 0.6,
                               num_classes=1)
  np.testing.assert_array_equal(mask, [T, T, F, T, F])


def test_moderate_matches_numpy_median():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(41, 3)).astype(np.float32)
  labels = rng.integers(0, 3, 41)
  expected = np.zeros(41)
  for c in range(3):
    m = labels == c
    d = np.linalg.norm(x[m] - np.median(x[m], axis=0), axis=1)
    expected[m] = -np.abs(d - np.median(d))
  np.testing.assert_allclose(
      baselines.moderate_scores(x, labels, num_classes=3), expected,
      atol=1e-5)


# ------------------------------------------------------------------- CCS ----


def test_ccs_allocation_sparse_strata_give_all_they_have():
  # Non-empty strata by size: 1, 2, 3, 10; quota 9.
  # 9 // 4 = 2 -> the size-1 stratum gives 1 (rest 8); 8 // 3 = 2 -> size 2
  # gives 2 (rest 6); 6 // 2 = 3 -> size 3 gives 3 (rest 3); the densest
  # takes the remaining 3. The empty stratum takes nothing.
  sizes = np.array([[0, 3, 1, 10, 2]])
  np.testing.assert_array_equal(
      baselines._ccs_allocate(sizes, np.array([9])), [[0, 3, 1, 3, 2]])


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
    mask = np.asarray(baselines.ccs_select(
        scores, labels, 0.5, num_classes=1, beta=0.1, num_strata=4,
        seed=seed))
    assert mask.sum() == 10
    assert not mask[stratum == -1].any()
    np.testing.assert_array_equal(
        np.bincount(stratum[mask], minlength=4), [1, 2, 3, 4])
  # Budget 19 > 18 left after dropping 2: beta shrinks to drop only the
  # single hardest (100); 50 is kept and becomes the top of the range.
  mask = np.asarray(baselines.ccs_select(
      scores, labels, 0.95, num_classes=1, beta=0.1, num_strata=4))
  assert mask.sum() == 19
  assert not mask[scores == 100.0].any() and mask[scores == 50.0].all()


def test_ccs_seeded_sampling():
  scores, _ = _ccs_case()
  labels = np.zeros(20, np.int32)
  run = lambda seed: np.asarray(baselines.ccs_select(
      scores, labels, 0.5, num_classes=1, num_strata=4, seed=seed))
  np.testing.assert_array_equal(run(1), run(1))
  assert any(not np.array_equal(run(0), run(s)) for s in range(1, 5))


def test_ccs_exact_per_class_counts_and_per_class_pruning():
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(3), [40, 25, 7])
  scores = rng.normal(size=labels.size)
  for ratio in (0.1, 0.33, 0.7, 0.95, 1.0):
    mask = np.asarray(baselines.ccs_select(
        scores, labels, ratio, num_classes=3, beta=0.1, num_strata=5))
    np.testing.assert_array_equal(
        np.bincount(labels[mask], minlength=3),
        selection.class_quotas(labels, 3, ratio))
  # At ratio 0.5 each class drops its floor(0.1 * n_c) = 4, 2, 0 hardest.
  mask = np.asarray(baselines.ccs_select(
      scores, labels, 0.5, num_classes=3, beta=0.1, num_strata=5))
  for c, drop in zip(range(3), (4, 2, 0)):
    ids = np.flatnonzero(labels == c)
    hardest = ids[np.argsort(-scores[ids])[:drop]]
    assert not mask[hardest].any()
  # Global budget: floor(0.3 * 72) = 21, class counts free.
  mask = baselines.ccs_select(scores, labels, 0.3, num_classes=3,
                              class_balanced=False)
  assert int(np.sum(mask)) == 21


# -------------------------------------------------------------------- D2 ----

# Six points on a line, k = 2, squared distances:
#   0 (x=0):  1 (1),  2 (9)        3 (x=7):  2 (16), 4 (25)
#   1 (x=1):  0 (1),  2 (4)        4 (x=12): 5 (1),  3 (25)
#   2 (x=3):  1 (4),  0 (9)        5 (x=13): 4 (1),  3 (36)
# Mean kNN distance (1+9+1+4+4+9+16+25+1+25+1+36) / 12 = 132 / 12 = 11.
_LINE = np.array([0, 1, 3, 7, 12, 13], np.float32)[:, None]
_LINE_IDX = np.array([[1, 2], [0, 2], [1, 0], [2, 4], [5, 3], [4, 3]])
_LINE_DIST = np.array([[1, 9], [1, 4], [4, 9], [16, 25], [1, 25], [1, 36]],
                      np.float32)
_MEAN = 11.0


def test_knn_graph_line_by_hand():
  idx, dist = baselines.knn_graph(_LINE, k=2, chunk_size=4)
  np.testing.assert_array_equal(idx, _LINE_IDX)
  np.testing.assert_allclose(dist, _LINE_DIST)


@pytest.mark.parametrize("k,chunk", [(4, 40), (3, 96)])
def test_knn_graph_matches_brute_force(k, chunk):
  # N = 250 is not a multiple of the tile (40 -> 48, or 96); k = 3 with 96
  # takes the grouped top-k path, k = 4 with 48 the plain one. Rows 200-219
  # duplicate rows 0-19, so exact ties at distance 0 must go to the lower id.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(250, 5)).astype(np.float32)
  x[200:220] = x[:20]
  labels = rng.integers(0, 3, 250)
  d = ((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  for lab in (None, labels):
    dd = d.copy()
    if lab is not None:
      dd[lab[:, None] != lab[None]] = np.inf
    ref = np.argsort(dd, axis=1, kind="stable")[:, :k]
    idx, dist = baselines.knn_graph(x, k=k, chunk_size=chunk, labels=lab)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(dist, np.take_along_axis(dd, ref, 1),
                               rtol=1e-5, atol=1e-5)


def test_knn_graph_small_class_gets_missing_edges():
  x = np.arange(5, dtype=np.float32)[:, None]
  labels = np.array([0, 0, 0, 1, 1])
  idx, dist = baselines.knn_graph(x, k=2, labels=labels)
  # Class 1 has one other member: the second slot is a missing edge.
  np.testing.assert_array_equal(idx[3], [4, 3])
  assert np.isinf(dist[3, 1]) and dist[3, 0] == 1


def test_d2_forward_message_passing_by_hand():
  s = np.array([1, 2, 3, 4, 5, 6], np.float32)
  w = lambda d: np.exp(-d / _MEAN)  # gamma_forward = 1.
  expected = [
      1 + w(1) * 2 + w(9) * 3,
      2 + w(1) * 1 + w(4) * 3,
      3 + w(4) * 2 + w(9) * 1,
      4 + w(16) * 3 + w(25) * 5,
      5 + w(1) * 6 + w(25) * 4,
      6 + w(1) * 5 + w(36) * 4,
  ]
  out = baselines.d2_forward_scores(s, (_LINE_IDX, _LINE_DIST))
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  # gamma 0: every edge weighs 1, s' = s + sum of the neighbours' s.
  out = baselines.d2_forward_scores(s, (_LINE_IDX, _LINE_DIST),
                                    gamma_forward=0.0)
  np.testing.assert_allclose(out, [6, 6, 6, 12, 15, 15])


def test_d2_greedy_reverse_passing_by_hand():
  # Forward scores (gamma 0): 6, 6, 6, 12, 15, 15. Reverse weights
  # exp(-gamma_r * d / 11) = 2^-d with gamma_r = 11 ln 2.
  #  1. pick 4 (15; tie with 5 -> lower id): s5 = 15 - 15/2 = 7.5,
  #     s3 = 12 - 15 * 2^-25 ~ 12.
  #  2. pick 3 (~12): s2 = 6 - 12 * 2^-16 ~ 5.9998.
  #  3. pick 5 (7.5): its neighbours 4, 3 are already picked.
  #  4. pick 0 (6; tie with 1 -> lower id): s1 = 6 - 6/2 = 3,
  #     s2 = 5.9998 - 6/512 ~ 5.988.
  #  5. pick 2 (5.988): s1 = 3 - 5.988/16 ~ 2.63.
  #  6. pick 1.
  # The near-duplicate 5 drops below 3 once 4 is picked: that is the
  # diversity the reverse pass buys.
  graph = (_LINE_IDX, _LINE_DIST)
  forward = baselines.d2_forward_scores(
      np.arange(1, 7, dtype=np.float32), graph, gamma_forward=0.0)
  order = baselines.d2_greedy_order(forward, np.zeros(6, np.int32),
                                    np.array([6]), graph,
                                    gamma_reverse=_MEAN * np.log(2))
  np.testing.assert_array_equal(order, [4, 3, 5, 0, 2, 1])
  # A smaller budget is a prefix of that order: ratio 0.5 keeps {4, 3, 5}.
  mask = baselines.d2_select(
      _LINE, np.arange(1, 7, dtype=np.float32), np.zeros(6, np.int32), 0.5,
      num_classes=1, class_balanced=False, k=2, gamma_forward=0.0,
      gamma_reverse=_MEAN * np.log(2))
  np.testing.assert_array_equal(mask, [F, F, F, T, T, T])
  # Quota per group: group 0 = {0, 1, 2} takes 1, group 1 = {3, 4, 5}
  # takes 2. Picks 4, then 3; group 1 closes, so 5 is skipped; then 0.
  order = baselines.d2_greedy_order(forward, np.array([0, 0, 0, 1, 1, 1]),
                                    np.array([1, 2]), graph,
                                    gamma_reverse=_MEAN * np.log(2))
  np.testing.assert_array_equal(order, [4, 3, 0, -1, -1, -1])


def _naive_greedy(scores, groups, quotas, idx, weights):
  """The reference loop: argmax over all open nodes every step."""
  s = np.asarray(scores, np.float32).copy()
  counts = np.zeros_like(quotas)
  s[quotas[groups] == 0] = -np.inf
  order = []
  for _ in range(int(quotas.sum())):
    i = int(np.argmax(s))
    order.append(i)
    s[idx[i]] -= weights[i] * s[i]
    s[i] = -np.inf
    counts[groups[i]] += 1
    if counts[groups[i]] == quotas[groups[i]]:
      s[groups == groups[i]] = -np.inf
  return order


def test_d2_block_greedy_equals_naive_greedy():
  rng = np.random.default_rng(0)
  n, k = 300, 5
  x = rng.normal(size=(n, 4)).astype(np.float32)
  labels = rng.integers(0, 3, n)
  scores = rng.random(n).astype(np.float32) * 10
  quotas = selection.class_quotas(labels, 3, 0.4)
  graph = baselines.knn_graph(x, k=k, labels=labels)
  weights = np.asarray(baselines._edge_weights(np.asarray(graph[1]), 0.5))
  order = np.asarray(baselines.d2_greedy_order(scores, labels, quotas, graph,
                                               gamma_reverse=0.5))
  expected = _naive_greedy(scores, labels, quotas, np.asarray(graph[0]),
                           weights)
  np.testing.assert_array_equal(order[:len(expected)], expected)
  assert (order[len(expected):] == -1).all()


def test_d2_select_exact_quotas_and_graph_reuse():
  rng = np.random.default_rng(2)
  n = 120
  x = rng.normal(size=(n, 3)).astype(np.float32)
  labels = rng.integers(0, 4, n)
  difficulty = rng.random(n).astype(np.float32)
  graph = baselines.knn_graph(x, k=4, labels=labels)
  before = baselines._d2_greedy_core._cache_size()
  for ratio in (0.1, 0.3, 0.75):
    mask = np.asarray(baselines.d2_select(
        None, difficulty, labels, ratio, num_classes=4, graph=graph))
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=4),
                                  selection.class_quotas(labels, 4, ratio))
  # A new ratio changes only the quota values: at most one compile.
  assert baselines._d2_greedy_core._cache_size() - before <= 1
  # Building the graph inside gives the same selection.
  np.testing.assert_array_equal(
      baselines.d2_select(x, difficulty, labels, 0.3, num_classes=4, k=4),
      baselines.d2_select(None, difficulty, labels, 0.3, num_classes=4,
                          graph=graph))


# -------------------------------------------------------------- registry ----


def test_registry_lists_methods_and_needs():
  assert baselines.method_names() == (
      "random", "el2n", "grand", "forgetting", "ccs", "moderate", "dyn_unc",
      "d2")
  assert baselines.get_method("random").needs == frozenset()
  assert baselines.get_method("grand").needs == {"grad_norms"}
  assert baselines.get_method("moderate").needs == {"features"}
  assert baselines.get_method("d2").needs == {"features", "trajectory"}
  assert {m.kind for m in baselines.SCORE_METHODS.values()} == {"score",
                                                                "select"}
  assert baselines.get_method("ccs").kind == "select"


# ---------------------------------------------------------------- errors ----


def test_error_messages():
  ok2 = np.ones((4, 3), np.float32)
  labels = np.zeros(4, np.int32)
  with pytest.raises(ValueError, match=r"window=1 is not allowed.*>= 2"):
    baselines.dyn_unc_scores(ok2, window=1)
  with pytest.raises(ValueError, match=r"p_true has shape \(4,\)"):
    baselines.dyn_unc_scores(np.ones(4))
  with pytest.raises(ValueError, match=r"R >= 2"):
    baselines.dyn_unc_scores(np.ones((4, 1)))
  with pytest.raises(ValueError, match=r"el2n_traj holds 1 NaN"):
    baselines.el2n_scores(np.where(np.eye(4, 3) > 0.5, np.nan, 1.0)[:1])
  with pytest.raises(ValueError,
                     match=r"epochs=\[3\] is not allowed.*\[0, 3\)"):
    baselines.el2n_scores(ok2, epochs=[3])
  with pytest.raises(ValueError, match=r"grad_norms holds negative"):
    baselines.grand_scores(np.array([1.0, -1.0]))
  with pytest.raises(ValueError, match=r"correct holds values other than 0/1"):
    baselines.forgetting_scores(np.array([[0, 2]]))
  with pytest.raises(ValueError,
                     match=r"beta=1.0 is not allowed.*\[0.0, 1.0\)"):
    baselines.ccs_select(np.ones(4), labels, 0.5, num_classes=1, beta=1.0)
  with pytest.raises(ValueError, match=r"beta=-0.1 is not allowed"):
    baselines.ccs_select(np.ones(4), labels, 0.5, num_classes=1, beta=-0.1)
  with pytest.raises(ValueError, match=r"ratio=0.0 is not allowed"):
    baselines.ccs_select(np.ones(4), labels, 0.0, num_classes=1)
  with pytest.raises(ValueError, match=r"num_strata=0 is not allowed"):
    baselines.ccs_select(np.ones(4), labels, 0.5, num_classes=1,
                         num_strata=0)
  with pytest.raises(ValueError, match=r"scores holds 1 NaN or infinite"):
    baselines.ccs_select(np.array([1.0, np.nan, 0, 0]), labels, 0.5,
                         num_classes=1)
  with pytest.raises(ValueError, match=r"mismatched leading dimensions"):
    baselines.ccs_select(np.ones(5), labels, 0.5, num_classes=1)
  with pytest.raises(ValueError, match=r"k=4 is not allowed: it must be < N=4"):
    baselines.knn_graph(ok2, k=4)
  with pytest.raises(ValueError, match=r"k=0 is not allowed"):
    baselines.knn_graph(ok2, k=0)
  with pytest.raises(ValueError, match=r"chunk_size=0 is not allowed"):
    baselines.knn_graph(ok2, k=1, chunk_size=0)
  with pytest.raises(ValueError, match=r"features has shape \(4,\)"):
    baselines.moderate_scores(np.ones(4), labels, num_classes=1)
  with pytest.raises(ValueError, match=r"graph arrays have shapes"):
    baselines.d2_select(None, np.ones(4), labels, 0.5, num_classes=1,
                        graph=(np.zeros((3, 2), np.int32), np.ones((3, 2))))
  with pytest.raises(ValueError, match=r"gamma_reverse=-1.0 is not allowed"):
    baselines.d2_select(ok2, np.ones(4), labels, 0.5, num_classes=1, k=1,
                        gamma_reverse=-1.0)
  with pytest.raises(ValueError, match=r"method='glister' is not allowed"):
    baselines.get_method("glister")
