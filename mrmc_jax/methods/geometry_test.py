"""k-center greedy and herding against NumPy ports of DeepCore's code."""

import numpy as np
import pytest

from mrmc_jax.methods import geometry
from mrmc_jax.methods import registry


def _euclidean_dist(x, y):
  # deepcore/methods/methods_utils/euclidean.py: euclidean_dist.
  xx = np.sum(x * x, axis=1, keepdims=True)
  yy = np.sum(y * y, axis=1, keepdims=True).T
  return np.sqrt(np.clip(xx + yy - 2.0 * x @ y.T, 1e-12, None))


def _ref_k_center_greedy(matrix, budget, random_seed, index):
  # deepcore/methods/kcentergreedy.py: k_center_greedy, no already_selected.
  sample_num = matrix.shape[0]
  rs = np.random.RandomState(random_seed)  # np.random.seed(random_seed)
  select_result = np.zeros(sample_num, dtype=bool)
  already_selected = [rs.randint(0, sample_num)]
  budget -= 1
  select_result[already_selected] = True
  num_of_already_selected = np.sum(select_result)
  dis_matrix = -1 * np.ones([num_of_already_selected + budget - 1,
                             sample_num])
  dis_matrix[:num_of_already_selected, ~select_result] = _euclidean_dist(
      matrix[select_result], matrix[~select_result])
  mins = np.min(dis_matrix[:num_of_already_selected, :], axis=0)
  for i in range(budget):
    p = np.argmax(mins)
    select_result[p] = True
    if i == budget - 1:
      break
    mins[p] = -1
    dis_matrix[num_of_already_selected + i, ~select_result] = (
        _euclidean_dist(matrix[[p]], matrix[~select_result]))
    mins = np.minimum(mins, dis_matrix[num_of_already_selected + i])
  return index[select_result]


def _ref_herding(matrix, budget, index, closest=False):
  # deepcore/methods/herding.py: Herding.herding (closest: argmin).
  sample_num = matrix.shape[0]
  indices = np.arange(sample_num)
  mu = np.mean(matrix, axis=0)
  select_result = np.zeros(sample_num, dtype=bool)
  for i in range(budget):
    dist = _euclidean_dist(
        ((i + 1) * mu - np.sum(matrix[select_result], axis=0)).reshape(1, -1),
        matrix[~select_result])
    p = np.argmin(dist) if closest else np.argmax(dist)
    p = indices[~select_result][p]
    select_result[p] = True
  return index[select_result]


def _ref_balanced(fn, features, labels, fraction, num_classes):
  # The `balance=True` branch: each class on its own rows and budget.
  out = []
  for c in range(num_classes):
    class_index = np.arange(labels.shape[0])[labels == c]
    out.append(fn(features[class_index], round(fraction * len(class_index)),
                  class_index))
  mask = np.zeros(labels.shape[0], bool)
  mask[np.concatenate(out)] = True
  return mask


def _data(seed=0):
  rng = np.random.default_rng(seed)
  # Class sizes 20, 30, 25 at ratio 0.4: DeepCore's round(0.4 n_c) = 8, 12,
  # 10 equal the selector's largest-remainder quotas.
  labels = rng.permutation(np.repeat([0, 1, 2], [20, 30, 25]))
  features = rng.normal(size=(75, 6)).astype(np.float32)
  features += labels[:, None].astype(np.float32)
  return features, labels


@pytest.mark.parametrize("seed", [0, 3])
def test_kcenter_equals_deepcore_class_wise(seed):
  features, labels = _data(seed)
  _, mask = geometry.kcenter_select(features, labels, 0.4, num_classes=3,
                                    seed=seed)
  ref = _ref_balanced(
      lambda m, b, i: _ref_k_center_greedy(m.astype(np.float64), b, seed, i),
      features, labels, 0.4, 3)
  np.testing.assert_array_equal(mask, ref)


def test_kcenter_global_equals_deepcore():
  features, labels = _data(1)
  _, mask = geometry.kcenter_select(features, labels, 0.4, num_classes=3,
                                    class_balanced=False, seed=7)
  ref = np.zeros(75, bool)
  ref[_ref_k_center_greedy(features.astype(np.float64), 30, 7,
                           np.arange(75))] = True
  np.testing.assert_array_equal(mask, ref)


@pytest.mark.parametrize("pick", geometry.HERDING_PICKS)
def test_herding_equals_deepcore_class_wise(pick):
  features, labels = _data(2)
  _, mask = geometry.herding_select(features, labels, 0.4, num_classes=3,
                                    pick=pick)
  ref = _ref_balanced(
      lambda m, b, i: _ref_herding(m.astype(np.float64), b, i,
                                   closest=pick == "closest"),
      features, labels, 0.4, 3)
  np.testing.assert_array_equal(mask, ref)
  _, glob = geometry.herding_select(features, labels, 0.4, num_classes=3,
                                    pick=pick, class_balanced=False)
  ref = np.zeros(75, bool)
  ref[_ref_herding(features.astype(np.float64), 30, np.arange(75),
                   closest=pick == "closest")] = True
  np.testing.assert_array_equal(glob, ref)


def test_herding_closest_tracks_the_mean():
  # The paper's herding keeps the core-set mean near the class mean; the
  # code's (farthest) pick does not.
  features, labels = _data(4)
  gaps = {}
  for pick in geometry.HERDING_PICKS:
    _, mask = geometry.herding_select(features, labels, 0.4, num_classes=3,
                                      pick=pick, class_balanced=False)
    gaps[pick] = np.linalg.norm(features[mask].mean(0) - features.mean(0))
  assert gaps["closest"] < gaps["farthest"] / 5


def test_chunks_do_not_change_the_picks():
  features, labels = _data(5)
  for fn in (geometry.kcenter_select, geometry.herding_select):
    one = fn(features, labels, 0.4, num_classes=3)
    # 128 rows x 6 dims per group: one group per chunk.
    many = fn(features, labels, 0.4, num_classes=3, chunk_elements=1)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])


def test_scores_give_the_pick_order_and_quotas_are_exact():
  features, labels = _data(6)
  scores, mask = geometry.kcenter_select(features, labels, 0.4,
                                         num_classes=3)
  assert np.bincount(labels[mask]).tolist() == [8, 12, 10]
  for c, quota in enumerate([8, 12, 10]):
    got = np.sort(scores[mask & (labels == c)])
    np.testing.assert_array_equal(got, np.arange(1, quota + 1))
  assert not scores[~mask].any()


def test_registry_rows_and_bad_input():
  features, labels = _data(7)
  art = {"features": features}
  opts = registry.SelectionOptions()
  for spec in ("kcenter", "herding", "herding(pick=closest)"):
    _, mask = registry.select(spec, art, labels, 0.4, num_classes=3,
                              opts=opts)
    assert mask.sum() == 30
  assert registry.needs(["kcenter", "herding"]) == {"features"}
  with pytest.raises(ValueError, match="pick='middle' is not allowed"):
    geometry.herding_select(features, labels, 0.4, num_classes=3,
                            pick="middle")
  bad = features.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="features"):
    geometry.kcenter_select(bad, labels, 0.4, num_classes=3)
