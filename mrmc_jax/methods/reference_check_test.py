"""The library's peers against NumPy ports of their references."""


import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import dual
from mrmc_jax.methods import options
from mrmc_jax.methods import reference_check as ref
from mrmc_jax.methods import registry
from mrmc_jax.methods import scores as scores_lib


def _trajectory(n=300, r=12, seed=0):
  rng = np.random.default_rng(seed)
  # Per-example learning curves: p rises from low to high at its own speed.
  speed = rng.uniform(0.05, 1.5, n)[:, None]
  p = 1 - (1 - rng.uniform(0.02, 0.5, n)[:, None]) * np.exp(
      -speed * np.arange(r)[None, :])
  p = np.clip(p + rng.normal(0, 0.08, (n, r)), 0.001, 0.999)
  return p.astype(np.float32)


def test_jaccard():
  a = np.array([1, 1, 0, 0], bool)
  assert ref.jaccard(a, a) == 1.0
  assert ref.jaccard(a, np.array([0, 1, 1, 0], bool)) == pytest.approx(1 / 3)
  with pytest.raises(ValueError, match="same"):
    ref.jaccard(a, a[:3])


def test_dual_score_equals_the_reference_up_to_its_constant():
  p = _trajectory()
  ours = np.asarray(dual.dual_scores(p, window=10), np.float64)
  theirs = ref.dual_reference_scores(p.T, window_size=10)
  # torch.std divides by J - 1 and the reference multiplies by 10.
  np.testing.assert_allclose(theirs, ours * 10 * np.sqrt(10 / 9), rtol=1e-4,
                             atol=1e-6)
  with pytest.raises(ValueError, match="needs 2 <= J <= T"):
    ref.dual_reference_scores(p.T[:5], window_size=10)


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.3])
def test_dual_global_mask_equals_the_reference_with_the_same_noise(ratio):
  p = _trajectory()
  n = p.shape[0]
  labels = np.random.default_rng(1).integers(0, 3, n)
  score = ref.dual_reference_scores(p.T, 10)
  ours = dual.dual_select(score, p.astype(np.float64).mean(axis=1), labels,
                          ratio, num_classes=3, class_balanced=False, seed=4)
  theirs = ref.dual_reference_mask(
      p.T, score, ratio, gumbel=np.random.default_rng(4).gumbel(size=n))
  assert ref.jaccard(ours, theirs) == 1.0
  # The first epoch's probability (the library before) picks others.
  first = dual.dual_select(score, p[:, 0], labels, ratio, num_classes=3,
                           class_balanced=False, seed=4)
  assert ref.jaccard(first, theirs) < 1.0


def test_dual_budget_departure_at_ratio_0_1():
  # int((1 - 0.9) * 300) = 29 in the reference, floor(0.1 * 300) = 30 here:
  # the reference's 29 are all in ours.
  p = _trajectory()
  n = p.shape[0]
  score = ref.dual_reference_scores(p.T, 10)
  ours = dual.dual_select(score, p.astype(np.float64).mean(axis=1),
                          np.zeros(n, int), 0.1, num_classes=1,
                          class_balanced=False, seed=0)
  theirs = ref.dual_reference_mask(
      p.T, score, 0.1, gumbel=np.random.default_rng(0).gumbel(size=n))
  assert (ours.sum(), theirs.sum()) == (30, 29)
  assert not (theirs & ~ours).any()


def test_dual_reference_draw_and_errors():
  p = _trajectory(n=100)
  score = ref.dual_reference_scores(p.T, 10)
  mask = ref.dual_reference_mask(p.T, score, 0.5,
                                 rng=np.random.default_rng(0))
  assert mask.sum() == 50
  with pytest.raises(ValueError, match="neither|gumbel=None"):
    ref.dual_reference_mask(p.T, score, 0.5)
  # pred_mean = 1 with b < 1: the reference's density is infinite there.
  ones = np.ones_like(p.T)
  ones[:, 0] = 0.5
  with pytest.raises(ValueError, match="not finite"):
    ref.dual_reference_mask(ones, np.ones(100), 0.1, c_d=0.1,
                            rng=np.random.default_rng(0))


