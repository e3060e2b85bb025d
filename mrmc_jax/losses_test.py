"""Tests for losses.py, with values worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import losses


def test_per_example_loss_by_hand():
  # Uniform logits over 4 classes: loss log(4) for every row.
  logits = jnp.zeros((3, 4))
  labels = jnp.array([0, 1, 3])
  np.testing.assert_allclose(
      losses.per_example_loss(logits, labels), np.full(3, np.log(4.0)),
      rtol=1e-6)
  # logits [log 3, 0] -> p = [3/4, 1/4].
  logits = jnp.array([[np.log(3.0), 0.0], [np.log(3.0), 0.0]])
  out = losses.per_example_loss(logits, jnp.array([0, 1]))
  np.testing.assert_allclose(out, [-np.log(0.75), -np.log(0.25)], rtol=1e-6)


def test_per_example_loss_mask_zeroes_padding():
  logits = jnp.array([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
  mask = jnp.array([True, False, True])
  out = losses.per_example_loss(logits, jnp.array([0, 0, 1]), mask)
  assert out[1] == 0.0
  np.testing.assert_allclose(out[2], np.log(2.0), rtol=1e-6)


def test_masked_mean():
  v = jnp.array([1.0, 100.0, 3.0])
  assert losses.masked_mean(v, jnp.array([True, False, True])) == 2.0
  assert losses.masked_mean(v, jnp.zeros(3, bool)) == 0.0


def test_per_example_stats_by_hand():
  logits = jnp.array([[np.log(3.0), 0.0], [np.log(3.0), 0.0], [0.0, 0.0]])
  labels = jnp.array([0, 1, 1])
  s = losses.per_example_stats(logits, labels, jnp.array([True, True, False]))
  np.testing.assert_allclose(s["p_true"], [0.75, 0.25, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(s["correct"], [True, False, False])
  # EL2N of p=[3/4,1/4] vs onehot(0): sqrt(1/16+1/16); vs onehot(1): sqrt(2)*3/4.
  np.testing.assert_allclose(
      s["el2n"], [np.sqrt(2) / 4, np.sqrt(2) * 0.75, 0.0], rtol=1e-6)
  np.testing.assert_allclose(
      s["loss"], [-np.log(0.75), -np.log(0.25), 0.0], rtol=1e-6)


def test_margins_by_hand():
  # Logit margin z_y - max_{k != y} z_k (AUM) and the probability margin of
  # CCS's accumulated_margin, p_y - max_{k != y} p_k.
  logits = jnp.array([[2.0, 0.5, -1.0], [2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
  labels = jnp.array([0, 2, 1])
  s = losses.per_example_stats(logits, labels, jnp.array([True, True, False]))
  np.testing.assert_allclose(s["margin"], [1.5, -3.0, 0.0], rtol=1e-6)
  p = np.exp([2.0, 0.5, -1.0]) / np.exp([2.0, 0.5, -1.0]).sum()
  np.testing.assert_allclose(s["p_margin"], [p[0] - p[1], p[2] - p[0], 0.0],
                             rtol=1e-6)
  one = losses.per_example_stats(jnp.ones((2, 1)), jnp.array([0, 0]))
  np.testing.assert_array_equal(one["margin"], [0.0, 0.0])


def _linear_apply(variables, x):
  return x @ variables["params"]["w"] + variables["params"]["b"]


def test_vmapped_loss_matches_batched():
  rng = np.random.default_rng(0)
  variables = {"params": {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                          "b": jnp.zeros(3)}}
  x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  y = jnp.array([0, 2, 1, 2])
  loss_fn = losses.make_per_example_loss_fn(_linear_apply)
  np.testing.assert_allclose(
      loss_fn(variables, x, y),
      losses.per_example_loss(_linear_apply(variables, x), y), rtol=1e-5)


def test_grad_norms_by_hand():
  # Linear softmax model: d loss / d w = x (p - onehot)^T, d loss / d b = p - e.
  # With w = 0, p is uniform (1/2, 1/2): |grad_b|^2 = 1/2, |grad_w|^2 = |x|^2/2.
  variables = {"params": {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)},
               "extra": {"unused": jnp.ones(1)}}
  x = jnp.array([[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]])
  y = jnp.array([0, 1, 0])
  mask = jnp.array([True, True, False])
  norms = losses.per_example_grad_norms(_linear_apply, variables, x, y, mask)
  np.testing.assert_allclose(
      norms, [np.sqrt(25 / 2 + 1 / 2), np.sqrt(1 / 2 + 1 / 2), 0.0], rtol=1e-5)


def test_stats_jit_and_no_jit_agree():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, 6))
  mask = jnp.array([1, 1, 1, 1, 0, 0], bool)
  jitted = jax.jit(losses.per_example_stats)(logits, labels, mask)
  with jax.disable_jit():
    eager = losses.per_example_stats(logits, labels, mask)
  for k in eager:
    np.testing.assert_allclose(jitted[k], eager[k], rtol=1e-6)


def test_a_label_outside_the_classes_is_marked_invalid_under_jit():
  # Under jax.jit the label range cannot be refused: such a row is flagged
  # (`bad_label`) and gets NaN statistics, never a finite loss (a one-hot of
  # a label == C is all zeros, which read as loss 0 and p_true 0 before).
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0],
                      [1.0, 0.0, 0.0]])
  labels = jnp.array([0, 3, -1, 5])
  mask = jnp.array([True, True, True, False])
  stats = jax.jit(losses.per_example_stats)(logits, labels, mask)
  np.testing.assert_array_equal(stats["bad_label"], [False, True, True, False])
  assert np.isfinite(stats["loss"][0])
  for k in ("loss", "p_true", "el2n"):
    assert np.isnan(stats[k][1:3]).all(), k
    assert stats[k][3] == 0.0, k  # padding stays zero, not flagged
  assert not stats["correct"][1:].any()
  # A user loss is not passed through for such rows either.
  stats = jax.jit(losses.per_example_stats)(logits, labels, mask,
                                            jnp.ones(4))
  assert np.isnan(stats["loss"][1:3]).all()
