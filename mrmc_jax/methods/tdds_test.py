"""Tests for tdds.py against a NumPy port of the authors' code."""

import numpy as np
import pytest
from scipy.special import softmax

from mrmc_jax import selection
from mrmc_jax.methods import options
from mrmc_jax.methods import reference_check as ref
from mrmc_jax.methods import registry
from mrmc_jax.methods import tdds


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
  want, _ = ref.tdds_reference_generate(logits, idx, window, decay)
  got = np.asarray(tdds.tdds_scores(probs, window=window, decay=decay))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)


def test_the_method_scores_the_two_outcome_output_and_keeps_upstreams_set():
  rng = np.random.default_rng(0)
  n, r = 50, 8
  p_true = rng.uniform(0.02, 0.98, size=(n, r))
  labels = rng.integers(0, 3, n)
  two = np.stack([p_true, 1 - p_true], axis=-1)
  logits, idx = _shuffled(two, rng)
  want, data_mask = ref.tdds_reference_generate(logits, idx, window=5,
                                                decay=0.9)
  # The default: the top over all N, as upstream.
  opts = options.SelectionOptions().replace(tdds_window=5)
  scores, mask = registry.select("tdds", {"p_true": p_true, "loss": p_true,
                                          "correct": p_true > .5,
                                          "el2n": p_true, "visits":
                                          np.ones((n, r), np.int32)},
                                 labels, 0.3, num_classes=3, opts=opts)
  np.testing.assert_allclose(scores, want, rtol=2e-4)
  # Upstream keeps data_mask[int(prune_rate * N):], prune_rate = 1 - ratio.
  np.testing.assert_array_equal(mask,
                                ref.tdds_reference_mask(data_mask, 0.3))
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
