"""k-center greedy and herding against NumPy ports of DeepCore's code
(`reference_check`)."""

import numpy as np
import pytest

from mrmc_jax.methods import geometry
from mrmc_jax.methods import reference_check as ref
from mrmc_jax.methods import registry


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
  want = ref.deepcore_balanced_mask(
      lambda m, b, i: ref.deepcore_k_center_greedy(m.astype(np.float64), b,
                                                   seed, i),
      features, labels, 0.4, 3)
  np.testing.assert_array_equal(mask, want)


def test_kcenter_global_equals_deepcore():
  features, labels = _data(1)
  _, mask = geometry.kcenter_select(features, labels, 0.4, num_classes=3,
                                    class_balanced=False, seed=7)
  want = np.zeros(75, bool)
  want[ref.deepcore_k_center_greedy(features.astype(np.float64), 30, 7,
                                    np.arange(75))] = True
  np.testing.assert_array_equal(mask, want)


@pytest.mark.parametrize("pick", geometry.HERDING_PICKS)
def test_herding_equals_deepcore_class_wise(pick):
  features, labels = _data(2)
  _, mask = geometry.herding_select(features, labels, 0.4, num_classes=3,
                                    pick=pick)
  want = ref.deepcore_balanced_mask(
      lambda m, b, i: ref.deepcore_herding(m.astype(np.float64), b, i,
                                           closest=pick == "closest"),
      features, labels, 0.4, 3)
  np.testing.assert_array_equal(mask, want)
  _, glob = geometry.herding_select(features, labels, 0.4, num_classes=3,
                                    pick=pick, class_balanced=False)
  want = np.zeros(75, bool)
  want[ref.deepcore_herding(features.astype(np.float64), 30, np.arange(75),
                            closest=pick == "closest")] = True
  np.testing.assert_array_equal(glob, want)


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
