"""Tests for boundary: the step distance, the CCS fill and the nearest rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import boundary
from mrmc_jax.methods import registry


def _linear(scale, x):
  """Two classes on a line: logits `scale * [x, -x]`, class 0 iff x > 0."""
  return scale * jnp.stack([x[:, 0], -x[:, 0]], axis=-1)


def test_distance_counts_sign_steps_by_hand():
  # Label 0 pushes x down by 0.1 a step, label 1 up. 0.25 -> .15, .05,
  # -.05: flips at k = 3; -0.3 is wrong already (0); -0.12 with label 1
  # -> -.02, .08: 2; 0.85 flips at 9; 0.95 at 10 = K and 5.0 never: both K.
  x = jnp.array([[0.25], [-0.3], [-0.12], [0.85], [0.95], [5.0]])
  y = jnp.array([0, 0, 1, 0, 0, 0])
  d = boundary.boundary_distance(_linear, 1.0, x, y, step_size=0.1,
                                 max_steps=10)
  assert d.dtype == jnp.int32
  np.testing.assert_array_equal(d, [3, 0, 2, 9, 10, 10])


def test_distance_jits_and_uses_the_variables():
  x = jnp.array([[0.25], [0.45]])
  y = jnp.array([0, 0])
  fn = jax.jit(lambda v, x, y: boundary.boundary_distance(
      _linear, v, x, y, step_size=0.1, max_steps=4))
  # The sign of the gradient does not depend on the scale: same steps.
  np.testing.assert_array_equal(fn(1.0, x, y), [3, 4])
  np.testing.assert_array_equal(fn(3.0, x, y), [3, 4])
  # A flipped model gets every example wrong at once.
  np.testing.assert_array_equal(fn(-1.0, x, y), [0, 0])


def test_ccs_fills_strata_by_ccs_budget_split():
  # Strata sizes [4, 2, 6], budget 6: the sparsest (d=1) takes 6 // 3 = 2,
  # then d=0 takes 4 // 2 = 2, then d=2 the last 2 (CCS's split; the
  # third-party reproduction's loop would take 4, 2, 0).
  d = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
  labels = np.zeros(12, np.int64)
  mask = boundary.boundary_select(d, labels, 0.5, num_classes=1,
                                  max_steps=2, seed=0)
  assert mask.sum() == 6
  np.testing.assert_array_equal(np.bincount(d[mask], minlength=3), [2, 2, 2])
  # Budget 3: strata d=1 and d=0 take one each, d=2 the last.
  mask = boundary.boundary_select(d, labels, 0.25, num_classes=1,
                                  max_steps=2, seed=0)
  np.testing.assert_array_equal(np.bincount(d[mask], minlength=3), [1, 1, 1])


def test_ccs_picks_within_a_stratum_by_the_keyed_hash():
  d = np.array([0] * 6 + [1] * 6)
  labels = np.zeros(12, np.int64)
  picks = []
  for seed in (0, 1, 2):
    mask = boundary.boundary_select(d, labels, 0.5, num_classes=1,
                                    max_steps=1, seed=seed)
    keys = np.asarray(selection.tie_keys(jnp.arange(12, dtype=jnp.int32),
                                         seed))
    for stratum in (0, 1):
      ids = np.flatnonzero(d == stratum)
      want = ids[np.argsort(keys[ids])[:3]]
      np.testing.assert_array_equal(np.flatnonzero(mask & (d == stratum)),
                                    np.sort(want))
    picks.append(tuple(np.flatnonzero(mask)))
  assert len(set(picks)) > 1  # The seed changes the draw, not the counts.


def test_exact_count_and_class_quotas():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], [50, 31, 19])
  d = rng.integers(0, 11, size=100)
  for mode in boundary.MODES:
    for ratio in (0.7, 0.33, 0.1):
      mask = boundary.boundary_select(d, labels, ratio, num_classes=3,
                                      mode=mode, seed=3)
      np.testing.assert_array_equal(
          np.bincount(labels[mask], minlength=3),
          selection.class_quotas(labels, 3, ratio))
      glob = boundary.boundary_select(d, labels, ratio, num_classes=3,
                                      class_balanced=False, mode=mode, seed=3)
      assert glob.sum() == selection.budget(ratio, 100)


def test_nearest_keeps_the_smallest_distances_ties_by_hash():
  d = np.array([3, 0, 2, 2, 2, 5, 1, 2])
  labels = np.zeros(8, np.int64)
  mask = boundary.boundary_select(d, labels, 0.5, num_classes=1,
                                  mode="nearest", seed=7)
  # 0 and 1, then two of the four 2s: those with the lowest tie keys.
  keys = np.asarray(selection.tie_keys(jnp.arange(8, dtype=jnp.int32), 7))
  twos = np.flatnonzero(d == 2)
  want = np.sort(np.r_[1, 6, twos[np.argsort(keys[twos])[:2]]])
  np.testing.assert_array_equal(np.flatnonzero(mask), want)


@pytest.mark.parametrize("distance, match", [
    ([0, 1.5, 2], r"distance\[1\]=1.5 is not allowed"),
    ([0, -1, 2], r"distance\[1\]=-1.0 is not allowed"),
    ([0, 1, 11], r"distance\[2\]=11.0 is not allowed.*\[0, 10\]"),
    ([[0, 1]], "expected a 1-D"),
])
def test_bad_distances_one_line(distance, match):
  labels = np.zeros(np.size(distance), np.int64)
  with pytest.raises(ValueError, match=match) as e:
    boundary.boundary_select(np.array(distance), labels, 0.5, num_classes=1)
  assert "\n" not in str(e.value)


def test_bad_options_one_line():
  d = np.zeros(4, np.int64)
  labels = np.zeros(4, np.int64)
  with pytest.raises(ValueError, match="boundary_mode='far' is not allowed"):
    boundary.boundary_select(d, labels, 0.5, num_classes=1, mode="far")
  with pytest.raises(ValueError, match="mode='far' is not allowed"
                     ) as e:
    registry.check_method("boundary(mode=far)")
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="step_size"):
    boundary.boundary_distance(_linear, 1.0, jnp.zeros((2, 1)),
                               jnp.zeros(2, jnp.int32), step_size=0.0)
  with pytest.raises(ValueError, match="max_steps"):
    boundary.boundary_distance(_linear, 1.0, jnp.zeros((2, 1)),
                               jnp.zeros(2, jnp.int32), max_steps=0)


def test_registry_row_reads_the_boundary_artefact():
  assert registry.needs(["boundary"]) == frozenset({"boundary"})
  rng = np.random.default_rng(1)
  labels = np.repeat([0, 1], 20)
  art = {"boundary": rng.integers(0, boundary.MAX_STEPS + 1,
                                  size=40).astype(np.float32),
         "boundary_settings": boundary.settings()}
  opts = registry.SelectionOptions()
  for spec in ("boundary", "boundary(mode=nearest)"):
    scores, mask = registry.select(spec, art, labels, 0.5, num_classes=2,
                                   opts=opts)
    np.testing.assert_array_equal(scores, art["boundary"])
    assert mask.sum() == 20
  _, nearest = registry.select("boundary(mode=nearest)", art,
                               labels, 0.5, num_classes=2, opts=opts)
  for c in (0, 1):
    kept = art["boundary"][(labels == c) & nearest]
    dropped = art["boundary"][(labels == c) & ~nearest]
    assert kept.max() <= dropped.min()


@pytest.mark.parametrize("stored", [None, [0.1, 10.0], [0.05, 20.0]])
def test_distances_of_other_settings_are_refused(stored):
  art = {"boundary": np.zeros(10, np.float32)}
  if stored is not None:
    art["boundary_settings"] = np.array(stored, np.float32)
  with pytest.raises(ValueError, match="recorded with.*delete warmup") as e:
    registry.select("boundary", art, np.zeros(10, np.int64), 0.5,
                    num_classes=1, opts=registry.SelectionOptions())
  assert "\n" not in str(e.value)
