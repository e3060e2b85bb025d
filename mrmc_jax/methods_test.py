"""Tests for methods.py: specs, needs, and every method's mask size."""

import numpy as np
import pytest

from mrmc_jax import methods
from mrmc_jax import selection


def _artefacts(n=120, r=6, c=3, d=5, seed=0):
  rng = np.random.default_rng(seed)
  loss = np.sort(rng.gamma(2.0, 1.0, (n, r)), axis=1)[:, ::-1].copy()
  art = {"loss": loss.astype(np.float32),
         "correct": rng.random((n, r)) < 0.7,
         "p_true": rng.random((n, r)).astype(np.float32),
         "el2n": rng.random((n, r)).astype(np.float32),
         "visits": np.ones((n, r), np.int32),
         "features": rng.normal(size=(n, d)).astype(np.float32),
         "grad_norms": rng.random(n).astype(np.float32)}
  art.update({f"eval_{k}": v * 0.5 if k == "loss" else v
              for k, v in list(art.items()) if k in (
                  "loss", "correct", "p_true", "el2n", "visits")})
  return art, rng.integers(0, c, n)


def test_parse_spec():
  assert methods.parse_spec("mrmc") == ("mrmc", {})
  assert methods.parse_spec("mrmc(loss_source=eval;skip_epochs=2)") == (
      "mrmc", {"loss_source": "eval", "skip_epochs": 2})
  with pytest.raises(ValueError, match="'nope' is not allowed"):
    methods.parse_spec("nope")
  with pytest.raises(ValueError, match="option 'x=1'"):
    methods.parse_spec("mrmc(x=1)")
  with pytest.raises(ValueError, match="loss_source='test' is not allowed"):
    methods.resolve("mrmc(loss_source=test)", methods.SelectionOptions())


def test_needs():
  assert methods.needs(["full", "random"]) == frozenset()
  assert methods.needs(["mrmc"]) == {"trajectory"}
  assert methods.needs(["mrmc(loss_source=eval)"]) == {
      "trajectory", "eval_trajectory"}
  assert methods.needs(["grand", "moderate", "d2"]) == {
      "grad_norms", "features", "trajectory"}


@pytest.mark.parametrize("spec", [
    "random", "el2n", "grand", "forgetting", "ccs", "moderate", "dyn_unc",
    "d2", "mrmc", "mrmc_r", "mrmc(loss_source=eval)",
    "mrmc(epochs=3;skip_epochs=1)", "el2n(el2n_epochs=2)",
    "mrmc(class_balanced=False)"])
def test_every_method_selects_the_budget(spec):
  art, labels = _artefacts()
  opts = methods.SelectionOptions(proxy_epochs=2, dyn_unc_window=3)
  for ratio in (0.1, 0.5):
    scores, mask = methods.select(spec, art, labels, ratio, num_classes=3,
                                  opts=opts)
    assert mask.sum() == selection.budget(ratio, labels.size)
    assert scores.shape == labels.shape and np.all(np.isfinite(scores))
    if "class_balanced=False" not in spec:
      np.testing.assert_array_equal(
          np.bincount(labels[mask], minlength=3),
          selection.class_quotas(labels, 3, ratio))


def test_loss_source_and_epochs_change_the_input():
  art, labels = _artefacts()
  opts = methods.SelectionOptions()
  train = methods.mrmc_from_artefacts(art, opts)
  evals = methods.mrmc_from_artefacts(
      art, methods.resolve("mrmc(loss_source=eval)", opts)[1])
  np.testing.assert_allclose(evals, 0.5 * train, rtol=1e-4, atol=1e-6)
  view = methods.trajectory_view(art, methods.resolve("mrmc(epochs=3)",
                                                      opts)[1])
  assert view["loss"].shape == (120, 3)
  with pytest.raises(ValueError, match="epochs=9 is not allowed"):
    methods.trajectory_view(art, methods.resolve("mrmc(epochs=9)", opts)[1])
  with pytest.raises(ValueError, match="skip_epochs=5 is not allowed"):
    methods.mrmc_from_artefacts(
        art, methods.resolve("mrmc(skip_epochs=5)", opts)[1])
