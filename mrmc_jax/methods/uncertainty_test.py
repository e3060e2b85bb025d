"""Uncertainty baselines against a NumPy port of DeepCore's code
(`reference_check`)."""

import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax.methods import reference_check as ref
from mrmc_jax.methods import registry
from mrmc_jax.methods import uncertainty


def _softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _data(seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.repeat([0, 1, 2, 3], [20, 30, 25, 15]))
  logits = (rng.normal(size=(90, 4)) * 2.0).astype(np.float32)
  return logits, labels


@pytest.mark.parametrize("kind, method", [
    ("least_confidence", "LeastConfidence"), ("margin", "Margin"),
    ("entropy", "Entropy")])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_deepcore_balanced(kind, method, seed):
  logits, labels = _data(seed)
  art = {"uncertainty": np.asarray(uncertainty.uncertainty_columns(
      jnp.asarray(logits)))}
  # Ratio 0.4: DeepCore's round(0.4 n_c) = 8, 12, 10, 6 are the quotas.
  _, mask = registry.select(kind, art, labels, 0.4, num_classes=4,
                            opts=registry.SelectionOptions())
  want = ref.deepcore_uncertainty_mask(logits.astype(np.float64), labels,
                                       0.4, method, 4)
  np.testing.assert_array_equal(mask, want)


def test_columns_by_hand():
  z = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
  cols = np.asarray(uncertainty.uncertainty_columns(jnp.asarray(z)))
  p = _softmax(z.astype(np.float64))
  np.testing.assert_allclose(cols[:, 0], [2.0, 0.0])
  np.testing.assert_allclose(cols[:, 1], p.max(1), rtol=1e-6)
  np.testing.assert_allclose(cols[:, 2], [p[0, 0] - p[0, 1], 0.0],
                             atol=1e-7)
  np.testing.assert_allclose(cols[:, 3], (p * np.log(p + 1e-6)).sum(1),
                             rtol=1e-5)


def test_least_confidence_on_softmax_is_the_paper_formula():
  logits, labels = _data(2)
  cols = np.asarray(uncertainty.uncertainty_columns(jnp.asarray(logits)))
  got = uncertainty.uncertainty_keep_scores(cols, "least_confidence",
                                            least_confidence_on="softmax")
  np.testing.assert_allclose(got, 1.0 - _softmax(logits).max(1), rtol=1e-5)
  # It is a different ranking from the code's largest logit.
  opts = registry.SelectionOptions()
  art = {"uncertainty": cols}
  a = registry.select("least_confidence", art, labels, 0.4, num_classes=4,
                      opts=opts)[1]
  b = registry.select("least_confidence(on=softmax)", art,
                      labels, 0.4, num_classes=4, opts=opts)[1]
  assert (a != b).any()


def test_global_keeps_the_most_uncertain():
  logits, labels = _data(3)
  art = {"uncertainty": np.asarray(uncertainty.uncertainty_columns(
      jnp.asarray(logits)))}
  opts = registry.SelectionOptions(class_balanced=False)
  _, mask = registry.select("entropy", art, labels, 0.2, num_classes=4,
                            opts=opts)
  ent = -ref.deepcore_rank_uncertainty(logits.astype(np.float64), "Entropy")
  assert mask.sum() == 18
  assert ent[mask].min() > ent[~mask].max()


def test_needs_and_bad_input():
  assert registry.needs(["margin", "entropy"]) == {"uncertainty"}
  with pytest.raises(ValueError, match=r"expected \[N, 4\]"):
    uncertainty.uncertainty_keep_scores(np.zeros((5, 3)), "margin")
  with pytest.raises(ValueError, match="C >= 2"):
    uncertainty.uncertainty_columns(jnp.zeros((5, 1)))
  with pytest.raises(ValueError, match="kind='ratio' is not allowed"):
    uncertainty.uncertainty_keep_scores(np.zeros((5, 4)), "ratio")