def _d2_case(seed=0, per_class=40, classes=3):
  rng = np.random.default_rng(seed)
  n = per_class * classes
  labels = np.repeat(np.arange(classes), per_class)
  features = (rng.normal(size=(n, 4)) + labels[:, None]).astype(np.float32)
  r = 6
  # Forgetting-like: most examples never forget (score 0).
  correct = np.ones((n, r), bool)
  flaky = rng.random(n) < 0.4
  correct[flaky] = rng.random((int(flaky.sum()), r)) > 0.4
  p_true = rng.uniform(0.05, 1.0, (n, r)).astype(np.float32)
  # The accumulated margin (the cut's key): class 0 the hardest, so that
  # the cut leaves it below an equal share at high ratios.
  p_margin = rng.uniform(-1, 1, (n, r)) - 0.5 * (labels == 0)[:, None]
  art = {"features": features, "correct": correct, "p_true": p_true,
         "loss": -np.log(p_true), "el2n": 1 - p_true,
         "visits": np.ones((n, r)), "p_margin": p_margin.astype(np.float32),
         "margin": p_margin.astype(np.float32)}
  return art, labels


@pytest.mark.parametrize("ratio,mis_ratio", [(0.7, 0.25), (0.5, 0.1),
                                             (0.3, 0.15), (0.1, 0.2)])
def test_d2_mask_equals_the_reference(ratio, mis_ratio):
  art, labels = _d2_case()
  opts = options.SelectionOptions().replace(d2_mis_ratio=mis_ratio)
  score, ours = registry.select("d2", art, labels, ratio, num_classes=3,
                                opts=opts)
  forgetting = np.asarray(scores_lib.forgetting_scores(
      art["correct"], never_learned_first=False))
  np.testing.assert_array_equal(score, forgetting)
  assert (forgetting == 0).mean() > 0.5
  margin = art["p_margin"].astype(np.float64).mean(1)
  theirs = ref.d2_reference_mask(
      art["features"], forgetting, margin, labels, ratio,
      mis_ratio=mis_ratio, n_neighbor=5, gamma=0.1)
  assert ours.sum() == theirs.sum()
  assert ref.jaccard(ours, theirs) == 1.0
  # The earlier rules (the mean p_true as the cut's key, each class's
  # quota of all N) are variants; at 0.7 the proportional split departs.
  old = "d2(cut=p_true;split=proportional)"
  _, before = registry.select(old, art, labels, ratio, num_classes=3,
                              opts=opts)
  theirs_p = ref.d2_reference_mask(
      art["features"], forgetting, art["p_true"].astype(np.float64).mean(1),
      labels, ratio, mis_ratio=mis_ratio, n_neighbor=5, gamma=0.1)
  if ratio == 0.7:
    assert ref.jaccard(before, theirs_p) < 1.0
    assert (np.bincount(labels[ours], minlength=3) !=
            selection.class_quotas(labels, 3, ratio)).any()


def test_equal_split_is_the_reference_bin_allocate():
  from mrmc_jax.methods import d2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for _ in range(200):
    sizes = rng.integers(0, 30, rng.integers(1, 8))
    budget = int(rng.integers(0, sizes.sum() + 1))
    np.testing.assert_array_equal(d2.equal_split(budget, sizes),
                                  ref._bin_allocate_uniform(budget, sizes))
  with pytest.raises(ValueError, match="budget=5 is not allowed"):
    d2.equal_split(5, np.array([2, 2]))


def test_d2_per_class_cut_departs_from_the_reference():
  art, labels = _d2_case(seed=2)
  opts = options.SelectionOptions().replace(
      d2_mis_ratio=0.4, d2_mis_per_class=True)
  _, ours = registry.select("d2", art, labels, 0.3, num_classes=3, opts=opts)
  forgetting = np.asarray(scores_lib.forgetting_scores(
      art["correct"], never_learned_first=False))
  theirs = ref.d2_reference_mask(
      art["features"], forgetting, art["p_true"].astype(np.float64).mean(1),
      labels, 0.3, mis_ratio=0.4)
  assert ref.jaccard(ours, theirs) < 1.0


