"""Tests for d2.py: cases worked out by hand, and errors."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import d2

T, F = True, False


# Six points on a line, k = 2, squared distances:
#   0 (x=0):  1 (1),  2 (9)        3 (x=7):  2 (16), 4 (25)
#   1 (x=1):  0 (1),  2 (4)        4 (x=12): 5 (1),  3 (25)
#   2 (x=3):  1 (4),  0 (9)        5 (x=13): 4 (1),  3 (36)
# Edge weights use the Euclidean distance, the square root of these.
_LINE = np.array([0, 1, 3, 7, 12, 13], np.float32)[:, None]
_LINE_IDX = np.array([[1, 2], [0, 2], [1, 0], [2, 4], [5, 3], [4, 3]])
_LINE_DIST = np.array([[1, 9], [1, 4], [4, 9], [16, 25], [1, 25], [1, 36]],
                      np.float32)


def test_knn_graph_line_by_hand():
  idx, dist = d2.knn_graph(_LINE, k=2, chunk_size=4)
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
    idx, dist = d2.knn_graph(x, k=k, chunk_size=chunk, labels=lab)
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(dist, np.take_along_axis(dd, ref, 1),
                               rtol=1e-5, atol=1e-5)


def test_knn_graph_small_class_gets_missing_edges():
  x = np.arange(5, dtype=np.float32)[:, None]
  labels = np.array([0, 0, 0, 1, 1])
  idx, dist = d2.knn_graph(x, k=2, labels=labels)
  # Class 1 has one other member: the second slot is a missing edge.
  np.testing.assert_array_equal(idx[3], [4, 3])
  assert np.isinf(dist[3, 1]) and dist[3, 0] == 1


def test_d2_forward_message_passing_by_hand():
  s = np.array([1, 2, 3, 4, 5, 6], np.float32)
  w = lambda d: np.exp(-np.sqrt(d))  # gamma_forward = 1.
  expected = [
      1 + w(1) * 2 + w(9) * 3,
      2 + w(1) * 1 + w(4) * 3,
      3 + w(4) * 2 + w(9) * 1,
      4 + w(16) * 3 + w(25) * 5,
      5 + w(1) * 6 + w(25) * 4,
      6 + w(1) * 5 + w(36) * 4,
  ]
  out = d2.d2_forward_scores(s, (_LINE_IDX, _LINE_DIST))
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  # gamma 0: every edge weighs 1, s' = s + sum of the neighbours' s.
  out = d2.d2_forward_scores(s, (_LINE_IDX, _LINE_DIST),
                                    gamma_forward=0.0)
  np.testing.assert_allclose(out, [6, 6, 6, 12, 15, 15])


def test_d2_greedy_reverse_passing_by_hand():
  # Forward scores (gamma 0): 6, 6, 6, 12, 15, 15. Reverse weights
  # exp(-gamma_r * sqrt(d)) = 2^-sqrt(d) with gamma_r = ln 2 (directed
  # graph as given).
  #  1. pick 4 (15; tie with 5 -> lower id): s5 = 15 - 15/2 = 7.5,
  #     s3 = 12 - 15/32 = 11.53.
  #  2. pick 3 (11.53): s2 = 6 - 11.53/16 = 5.28.
  #  3. pick 5 (7.5): its neighbours 4, 3 are already picked.
  #  4. pick 0 (6; tie with 1 -> lower id): s1 = 6 - 6/2 = 3,
  #     s2 = 5.28 - 6/8 = 4.53.
  #  5. pick 2 (4.53): s1 = 3 - 4.53/4 = 1.87.
  #  6. pick 1.
  # The near-duplicate 5 drops below 3 once 4 is picked: that is the
  # diversity the reverse pass buys.
  graph = (_LINE_IDX, _LINE_DIST)
  forward = d2.d2_forward_scores(
      np.arange(1, 7, dtype=np.float32), graph, gamma_forward=0.0)
  order = d2.d2_greedy_order(forward, np.zeros(6, np.int32),
                                    np.array([6]), graph,
                                    gamma_reverse=np.log(2))
  np.testing.assert_array_equal(order, [4, 3, 5, 0, 2, 1])
  # d2_select uses the undirected graph: 2 also neighbours 3 (3 lists 2).
  # Forward (gamma 0): 6, 6, 3+2+1+4 = 10, 4+3+5+6 = 18, 15, 15. Picks:
  # 3 (18): s2 = 10 - 18/16 = 8.875, s4 = 15 - 18/32, s5 = 15 - 18/64;
  # then 5 (14.72) over 4 (14.44), and 2 (8.875): ratio 0.5 keeps {2, 3, 5}.
  mask = d2.d2_select(
      _LINE, np.arange(1, 7, dtype=np.float32), np.zeros(6, np.int32), 0.5,
      num_classes=1, class_balanced=False, k=2, gamma_forward=0.0,
      gamma_reverse=np.log(2))
  np.testing.assert_array_equal(mask, [F, F, T, T, F, T])
  # Quota per group: group 0 = {0, 1, 2} takes 1, group 1 = {3, 4, 5}
  # takes 2. Picks 4, then 3; group 1 closes, so 5 is skipped; then 0.
  order = d2.d2_greedy_order(forward, np.array([0, 0, 0, 1, 1, 1]),
                                    np.array([1, 2]), graph,
                                    gamma_reverse=np.log(2))
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
  graph = d2.knn_graph(x, k=k, labels=labels)
  weights = np.asarray(d2._edge_weights(np.asarray(graph[1]), 0.5))
  order = np.asarray(d2.d2_greedy_order(scores, labels, quotas, graph,
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
  graph = d2.knn_graph(x, k=4, labels=labels)
  before = d2._d2_greedy_core._cache_size()
  for ratio in (0.1, 0.3, 0.75):
    mask = np.asarray(d2.d2_select(
        None, difficulty, labels, ratio, num_classes=4, graph=graph))
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=4),
                                  selection.class_quotas(labels, 4, ratio))
  # A new ratio changes only the quota values: at most one compile.
  assert d2._d2_greedy_core._cache_size() - before <= 1
  # Building the graph inside gives the same selection.
  np.testing.assert_array_equal(
      d2.d2_select(x, difficulty, labels, 0.3, num_classes=4, k=4),
      d2.d2_select(None, difficulty, labels, 0.3, num_classes=4,
                          graph=graph))


def test_error_messages():
  ok2 = np.ones((4, 3), np.float32)
  labels = np.zeros(4, np.int32)
  with pytest.raises(ValueError, match=r"k=4 is not allowed: it must be < N=4"):
    d2.knn_graph(ok2, k=4)
  with pytest.raises(ValueError, match=r"k=0 is not allowed"):
    d2.knn_graph(ok2, k=0)
  with pytest.raises(ValueError, match=r"chunk_size=0 is not allowed"):
    d2.knn_graph(ok2, k=1, chunk_size=0)
  with pytest.raises(ValueError, match=r"graph arrays have shapes"):
    d2.d2_select(None, np.ones(4), labels, 0.5, num_classes=1,
                        graph=(np.zeros((3, 2), np.int32), np.ones((3, 2))))
  with pytest.raises(ValueError, match=r"gamma_reverse=-1.0 is not allowed"):
    d2.d2_select(ok2, np.ones(4), labels, 0.5, num_classes=1, k=1,
                        gamma_reverse=-1.0)


def test_undirected_graph_by_hand():
  idx, dist = d2.undirected_graph((_LINE_IDX, _LINE_DIST))
  # 2's kNN are {1, 0}; 3 lists 2, so 2 gains 3 (16). Degree 3 at most.
  assert idx.shape == (6, 3)
  np.testing.assert_array_equal(idx[2], [1, 0, 3])
  np.testing.assert_allclose(dist[2], [4, 9, 16])
  np.testing.assert_array_equal(idx[3], [2, 4, 5])
  # 0 has two neighbours: the third slot is a missing edge to itself.
  np.testing.assert_array_equal(idx[0], [1, 2, 0])
  assert np.isinf(dist[0, 2])
  # Symmetric: j in N(i) iff i in N(j).
  edges = {(i, j) for i in range(6) for j, d in zip(idx[i], dist[i])
           if np.isfinite(d)}
  assert edges == {(j, i) for i, j in edges}


def test_drop_hardest_per_class_capped_at_quota():
  hardness = np.array([5.0, 1.0, 3.0, 3.0, 0.0, 9.0, 2.0, 1.0])
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  keep = d2.drop_hardest(hardness, labels, 0.5, num_classes=2,
                         class_balanced=True, mis_ratio=0.25, seed=0,
                         per_class=True)
  np.testing.assert_array_equal(keep, [F, T, T, T, T, F, T, T])
  # mis_ratio 0.75 would drop 3 of 4, but ratio 0.5 needs 2 per class.
  keep = d2.drop_hardest(hardness, labels, 0.5, num_classes=2,
                         class_balanced=True, mis_ratio=0.75, seed=0,
                         per_class=True)
  assert keep[:4].sum() == 2 and keep[4:].sum() == 2
  assert keep[1] and keep[4] and keep[7]  # the easiest stay.


def test_drop_hardest_over_the_whole_set_is_the_default():
  # The reference's mislabel_mask: the int(0.25 * 8) = 2 hardest of all
  # (9.0 and 5.0), whatever their class.
  hardness = np.array([5.0, 1.0, 3.0, 3.5, 0.0, 9.0, 2.0, 1.0])
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  keep = d2.drop_hardest(hardness, labels, 0.25, num_classes=2,
                         class_balanced=True, mis_ratio=0.25, seed=0)
  np.testing.assert_array_equal(keep, [F, T, T, T, T, F, T, T])
  # 0.5 of 8 = 4 hardest: 9, 5, 3.5, 3 - three in class 0, whose quota at
  # ratio 0.5 is 2: it drops only its 2 hardest (5, 3.5), class 1 its one.
  keep = d2.drop_hardest(hardness, labels, 0.5, num_classes=2,
                         class_balanced=True, mis_ratio=0.5, seed=0)
  np.testing.assert_array_equal(keep, [F, T, T, F, T, F, T, T])
  # Global quota: 8 - 4 = 4 kept >= budget 4, all four dropped.
  keep = d2.drop_hardest(hardness, labels, 0.5, num_classes=2,
                         class_balanced=False, mis_ratio=0.5, seed=0)
  np.testing.assert_array_equal(keep, [F, T, F, F, T, F, T, T])


def test_d2_forward_floors_the_neighbour_scores():
  # Scores 0, 0, 0, 1, 0, 0 on the line graph: node 0's neighbours score 0,
  # so its forward score is 1e-7 times its edge weights (the reference's
  # epsilon), not 0; the own term is not floored.
  s = np.array([0, 0, 0, 1, 0, 0], np.float32)
  w = lambda d: np.exp(-np.sqrt(d))
  out = np.asarray(d2.d2_forward_scores(s, (_LINE_IDX, _LINE_DIST)),
                   np.float64)
  np.testing.assert_allclose(out[0], 1e-7 * (w(1) + w(9)), rtol=1e-5)
  np.testing.assert_allclose(out[1], 1e-7 * (w(1) + w(4)), rtol=1e-5)
  np.testing.assert_allclose(out[4], w(25) * 1 + w(1) * 1e-7, rtol=1e-5)
  out0 = d2.d2_forward_scores(s, (_LINE_IDX, _LINE_DIST), score_floor=0.0)
  assert out0[0] == 0 and out0[1] == 0
