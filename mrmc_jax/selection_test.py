"""Tests for selection.py: quota arithmetic by hand, ties, no retrace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax import selection


def test_budget_undoes_binary_rounding():
  assert selection.budget(0.29, 100) == 29
  assert selection.budget(0.7, 10) == 7
  assert selection.budget(1.0, 5) == 5
  assert selection.budget(0.3, 3) == 0


def test_quotas_by_hand_imbalanced_with_singleton():
  # Sizes 6, 3, 1; ratio 0.5 -> budget 5; exact shares 3, 1.5, 0.5.
  # Floors 3, 1, 0 (sum 4); the one leftover goes to the largest remainder,
  # a tie between classes 1 and 2 (both 0.5), so to class 1.
  labels = np.array([0] * 6 + [1] * 3 + [2])
  np.testing.assert_array_equal(
      selection.class_quotas(labels, 3, 0.5), [3, 2, 0])
  # Ratio 0.35 -> budget floor(3.5) = 3; shares 3*6/10=1.8, 0.9, 0.3:
  # floors 1, 0, 0 (sum 1); leftover 2 to remainders .8 (c0) then .9 (c1)
  # ordered by size: .9 (c1), .8 (c0).
  np.testing.assert_array_equal(
      selection.class_quotas(labels, 3, 0.35), [2, 1, 0])
  # Full ratio keeps everything, including the singleton.
  np.testing.assert_array_equal(
      selection.class_quotas(labels, 3, 1.0), [6, 3, 1])


def test_quotas_sum_and_bounds_random():
  rng = np.random.default_rng(0)
  for _ in range(50):
    c = int(rng.integers(1, 12))
    labels = rng.integers(0, c, int(rng.integers(1, 300)))
    labels = labels[np.argsort(rng.random(labels.size))]
    ratio = float(rng.uniform(0.01, 1.0))
    q = selection.class_quotas(labels, c, ratio)
    sizes = np.bincount(labels, minlength=c)
    assert q.sum() == np.floor(ratio * labels.size + 1e-9)
    assert np.all(q <= sizes) and np.all(q >= 0)
    # Each class within one of its exact proportional share.
    share = q.sum() * sizes / labels.size
    assert np.all(np.abs(q - share) < 1.0)


def test_quotas_capacity_moves_leftover():
  labels = np.array([0] * 10 + [1] * 10)
  # Class 0 has only 1 candidate: its 4 unused moves to class 1.
  q = selection.class_quotas(labels, 2, 0.5, capacity=np.array([1, 10]))
  np.testing.assert_array_equal(q, [1, 9])
  # Not enough capacity anywhere: everything available is taken.
  q = selection.class_quotas(labels, 2, 0.5, capacity=np.array([1, 2]))
  np.testing.assert_array_equal(q, [1, 2])


def test_select_mask_by_hand():
  scores = jnp.array([0.1, 0.9, 0.5, 0.5, 0.7, 0.2])
  labels = jnp.array([0, 0, 0, 1, 1, 1])
  # Ratio 0.5: budget 3, quotas [2, 1] (tie on remainder, lower class first).
  m = selection.select_mask_host(scores, labels, 0.5, num_classes=2)
  np.testing.assert_array_equal(m, [False, True, True, False, True, False])
  # Global top-3: 0.9, 0.7, then the 0.5 tie goes to the lower id 2.
  m = selection.select_mask_host(scores, labels, 0.5, num_classes=2,
                            class_balanced=False)
  np.testing.assert_array_equal(m, [False, True, True, False, True, False])
  m = selection.select_mask_host(scores, labels, 4 / 6, num_classes=2,
                            class_balanced=False)
  np.testing.assert_array_equal(m, [False, True, True, True, True, False])


def test_ties_to_lower_id_including_signed_zero():
  scores = jnp.array([0.0, -0.0, 0.0, -0.0])
  labels = jnp.zeros(4, jnp.int32)
  m = selection.select_mask_host(scores, labels, 0.5, num_classes=1)
  np.testing.assert_array_equal(m, [True, True, False, False])


def test_candidates_and_priority():
  scores = jnp.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
  labels = jnp.zeros(6, jnp.int32)
  cand = jnp.array([False, True, True, True, True, True])
  m = selection.select_mask_host(scores, labels, 0.5, num_classes=1,
                            candidates=cand)
  np.testing.assert_array_equal(m, [False, True, True, True, False, False])
  prio = jnp.array([0, 0, 0, 0, 1, 1], bool)
  m = selection.select_mask_host(scores, labels, 0.5, num_classes=1, priority=prio)
  np.testing.assert_array_equal(m, [True, False, False, False, True, True])
  # Fewer candidates than the budget: all candidates, nothing else.
  few = jnp.array([False, False, False, False, True, False])
  m = selection.select_mask_host(scores, labels, 0.5, num_classes=1,
                            candidates=few, class_balanced=False)
  np.testing.assert_array_equal(m, few)


def test_select_mask_counts_match_quotas():
  rng = np.random.default_rng(3)
  labels = jnp.asarray(rng.integers(0, 7, 500))
  scores = jnp.asarray(rng.normal(size=500), jnp.float32)
  for ratio in (0.1, 0.33, 0.9):
    m = np.asarray(selection.select_mask_host(scores, labels, ratio, num_classes=7))
    q = selection.class_quotas(np.asarray(labels), 7, ratio)
    np.testing.assert_array_equal(
        np.bincount(np.asarray(labels)[m], minlength=7), q)
    # Within each class the kept ones outscore the dropped ones.
    for c in range(7):
      s = np.asarray(scores)[np.asarray(labels) == c]
      k = m[np.asarray(labels) == c]
      if k.any() and (~k).any():
        assert s[k].min() >= s[~k].max()


def test_new_ratio_does_not_retrace():
  rng = np.random.default_rng(4)
  labels = jnp.asarray(rng.integers(0, 5, 200))
  scores = jnp.asarray(rng.normal(size=200), jnp.float32)
  # Swap in the jitted core wrapped by a trace counter.
  orig = selection._select_core
  traced = chex.assert_max_traces(orig.__wrapped__, n=1)
  selection._select_core = jax.jit(
      traced, static_argnames=("num_classes", "class_balanced"))
  try:
    for ratio in (0.1, 0.2, 0.5, 0.77, 1.0):
      selection.select_mask_host(scores, labels, ratio, num_classes=5)
  finally:
    selection._select_core = orig
    chex.clear_trace_counter()


def test_matches_numpy_lexsort_reference():
  rng = np.random.default_rng(6)
  n, c = 3000, 13
  labels = rng.integers(0, c, n)
  scores = np.round(rng.normal(size=n), 1).astype(np.float32)  # many ties
  scores[:10] = [np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, -1e-40, 0, 0]
  ratio = 0.37
  m = np.asarray(selection.select_mask_host(scores, labels, ratio, num_classes=c))
  order = np.lexsort((np.arange(n), -scores.astype(np.float64) + 0.0, labels))
  q = selection.class_quotas(labels, c, ratio)
  ref = np.zeros(n, bool)
  for k in range(c):
    members = order[labels[order] == k]
    ref[members[:q[k]]] = True
  np.testing.assert_array_equal(m, ref)
  g = np.asarray(selection.select_mask_host(scores, labels, ratio, num_classes=c,
                                       class_balanced=False))
  ref = np.zeros(n, bool)
  ref[np.lexsort((np.arange(n), -scores.astype(np.float64) + 0.0))[
      :selection.budget(ratio, n)]] = True
  np.testing.assert_array_equal(g, ref)


def test_jit_and_no_jit_agree():
  rng = np.random.default_rng(5)
  labels = jnp.asarray(rng.integers(0, 4, 100))
  scores = jnp.asarray(rng.integers(0, 5, 100).astype(np.float32))  # ties
  jitted = selection.select_mask_host(scores, labels, 0.3, num_classes=4)
  with jax.disable_jit():
    eager = selection.select_mask_host(scores, labels, 0.3, num_classes=4)
  np.testing.assert_array_equal(jitted, eager)


@pytest.mark.parametrize("kwargs,match", [
    (dict(ratio=0.0), r"ratio=0.0 is not allowed"),
    (dict(ratio=1.5), r"ratio=1.5 is not allowed"),
    (dict(labels=np.array([0, 1, 9])), r"label 9 is outside \[0, 3\)"),
    (dict(labels=np.array([0, -1, 2])), r"label -1 is outside"),
    (dict(scores=np.array([0.1, np.nan, 0.3])), r"1 NaN values"),
    (dict(labels=np.array([0, 1])), r"mismatched leading dimensions"),
])
def test_bad_input(kwargs, match):
  args = dict(scores=np.array([0.1, 0.2, 0.3]), labels=np.array([0, 1, 2]),
              ratio=0.5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    selection.select_mask_host(args["scores"], args["labels"], args["ratio"],
                          num_classes=3)


def test_select_mask_inside_a_user_jit_equals_the_host_wrapper():
  rng = np.random.default_rng(7)
  n, c = 1000, 7
  labels = rng.integers(0, c, n)
  scores = np.round(rng.normal(size=n), 1).astype(np.float32)  # ties

  @jax.jit
  def user_fn(s, l):
    # The user's own jitted code: scores computed, then selected, in one jit.
    return selection.select_mask(s * 2.0, l, 0.3, num_classes=c)

  for cb in (True, False):
    host = selection.select_mask_host(scores * 2.0, labels, 0.3,
                                      num_classes=c, class_balanced=cb)
    inside = jax.jit(lambda s, l, cb=cb: selection.select_mask(
        s * 2.0, l, 0.3, num_classes=c, class_balanced=cb))(scores, labels)
    np.testing.assert_array_equal(inside, host)
  np.testing.assert_array_equal(
      user_fn(scores, labels),
      selection.select_mask_host(scores * 2.0, labels, 0.3, num_classes=c))


@pytest.mark.parametrize("seed", range(6))
def test_quotas_in_jit_equal_class_quotas(seed):
  rng = np.random.default_rng(seed)
  c = int(rng.integers(1, 40))
  n = int(rng.integers(c, 3000))
  labels = rng.integers(0, c, n)
  ratio = float(rng.uniform(0.01, 1.0))
  m = np.asarray(selection.select_mask(jnp.zeros(n), labels, ratio,
                                       num_classes=c))
  np.testing.assert_array_equal(np.bincount(labels[m], minlength=c),
                                selection.class_quotas(labels, c, ratio))


def test_traced_quotas_do_not_retrace():
  rng = np.random.default_rng(8)
  labels = rng.integers(0, 5, 300)
  scores = rng.normal(size=300).astype(np.float32)
  counter = []

  @jax.jit
  def pick(quotas):
    counter.append(1)  # runs at trace time only
    return selection.select_mask(scores, labels, num_classes=5, quotas=quotas)

  for ratio in (0.1, 0.4, 0.9):
    q = selection.class_quotas(labels, 5, ratio)
    np.testing.assert_array_equal(
        pick(jnp.asarray(q, jnp.int32)),
        selection.select_mask_host(scores, labels, ratio, num_classes=5))
  assert len(counter) == 1


def test_ratio_and_quotas_are_exclusive():
  with pytest.raises(ValueError, match="either a static ratio"):
    selection.select_mask(jnp.zeros(4), jnp.zeros(4, jnp.int32), 0.5,
                          num_classes=1, quotas=jnp.ones(1, jnp.int32))


def test_seeded_ties_reproducible_unique_and_unbiased():
  # 200 tied zeros and 4 larger scores; keep 54 of 204 (one class).
  scores = np.zeros(204, np.float32)
  scores[[7, 50, 120, 199]] = 1.0
  labels = np.zeros(204, np.int32)
  masks = [np.asarray(selection.select_mask_host(
      scores, labels, 54 / 204, num_classes=1, tie_seed=s)) for s in range(8)]
  for m in masks:
    assert m.sum() == 54 and m[[7, 50, 120, 199]].all()
  # The same seed gives the same mask, jitted or on the host.
  np.testing.assert_array_equal(masks[0], np.asarray(
      selection.select_mask_host(scores, labels, 54 / 204, num_classes=1,
                                 tie_seed=0)))
  np.testing.assert_array_equal(masks[0], np.asarray(selection.select_mask(
      jnp.asarray(scores), jnp.asarray(labels), 54 / 204, num_classes=1,
      tie_seed=jnp.int32(0))))
  # Another seed, another choice among the ties; and not the lowest ids.
  assert len({m.tobytes() for m in masks}) == 8
  low = np.zeros(204, bool)
  low[np.flatnonzero(scores == 0)[:50]] = True
  assert not any((m & (scores == 0) == low).all() for m in masks)
  # The tied picks are spread over the ids: about half below id 102.
  tied = np.concatenate([np.flatnonzero(m & (scores == 0)) for m in masks])
  assert 0.35 < np.mean(tied < 102) < 0.65
  # tie_seed=None keeps the lowest-id rule.
  m = np.asarray(selection.select_mask_host(scores, labels, 54 / 204,
                                            num_classes=1))
  np.testing.assert_array_equal(m & (scores == 0), low)


def test_tie_ranks_is_a_permutation():
  r = np.asarray(selection.tie_ranks(50, jnp.int32(4)))
  np.testing.assert_array_equal(np.sort(r), np.arange(50))
  np.testing.assert_array_equal(np.asarray(selection.tie_ranks(5, None)),
                                np.arange(5))


def test_a_ratio_that_selects_nothing_is_refused():
  scores, labels = jnp.arange(6.0), jnp.array([0, 1, 2, 0, 1, 2])
  for fn in (selection.select_mask, selection.select_mask_host):
    with pytest.raises(ValueError, match=r"ratio=0.1 selects floor\(0.1 \* "
                       r"N\) = 0 of N=6 examples; it must select at least "
                       r"one \(ratio >= 1/6\)"):
      fn(scores, labels, 0.1, num_classes=3)
  with pytest.raises(ValueError, match=r"ratio=0.1 selects .* 0 of N=6"):
    selection.class_quotas(np.asarray(labels), 3, 0.1)


def test_a_global_top_k_that_leaves_a_class_empty_warns():
  labels = jnp.array([0] * 4 + [1] * 4 + [2] * 4 + [3] * 4)
  scores = jnp.where(labels == 0, 10.0, 0.0) + jnp.arange(16.0) / 100
  for fn in (selection.select_mask, selection.select_mask_host):
    with pytest.warns(UserWarning, match=r"the global top-k \(class_balanced"
                      r"=False\) selected no example of 3 of the 4 classes "
                      r"present \(first \[1, 2, 3\]\)"):
      mask = fn(scores, labels, 0.25, num_classes=4, class_balanced=False)
    np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2, 3])


def test_quotas_larger_than_a_class_are_refused_when_concrete():
  scores, labels = jnp.arange(6.0), jnp.array([0, 0, 1, 1, 1, 2])
  with pytest.raises(ValueError, match=r"quotas\[0\] = 3 is more than the 2 "
                     r"eligible examples of class 0"):
    selection.select_mask(scores, labels, num_classes=3,
                          quotas=jnp.array([3, 1, 1]))
  with pytest.raises(ValueError, match=r"quotas\[1\] = 2 is more than the 1 "
                     r"eligible examples of class 1"):
    selection.select_mask(scores, labels, num_classes=3,
                          quotas=jnp.array([1, 2, 0]),
                          eligible=jnp.array([True] * 3 + [False] * 3))


def test_selected_minus_inf_rows_warn():
  # -inf ranks last: taken only when a class has no other row left, and
  # then said (mrmc_scores marks the rows it leaves out with -inf).
  scores = jnp.array([1.0, -jnp.inf, -jnp.inf, 2.0])
  labels = jnp.array([0, 0, 1, 1])
  with pytest.warns(UserWarning, match=r"1 selected rows score -inf"):
    mask = selection.select_mask(scores, labels, 0.75, num_classes=2)
  assert int(mask.sum()) == 3


def test_wrong_containers_and_traced_static_arguments_are_refused():
  scores, labels = jnp.arange(6.0), jnp.array([0, 1, 2, 0, 1, 2])
  with pytest.raises(ValueError, match=r"scores has type list; expected a "
                     r"jax or numpy array"):
    selection.select_mask([0.1] * 6, labels, 0.5, num_classes=3)
  with pytest.raises(ValueError, match=r"ratio is traced.*static.*quotas="):
    jax.jit(lambda s, l, r: selection.select_mask(s, l, r, num_classes=3))(
        scores, labels, 0.5)
  with pytest.raises(ValueError, match=r"class_balanced is traced"):
    jax.jit(lambda s, l, c: selection.select_mask(
        s, l, 0.5, num_classes=3, class_balanced=c))(scores, labels, True)