def _ccs_case(n=3000, seed=0):
  """A key on a grid of stratum centres (no example near a boundary, so
  both stratifications agree) and a drop margin that orders it, distinct."""
  rng = np.random.default_rng(seed)
  # 10 strata of width 1 over [0, 10]: centres j + 0.5, skewed sizes, and
  # the extremes 0 and 10 present.
  j = np.minimum(rng.geometric(0.25, n) - 1, 9)
  key = j + 0.5
  key[:2] = [0.0, 10.0]
  margin = key + 1e-3 * rng.random(n)
  return key, margin


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.3, 0.1])
def test_ccs_default_follows_the_reference_law(ratio):
  from mrmc_jax.methods import ccs  # pylint: disable=g-import-not-at-top
  key, margin = _ccs_case()
  n = key.shape[0]
  labels = np.random.default_rng(2).integers(0, 4, n)
  # The library's difficulty is the negated margin (high = hard).
  ours = np.asarray(ccs.ccs_select(-key, labels, ratio, num_classes=4,
                                   class_balanced=False, beta=0.1,
                                   num_strata=10, seed=3,
                                   drop_scores=-margin))
  theirs = ref.ccs_reference_mask(key, margin, ratio, 0.1,
                                  np.random.default_rng(3), stratas=10)
  # The same drop (the int(0.1 N) lowest margins) and the same budget of
  # every stratum: the masks differ only by the within-stratum draws.
  dropped = np.argsort(margin, kind="stable")[:int(0.1 * n)]
  assert not ours[dropped].any() and not theirs[dropped].any()
  stratum = np.minimum(key.astype(int), 9)  # The maximum 10 is in the last.
  np.testing.assert_array_equal(np.bincount(stratum[ours], minlength=10),
                                np.bincount(stratum[theirs], minlength=10))
  # The port's own draw-to-draw overlap is the ceiling ours meets.
  own = ref.ccs_reference_mask(key, margin, ratio, 0.1,
                               np.random.default_rng(4), stratas=10)
  assert abs(ref.jaccard(ours, theirs) - ref.jaccard(own, theirs)) < 0.05


def test_ccs_drop_ties_follow_the_keyed_hash_not_the_id():
  from mrmc_jax.methods import ccs  # pylint: disable=g-import-not-at-top
  # Half the examples share the hardest score: the drop takes 100 of them.
  n = 1000
  scores = np.where(np.arange(n) % 2 == 0, 5.0,
                    np.random.default_rng(0).random(n))
  labels = np.zeros(n, int)
  mask = np.asarray(ccs.ccs_select(scores, labels, 0.5, num_classes=1,
                                   beta=0.1, num_strata=5, seed=1))
  tied = np.flatnonzero(scores == 5.0)
  lost = tied[~mask[tied]]
  # Not the lowest ids: the dropped tied examples spread over all ids.
  assert lost.min() < n // 4 and lost.max() > 3 * n // 4


def test_ccs_row_defaults_to_the_reference_keys_and_global_budget():
  from mrmc_jax.methods import ccs  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import registry_test  # pylint: disable=g-import-not-at-top
  art, labels = registry_test.synthetic_artefacts(n=600)
  opts = options.SelectionOptions()
  got_scores, mask = registry.select("ccs", art, labels, 0.3, num_classes=3,
                                     opts=opts)
  aum = np.asarray(art["p_margin"], np.float64).mean(axis=1)
  np.testing.assert_allclose(got_scores, -aum, rtol=1e-6, atol=1e-6)
  want = ccs.ccs_select(-aum.astype(np.float32), labels, 0.3, num_classes=3,
                        class_balanced=False, beta=0.1, num_strata=50,
                        seed=0, drop_scores=-aum.astype(np.float32))
  np.testing.assert_array_equal(mask, np.asarray(want))
  # The library's earlier rule is a named variant.
  _, per_class = registry.select(
      "ccs(per_class=True;drop=score)", art, labels, 0.3,
      num_classes=3, opts=opts)
  np.testing.assert_array_equal(np.bincount(labels[per_class], minlength=3),
                                selection.class_quotas(labels, 3, 0.3))


def _score_case(n=600, r=6, seed=0):
  from mrmc_jax.methods import registry_test  # pylint: disable=g-import-not-at-top
  art, labels = registry_test.synthetic_artefacts(n=n, r=r, seed=seed)
  # Integer-valued EL2N ties and some never-learned rows.
  art["correct"][:40] = False
  return art, labels


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.3, 0.1])
def test_score_peers_default_to_data_diet_and_dual_pruning(ratio):
  art, labels = _score_case()
  opts = options.SelectionOptions()
  p = np.asarray(art["p_true"], np.float64)
  refs = {
      # data_diet: EL2N of one checkpoint (the last warm-up epoch).
      "el2n": np.asarray(art["el2n"], np.float64)[:, -1],
      "grand": np.asarray(art["grad_norms"], np.float64),
      "forgetting": ref.data_diet_forget_scores(art["correct"]),
      "dyn_unc": ref.dynunc_reference_scores(p.T, p.shape[1]),
  }
  for name, score in refs.items():
    _, ours = registry.select(name, art, labels, ratio, num_classes=3,
                              opts=opts)
    theirs = ref.keep_max_scores(score, ratio, np.random.default_rng(0))
    # Equal up to the order of ties, which the reference leaves to the
    # sort: every example above the reference's threshold, none below,
    # as many at it.
    cut = np.sort(score)[score.size - int(ratio * score.size)]
    assert ours[score > cut].all() and not ours[score < cut].any(), name
    assert ours.sum() == theirs.sum() == int(ratio * score.size), name
    if name != "forgetting":  # No ties: the same set.
      assert ref.jaccard(ours, theirs) == 1.0, name
    _, per_class = registry.select(f"{name}(per_class=True)",
                                   art, labels, ratio, num_classes=3,
                                   opts=opts)
    np.testing.assert_array_equal(np.bincount(labels[per_class], minlength=3),
                                  selection.class_quotas(labels, 3, ratio))


