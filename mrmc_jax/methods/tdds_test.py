"""Tests for tdds.py against a NumPy port of the authors' code."""

import numpy as np
import pytest
from scipy.special import softmax

from mrmc_jax import selection
from mrmc_jax.methods import options
from mrmc_jax.methods import registry
from mrmc_jax.methods import tdds


def upstream_generate(logits, indexes, window, decay):
  """`importance_evaluation.py:generate` of zhangxin-xd/Dataset-Pruning-TDDS
  in NumPy (its torch `index_add` is a scatter into zeros): logits
  `[T, N, C]` in each epoch's shuffled order, indexes `[T, N]`. Returns
  (scores in id order, `data_mask` = ascending argsort)."""
  t_len = logits.shape[0]
  moving = []
  k = 0
  while k < t_len - window + 1:
    probs = softmax(logits[k:k + window], axis=2)
    rere = []
    for i in range(window):
      re = np.zeros_like(probs[0])
      np.add.at(re, indexes[k + i], probs[i])
      rere.append(re)
    kd = []
    for j in range(window - 1):
      log = np.log(rere[j + 1] + 1e-8) - np.log(rere[j] + 1e-8)
      kd.append(np.abs(rere[j + 1] * log).sum(axis=1))
    kd = np.array(kd)
    avg = kd.sum(0) / (window - 1)
    diff = np.array([kd[ii] - avg for ii in range(window - 1)])
    norm = np.linalg.norm(diff, axis=0)
    moving.append(norm * decay * (1 - decay) ** (t_len - window - k))
    k += 1
  score = np.squeeze(sum(np.array(moving), 0))
  return score, score.argsort()


def _shuffled(probs_by_id, rng):
  """Per epoch: a shuffled order, its logits and its index array."""
  n, t, _ = probs_by_id.shape
  idx = np.stack([rng.permutation(n) for _ in range(t)])
  logits = np.stack([np.log(probs_by_id[idx[e], e]) for e in range(t)])
  return logits, idx


@pytest.mark.parametrize("t,window,decay", [(6, 4, 0.9), (5, 5, 0.5),
                                            (7, 2, 0.3)])
def test_scores_match_the_upstream_port(t, window, decay):
  rng = np.random.default_rng(t)
  probs = softmax(rng.normal(size=(40, t, 5)) * 2, axis=2)
  logits, idx = _shuffled(probs, rng)
  want, _ = upstream_generate(logits, idx, window, decay)
  got = np.asarray(tdds.tdds_scores(probs, window=window, decay=decay))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)


def test_the_method_scores_the_two_outcome_output_and_keeps_upstreams_set():
  rng = np.random.default_rng(0)
  n, r = 50, 8
  p_true = rng.uniform(0.02, 0.98, size=(n, r))
  labels = rng.integers(0, 3, n)
  two = np.stack([p_true, 1 - p_true], axis=-1)
  logits, idx = _shuffled(two, rng)
  want, data_mask = upstream_generate(logits, idx, window=5, decay=0.9)
  # The default: the top over all N, as upstream.
  opts = options.SelectionOptions().replace(tdds_window=5)
  scores, mask = registry.select("tdds", {"p_true": p_true, "loss": p_true,
                                          "correct": p_true > .5,
                                          "el2n": p_true, "visits":
                                          np.ones((n, r), np.int32)},
                                 labels, 0.3, num_classes=3, opts=opts)
  np.testing.assert_allclose(scores, want, rtol=2e-4)
  # Upstream keeps data_mask[int(prune_rate * N):], prune_rate = 1 - ratio.
  kept = np.zeros(n, bool)
  kept[data_mask[int(0.7 * n):]] = True
  np.testing.assert_array_equal(mask, kept)
  # The variant keeps per-class quotas of the same scores.
  _, balanced = registry.select("tdds", {"p_true": p_true, "loss": p_true,
                                         "correct": p_true > .5,
                                         "el2n": p_true, "visits":
                                         np.ones((n, r), np.int32)},
                                labels, 0.3, num_classes=3,
                                opts=opts.replace(tdds_class_balanced=True))
  np.testing.assert_array_equal(
      np.bincount(labels[balanced], minlength=3),
      selection.class_quotas(labels, 3, 0.3))


def test_two_outcome_is_upstream_exactly_for_two_classes():
  rng = np.random.default_rng(1)
  probs = softmax(rng.normal(size=(30, 6, 2)), axis=2)
  np.testing.assert_allclose(
      tdds.tdds_scores(tdds.two_outcome_probs(probs[..., 0]), window=3),
      tdds.tdds_scores(probs, window=3), rtol=1e-5, atol=1e-7)


def test_constant_outputs_score_zero_and_bad_input_is_refused():
  probs = np.full((4, 5, 3), 1 / 3)
  np.testing.assert_allclose(tdds.tdds_scores(probs, window=3), 0.0)
  with pytest.raises(ValueError, match="at least 2 epochs"):
    tdds.tdds_scores(probs[:, :1])
  with pytest.raises(ValueError, match=r"decay=1.0 is not allowed"):
    tdds.tdds_scores(probs, decay=1.0)
  with pytest.raises(ValueError, match="window"):
    tdds.tdds_scores(probs, window=1)
  with pytest.raises(ValueError, match=r"\[N, T, C\]"):
    tdds.tdds_scores(probs[0])
