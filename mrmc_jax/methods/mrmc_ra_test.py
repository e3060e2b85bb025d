"""Tests for mrmc_ra.py: the ratio rule, the cut, exact budgets, ties."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import mrmc_ra


def test_rule_by_hand():
  assert mrmc_ra.cut_fraction(0.1, 0.2) == pytest.approx(0.18)
  assert mrmc_ra.cut_fraction(0.7, 0.2) == pytest.approx(0.06)
  assert mrmc_ra.beta_mode(0.1, 2.0) == pytest.approx(0.19)
  assert mrmc_ra.beta_mode(0.7, 2.0) == pytest.approx(0.91)


def test_top_form_is_the_cut_then_the_top():
  # One class of 20, scores 0..19; ratio 0.25 keeps 5; cut 0.4 * 0.75 = 0.3
  # drops the top 6 (ids 14..19), so the top of the rest is ids 9..13.
  scores = np.arange(20, dtype=np.float32)
  labels = np.zeros(20, int)
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.25, num_classes=1,
                                ra_cut=0.4, ra_form="top")
  np.testing.assert_array_equal(np.flatnonzero(mask), [9, 10, 11, 12, 13])
  # ra_cut = 0 with "top" is plain top-k.
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.25, num_classes=1,
                                ra_cut=0.0, ra_form="top")
  np.testing.assert_array_equal(np.flatnonzero(mask), [15, 16, 17, 18, 19])
  # The cut never leaves less than the quota: at ratio 0.9 with cut 1.0
  # (0.1 of 20 = 2 dropped) the 18 kept are ids 0..17.
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.9, num_classes=1,
                                ra_cut=1.0, ra_form="top")
  np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(18))


@pytest.mark.parametrize("form", ["beta", "uniform", "conf"])
def test_sampling_forms_exact_quotas_cut_and_seeded(form):
  rng = np.random.default_rng(0)
  n = 600
  labels = rng.integers(0, 3, n)
  scores = np.round(rng.random(n) * 4)  # Many ties.
  conf = rng.random(n)
  for ratio in (0.1, 0.3, 0.7):
    mask = mrmc_ra.mrmc_ra_select(scores, labels, ratio, num_classes=3,
                                  ra_cut=0.5, ra_form=form, seed=3,
                                  confidence=conf)
    np.testing.assert_array_equal(np.bincount(labels[mask], minlength=3),
                                  selection.class_quotas(labels, 3, ratio))
    again = mrmc_ra.mrmc_ra_select(scores, labels, ratio, num_classes=3,
                                   ra_cut=0.5, ra_form=form, seed=3,
                                   confidence=conf)
    np.testing.assert_array_equal(mask, again)
  # At ratio 0.1 the cut (45% of each class) removes the top scores.
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.1, num_classes=3,
                                ra_cut=0.5, ra_form=form, seed=3,
                                confidence=conf)
  assert scores[mask].max() < 4
  other = mrmc_ra.mrmc_ra_select(scores, labels, 0.1, num_classes=3,
                                 ra_cut=0.5, ra_form=form, seed=4,
                                 confidence=conf)
  assert (other != mask).any()


def test_beta_form_moves_toward_low_scores_as_ratio_shrinks():
  n = 2000
  scores = np.arange(n, dtype=np.float64)
  labels = np.zeros(n, int)
  med = {}
  for ratio in (0.1, 0.3):
    mask = mrmc_ra.mrmc_ra_select(scores, labels, ratio, num_classes=1,
                                  ra_cut=0.0, ra_shape=2.0, ra_form="beta",
                                  seed=0)
    med[ratio] = np.median(scores[mask]) / n
  # Modes 0.19 and 0.51 of the rank.
  assert med[0.1] < 0.3 < med[0.3] < 0.65


def test_conf_form_moves_toward_confident_as_ratio_shrinks():
  rng = np.random.default_rng(1)
  n = 3000
  conf = rng.random(n)
  scores = rng.random(n)
  labels = np.zeros(n, int)
  mean_conf = {}
  for ratio in (0.1, 0.7):
    mask = mrmc_ra.mrmc_ra_select(scores, labels, ratio, num_classes=1,
                                  ra_cut=0.0, ra_shape=4.0, ra_form="conf",
                                  confidence=conf, seed=0)
    mean_conf[ratio] = conf[mask].mean()
  assert mean_conf[0.1] > mean_conf[0.7] + 0.1
  with pytest.raises(ValueError, match="needs confidence"):
    mrmc_ra.mrmc_ra_select(scores, labels, 0.5, num_classes=1,
                           ra_form="conf")


def test_conf_anchor_fraction():
  # 100 examples; the 10 highest scores have conf 0.1, the next 10 conf
  # 0.9. Anchor over 10 (DUAL): 0.1; over 20% of N: 0.5. A higher anchor
  # gives a smaller b, so the density leans further toward conf = 1.
  scores = np.arange(100, dtype=np.float64)[::-1].copy()
  conf = np.full(100, 0.5)
  conf[:10], conf[10:20] = 0.1, 0.9
  labels = np.zeros(100, int)
  kept = {}
  for anchor in (0.0, 0.2):
    m = [mrmc_ra.mrmc_ra_select(scores, labels, 0.3, num_classes=1,
                                ra_form="conf", confidence=conf,
                                ra_anchor=anchor, seed=s) for s in range(20)]
    kept[anchor] = np.mean([conf[x].mean() for x in m])
  assert kept[0.2] > kept[0.0]
  with pytest.raises(ValueError, match="ra_anchor=1.0 is not allowed"):
    mrmc_ra.mrmc_ra_select(scores, labels, 0.3, num_classes=1,
                           ra_form="conf", confidence=conf, ra_anchor=1.0)


def test_mix_form_top_share_then_uniform():
  # One class of 100, scores 0..99, ratio 0.2 keeps 20; ra_shape 2 gives the
  # top share 1 - 0.8^2 = 0.36: 7 of the 20 are ids 93..99, the other 13
  # are drawn from ids 0..92.
  scores = np.arange(100, dtype=np.float64)
  labels = np.zeros(100, int)
  masks = [mrmc_ra.mrmc_ra_select(scores, labels, 0.2, num_classes=1,
                                  ra_cut=0.0, ra_shape=2.0, ra_form="mix",
                                  seed=s) for s in range(3)]
  for m in masks:
    assert m.sum() == 20 and m[93:].all() and m[:93].sum() == 13
  assert masks[0].tobytes() != masks[1].tobytes()


def test_errors():
  with pytest.raises(ValueError, match="ra_form='x' is not allowed"):
    mrmc_ra.mrmc_ra_select(np.ones(4), np.zeros(4, int), 0.5, num_classes=1,
                           ra_form="x")
  with pytest.raises(ValueError, match="ra_cut=2 is not allowed"):
    mrmc_ra.mrmc_ra_select(np.ones(4), np.zeros(4, int), 0.5, num_classes=1,
                           ra_cut=2)


def test_shuffle_within_class_keeps_each_class_values_and_is_seeded():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 90)
  scores = rng.random(90)
  a = mrmc_ra.shuffle_within_class(scores, labels, 0)
  np.testing.assert_array_equal(a, mrmc_ra.shuffle_within_class(scores,
                                                                labels, 0))
  assert not np.array_equal(a, mrmc_ra.shuffle_within_class(scores, labels, 1))
  assert not np.array_equal(a, scores)
  for c in range(3):
    np.testing.assert_array_equal(np.sort(a[labels == c]),
                                  np.sort(scores[labels == c]))


def test_registry_row_reads_the_shuffled_score():
  from mrmc_jax.methods import options  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import registry  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n, r = 300, 5
  labels = rng.integers(0, 3, n)
  loss = np.sort(rng.random((n, r)) * 2 + 0.05, axis=1)[:, ::-1].copy()
  art = {"loss": loss, "correct": rng.random((n, r)) > 0.5,
         "p_true": rng.random((n, r)), "el2n": rng.random((n, r)),
         "visits": np.ones((n, r))}
  opts = options.SelectionOptions()
  s0, m0 = registry.select("mrmc_ra", art, labels, 0.3, num_classes=3,
                           opts=opts)
  s1, m1 = registry.select("mrmc_ra(ranking=shuffled)", art, labels, 0.3,
                           num_classes=3, opts=opts)
  assert m0.sum() == m1.sum() and not np.array_equal(s0, s1)
  np.testing.assert_allclose(np.sort(s0), np.sort(s1))
  # One part at a time: the rank (stored scores shuffled) or the anchor.
  s2, m2 = registry.select("mrmc_ra(ranking=shuffled_rank)", art, labels,
                           0.3, num_classes=3, opts=opts)
  s3, m3 = registry.select("mrmc_ra(ranking=shuffled_anchor)", art, labels,
                           0.3, num_classes=3, opts=opts)
  np.testing.assert_array_equal(s2, s1)
  np.testing.assert_array_equal(s3, s0)
  assert len({m.tobytes() for m in (m0, m1, m2, m3)}) == 4
  # "none": no MRMC input, so any score gives the same mask.
  _, m4 = registry.select("mrmc_ra(ranking=none)", art, labels, 0.3,
                          num_classes=3, opts=opts)
  art2 = dict(art, loss=art["loss"][::-1].copy())
  _, m5 = registry.select("mrmc_ra(ranking=none)", art2, labels, 0.3,
                          num_classes=3, opts=opts)
  np.testing.assert_array_equal(m4, m5)
  assert not np.array_equal(m4, m0)


@pytest.mark.parametrize("form", ["conf", "score", "uniform", "top", "mix",
                                  "beta"])
def test_keep_leaves_rows_out_of_every_form(form):
  rng = np.random.default_rng(2)
  n = 400
  labels = rng.integers(0, 2, n)
  scores = rng.random(n)
  conf = rng.random(n)
  keep = rng.random(n) < 0.6
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.3, num_classes=2,
                                ra_form=form, confidence=conf, keep=keep,
                                seed=1)
  np.testing.assert_array_equal(np.bincount(labels[mask], minlength=2),
                                selection.class_quotas(labels, 2, 0.3))
  assert not (mask & ~keep).any()
  # When a class has too few kept rows, all of them go in first.
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.8, num_classes=2,
                                ra_form=form, confidence=conf, keep=keep,
                                seed=1)
  assert (mask | ~keep).all()
  with pytest.raises(ValueError, match="keep has dtype"):
    mrmc_ra.mrmc_ra_select(scores, labels, 0.3, num_classes=2, ra_form=form,
                           confidence=conf, keep=keep.astype(int))


def test_score_form_weights_by_the_score():
  # Two halves with equal confidence: the half with 9x the score should
  # get about 90% of a small sample.
  n = 4000
  labels = np.zeros(n, int)
  scores = np.where(np.arange(n) < n // 2, 9.0, 1.0)
  conf = np.full(n, 0.5)
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.05, num_classes=1,
                                ra_form="score", confidence=conf, seed=0)
  share = mask[: n // 2].sum() / mask.sum()
  assert 0.85 < share < 0.95
  # Zero scores are taken last.
  scores[:10] = 0.0
  mask = mrmc_ra.mrmc_ra_select(scores, labels, 0.9, num_classes=1,
                                ra_form="score", confidence=conf, seed=0)
  assert not mask[:10].any()