def test_forgetting_never_learned_rank_first_like_data_diet():
  art, labels = _score_case()
  _, mask = registry.select("forgetting", art, labels, 0.1, num_classes=3,
                            opts=options.SelectionOptions())
  assert mask[:40].all()
  assert np.isinf(ref.data_diet_forget_scores(art["correct"])[:40]).all()


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.3, 0.1])
def test_moderate_default_is_the_authors_middle_band(ratio):
  rng = np.random.default_rng(5)
  labels = np.repeat(np.arange(3), [200, 120, 80])
  features = (rng.normal(size=(400, 6)) * (1 + labels[:, None])
              ).astype(np.float32)
  art = {"features": features}
  _, ours = registry.select("moderate", art, labels, ratio, num_classes=3,
                            opts=options.SelectionOptions())
  theirs = ref.moderate_reference_mask(features, labels, ratio)
  # The same band, up to one example of budget rounding (round vs floor).
  assert abs(int(ours.sum()) - int(theirs.sum())) <= 1
  assert ref.jaccard(ours, theirs) >= 1 - 2 / theirs.sum()
  _, per_class = registry.select("moderate(per_class=True)",
                                 art, labels, ratio, num_classes=3,
                                 opts=options.SelectionOptions())
  np.testing.assert_array_equal(np.bincount(labels[per_class], minlength=3),
                                selection.class_quotas(labels, 3, ratio))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deepcore_greedy_picks_of_a_budget_are_the_first_of_a_larger(dtype):
  # docs/results/reference_check.py runs each greedy once, at the largest
  # ratio, and takes prefixes for the smaller ones.
  rng = np.random.default_rng(8)
  x = rng.normal(size=(120, 5)).astype(dtype)
  index = np.arange(120) + 1000
  kc = ref.deepcore_k_center_order(x, 90, 3)
  herd = ref.deepcore_herding_order(x, 90)
  close = ref.deepcore_herding_order(x, 90, closest=True)
  for arr in (kc, herd, close):
    assert np.unique(arr).size == 90
  for budget in (1, 7, 40, 90):
    np.testing.assert_array_equal(ref.deepcore_k_center_greedy(
        x, budget, 3, index), np.sort(index[kc[:budget]]))
    np.testing.assert_array_equal(ref.deepcore_herding(x, budget, index),
                                  np.sort(index[herd[:budget]]))
    np.testing.assert_array_equal(
        ref.deepcore_herding(x, budget, index, closest=True),
        np.sort(index[close[:budget]]))
  # The first centre is numpy's seeded draw, as DeepCore's.
  assert kc[0] == np.random.RandomState(3).randint(0, 120)


def test_deepcore_uncertainty_tie_orders_move_only_tied_examples():
  rng = np.random.default_rng(9)
  labels = np.repeat([0, 1], [30, 20])
  # Logits with the largest logit from 3 values: many ties at each cut.
  logits = rng.normal(size=(50, 3))
  logits[:, 0] = 5.0 + rng.integers(0, 3, 50)
  stable = ref.deepcore_uncertainty_mask(logits, labels, 0.5,
                                         "LeastConfidence", 2)
  score = ref.deepcore_rank_uncertainty(logits, "LeastConfidence")
  masks = [ref.deepcore_uncertainty_mask(logits, labels, 0.5,
                                         "LeastConfidence", 2,
                                         rng=np.random.default_rng(d))
           for d in range(6)]
  for m in masks:
    np.testing.assert_array_equal(np.bincount(labels[m]), [15, 10])
    moved = m ^ stable
    for c, quota in enumerate([15, 10]):
      cut = np.sort(score[labels == c])[quota - 1]  # The last one kept.
      assert (score[moved & (labels == c)] == cut).all()
  assert any((m != stable).any() for m in masks)
  with pytest.raises(ValueError, match="method='Ratio' is not allowed"):
    ref.deepcore_rank_uncertainty(logits, "Ratio")
