"""Tests for mrmc_r.py: the two stages, the proxy, errors, and the row."""

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import mrmc
from mrmc_jax.methods import mrmc_r
from mrmc_jax.methods import options
from mrmc_jax.methods import registry_test


def _problem(n=240, c=4, d=8, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  centers = rng.normal(size=(c, d)) * 3
  feats = (centers[labels] + rng.normal(size=(n, d))).astype(np.float32)
  scores = rng.gamma(2.0, 1.0, n).astype(np.float32)
  return scores, feats, labels


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.7])
def test_rho_one_is_mrmc(balanced, ratio):
  scores, feats, labels = _problem()
  mask, info = mrmc_r.mrmc_r_select(scores, feats, labels, ratio,
                                    num_classes=4, rho=1.0,
                                    class_balanced=balanced, epochs=2)
  ref = selection.select_mask_host(scores, labels, ratio, num_classes=4,
                              class_balanced=balanced)
  np.testing.assert_array_equal(mask, ref)
  np.testing.assert_array_equal(info["stage1"], ref)


def test_stage_sizes_and_quotas():
  scores, feats, labels = _problem()
  mask, info = mrmc_r.mrmc_r_select(scores, feats, labels, 0.5,
                                    num_classes=4, rho=0.3, epochs=3)
  mask, stage1 = np.asarray(mask), np.asarray(info["stage1"])
  assert mask.sum() == 120 and stage1.sum() == 36  # floor(0.3 * 120)
  assert np.all(mask[stage1])  # C' is part of C
  np.testing.assert_array_equal(np.bincount(labels[mask], minlength=4),
                                selection.class_quotas(labels, 4, 0.5))
  # phi_reg is a probability.
  assert np.all((info["phi_reg"] > 0) & (info["phi_reg"] <= 1))


def test_proxy_learns_and_regulariser_reranks():
  # Two classes; C' sits in one cluster (A) of class 0. Cluster B of class 0
  # lies next to class 1, so a proxy trained on C' gets B wrong. With a large
  # gamma the second stage prefers B over the rest of A.
  rng = np.random.default_rng(1)
  n = 200
  labels = np.repeat([0, 1], n // 2)
  feats = np.zeros((n, 2), np.float32)
  feats[:50] = [4.0, 0.0]      # class 0, cluster A (high MRMC scores)
  feats[50:100] = [1.0, 4.0]   # class 0, cluster B (lower scores)
  feats[100:] = [-1.0, 4.0]    # class 1
  feats += rng.normal(size=feats.shape).astype(np.float32) * 0.1
  scores = np.where(np.arange(n) < 50, 2.0, 1.0).astype(np.float32)
  scores[50:100] = 1.9
  mask, info = mrmc_r.mrmc_r_select(scores, feats, labels, 0.4, num_classes=2,
                                    rho=0.5, gamma=5.0, learning_rate=0.5,
                                    epochs=50, batch_size=16)
  phi_reg = np.asarray(info["phi_reg"])
  # The proxy fits C' (cluster A) better than unseen cluster B.
  assert phi_reg[:50].mean() > phi_reg[50:100].mean()
  mask = np.asarray(mask)
  # Class 0 quota 40: 20 from C' (cluster A) and the rest from cluster B,
  # although cluster A scores higher under plain MRMC.
  assert mask[:50].sum() == 20 and mask[50:100].sum() == 20
  plain = np.asarray(selection.select_mask_host(scores, labels, 0.4, num_classes=2))
  assert plain[:50].sum() == 40


@pytest.mark.parametrize("kwargs,match", [
    (dict(rho=0.0), r"rho=0.0 is not allowed"),
    (dict(gamma=-1.0), r"gamma=-1.0 is not allowed"),
    (dict(score_scale="rank"), r"score_scale='rank' is not allowed"),
    (dict(ratio=2.0), r"ratio=2.0 is not allowed"),
])
def test_bad_input(kwargs, match):
  scores, feats, labels = _problem(n=20)
  args = dict(ratio=0.5)
  args.update(kwargs)
  ratio = args.pop("ratio")
  with pytest.raises(ValueError, match=match):
    mrmc_r.mrmc_r_select(scores, feats, labels, ratio, num_classes=4, **args)


def test_mismatched_features():
  scores, feats, labels = _problem(n=20)
  with pytest.raises(ValueError, match="mismatched leading dimensions"):
    mrmc_r.mrmc_r_select(scores, feats[:10], labels, 0.5, num_classes=4)


def test_row_with_rho_one_selects_the_mrmc_mask():
  art, labels = registry_test.synthetic_artefacts()
  opts = options.SelectionOptions(rho=1.0, proxy_epochs=1)
  phi, mask = mrmc_r.METHOD.select(art, labels, 0.3, num_classes=3,
                                   opts=opts, cache=None)
  ref_scores, ref = mrmc.METHOD.select(art, labels, 0.3, num_classes=3,
                                       opts=opts, cache=None)
  np.testing.assert_array_equal(mask, ref)
  # The row returns phi, the MRMC score minus gamma * phi_reg.
  assert phi.dtype == np.float32
  assert np.all(phi <= ref_scores) and np.all(phi >= ref_scores - 2.0)
