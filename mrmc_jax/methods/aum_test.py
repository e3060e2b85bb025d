"""AUM against NumPy ports of Pleiss et al.'s margin and CCS's code."""

import jax.numpy as jnp
import numpy as np
import pytest

from mrmc_jax import losses
from mrmc_jax import trajectory
from mrmc_jax.methods import aum
from mrmc_jax.methods import registry

N, R, C = 60, 4, 5


def _epochs(seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, C, N)
  logits = (rng.normal(size=(R, N, C)) * 2.0).astype(np.float32)
  return logits, labels


def _recorded(logits, labels):
  """The warm-up's artefacts: per-epoch stats recorded by global id."""
  traj = trajectory.init_trajectory(
      N, R, trajectory.FIELDS + trajectory.MARGIN_FIELDS)
  for r in range(R):
    stats = losses.per_example_stats(jnp.asarray(logits[r]),
                                     jnp.asarray(labels))
    stats["id"] = jnp.arange(N)
    stats["mask"] = jnp.ones(N, bool)
    traj = trajectory.record(traj, stats, jnp.int32(r))
  return {k: np.asarray(v) for k, v in traj.items()}


def _ref_aum(logits, labels):
  # Pleiss et al. 2020: margin = z_y - max_{k != y} z_k, AUM = its mean.
  rows = np.arange(N)
  out = np.zeros(N)
  for z in logits.astype(np.float64):
    true = z[rows, labels]
    other = z.copy()
    other[rows, labels] = -np.inf
    out += true - other.max(axis=1)
  return out / len(logits)


def _ref_ccs_accumulated_margin(logits, labels):
  # CCS generate_importance_score.py: record_training_dynamics.
  rows = np.arange(N)
  acc = np.zeros(N, np.float32)
  for z in logits.astype(np.float64):
    output = np.exp(z - z.max(1, keepdims=True))
    output /= output.sum(1, keepdims=True)
    target_prob = output[rows, labels].copy()
    output[rows, labels] = 0
    acc += target_prob - output.max(axis=1)
  return acc


def _ref_monotonic(score, ratio):
  # CCS core/data/Coreset.py: score_monotonic_selection, descending=0,
  # class_balanced=0 (the README's AUM command).
  mask = np.zeros(N, bool)
  mask[np.argsort(score)[:int(ratio * N)]] = True
  return mask


def test_aum_scores_are_the_mean_logit_margin():
  logits, labels = _epochs(0)
  art = _recorded(logits, labels)
  np.testing.assert_allclose(aum.aum_scores(art["margin"]),
                             _ref_aum(logits, labels), rtol=1e-5, atol=1e-5)


# At 0.1 the global top-k may leave a class empty, which the selector warns
# about.
@pytest.mark.filterwarnings("ignore:select_mask_host")
@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.1])
def test_global_aum_equals_ccs_selection(ratio):
  logits, labels = _epochs(1)
  art = _recorded(logits, labels)
  opts = registry.SelectionOptions()  # Global by default, as CCS's command.
  _, mask = registry.select("aum(margin=prob)", art, labels, ratio,
                            num_classes=C, opts=opts)
  np.testing.assert_array_equal(
      mask, _ref_monotonic(_ref_ccs_accumulated_margin(logits, labels),
                           ratio))
  scores, mask = registry.select("aum", art, labels, ratio, num_classes=C,
                                 opts=opts)
  np.testing.assert_array_equal(
      mask, _ref_monotonic(_ref_aum(logits, labels), ratio))
  np.testing.assert_allclose(scores, _ref_aum(logits, labels), rtol=1e-5,
                             atol=1e-5)


def test_class_balanced_keeps_the_lowest_per_class():
  logits, labels = _epochs(2)
  art = _recorded(logits, labels)
  scores, mask = registry.select("aum(per_class=True)", art,
                                 labels, 0.5, num_classes=C,
                                 opts=registry.SelectionOptions())
  for c in range(C):
    kept, left = scores[mask & (labels == c)], scores[~mask & (labels == c)]
    assert kept.max() <= left.min()


def test_needs_and_difficulty_input():
  assert registry.needs(["aum"]) == {"trajectory", "margin"}
  assert "margin" in registry.needs(["ccs(difficulty=aum_prob)"])
  assert "margin" in registry.needs(["d2(difficulty=aum)"])
  # CCS and D2 read the accumulated margin by default, as their references.
  assert "margin" in registry.needs(["ccs"])
  assert "margin" in registry.needs(["d2"])
  assert "margin" not in registry.needs([
      "ccs(difficulty=forgetting;drop=score)", "d2(cut=p_true)",
      "el2n"])
  logits, labels = _epochs(3)
  art = _recorded(logits, labels)
  opts = registry.SelectionOptions()
  scores, mask = registry.select("ccs(difficulty=aum_prob)", art, labels, 0.5,
                                 num_classes=C, opts=opts)
  np.testing.assert_allclose(
      scores, -_ref_ccs_accumulated_margin(logits, labels) / R, rtol=1e-5,
      atol=1e-6)
  assert mask.sum() == N // 2


def test_missing_margins_are_refused():
  logits, labels = _epochs(4)
  art = _recorded(logits, labels)
  del art["margin"], art["p_margin"]
  with pytest.raises(ValueError, match="lack"):
    registry.select("aum", art, labels, 0.5, num_classes=C,
                    opts=registry.SelectionOptions())
  bad = np.zeros((N, R))
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="margins"):
    aum.aum_scores(bad)
