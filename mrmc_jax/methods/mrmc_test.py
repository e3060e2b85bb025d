"""Tests for mrmc.py: MRMC scores from the stored warm-up."""

import numpy as np
import pytest

from mrmc_jax import scoring
from mrmc_jax import selection
from mrmc_jax.methods import common
from mrmc_jax.methods import mrmc
from mrmc_jax.methods import options
from mrmc_jax.methods import registry_test


def test_loss_source_and_epochs_change_the_input():
  art, _ = registry_test.synthetic_artefacts()
  opts = options.SelectionOptions()
  train = mrmc.mrmc_from_artefacts(art, opts)
  evals = mrmc.mrmc_from_artefacts(
      art, options.resolve("mrmc(loss_source=eval)", opts)[1])
  np.testing.assert_allclose(evals, 0.5 * train, rtol=1e-4, atol=1e-6)
  view = common.trajectory_view(art, options.resolve("mrmc(epochs=3)",
                                                     opts)[1])
  assert view["loss"].shape == (120, 3)
  with pytest.raises(ValueError, match="epochs=9 is not allowed"):
    common.trajectory_view(art, options.resolve("mrmc(epochs=9)", opts)[1])
  with pytest.raises(ValueError, match="skip_epochs=5 is not allowed"):
    mrmc.mrmc_from_artefacts(
        art, options.resolve("mrmc(skip_epochs=5)", opts)[1])


def test_skip_epochs_fits_the_later_columns():
  art, _ = registry_test.synthetic_artefacts()
  opts = options.resolve("mrmc(skip_epochs=2;score=observed)",
                         options.SelectionOptions())[1]
  want = scoring.mrmc_scores(art["loss"][:, 2:], art["visits"][:, 2:] > 0,
                             score="observed", epoch_offset=3)
  np.testing.assert_array_equal(mrmc.mrmc_from_artefacts(art, opts), want)


def _noisy_artefacts(n=200, r=5, seed=0):
  """Decaying losses; a quarter of the rows decay slowly from 4.5 (to 3.2).

  The slow rows are the picture of a flipped label: a high loss that drops
  by about as much as a clean row's, and stays high.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  epochs = np.arange(1, r + 1)
  q = rng.uniform(0.5, 2.0, n)
  w = rng.uniform(1.2, 2.0, n)
  loss = q[:, None] * w[:, None] ** -epochs[None, :]
  stuck = rng.random(n) < 0.25
  loss[stuck] = 4.5 * 1.07 ** -epochs[None, :] + 0.01 * rng.standard_normal(
      (stuck.sum(), r))
  art = {"loss": loss.astype(np.float32), "visits": np.ones((n, r)),
         "correct": loss < 0.7, "p_true": np.exp(-loss),
         "el2n": 1 - np.exp(-loss)}
  return art, labels, stuck


def test_fitted_last_loss_is_q_minus_the_score():
  art, _, _ = _noisy_artefacts()
  opts = options.SelectionOptions()
  q, _ = scoring.fit_exponential_decay(art["loss"], art["visits"] > 0)
  np.testing.assert_allclose(
      mrmc.fitted_last_loss(art, opts) + mrmc.mrmc_from_artefacts(art, opts),
      q, rtol=1e-4, atol=1e-5)
  # Clean rows: the fit is exact, so the fitted last loss is the last loss.
  art0, _, stuck = _noisy_artefacts()
  np.testing.assert_allclose(mrmc.fitted_last_loss(art0, opts)[~stuck],
                             art0["loss"][~stuck, -1], rtol=1e-3, atol=1e-4)


def test_fit_filter_leaves_out_the_unlearned_rows():
  art, labels, stuck = _noisy_artefacts()
  opts = options.SelectionOptions()
  assert mrmc.fit_filter_keep(art, opts, 2) is None
  on = options.resolve("mrmc(fit_filter=1.0)", opts)[1]
  keep = mrmc.fit_filter_keep(art, on, 2)
  # log 2 = 0.69: the slow rows (last loss 3.2) are out, the others in.
  np.testing.assert_array_equal(keep, ~stuck)
  from mrmc_jax.methods import registry  # pylint: disable=g-import-not-at-top
  # Without the filter MRMC's top takes slow rows (their drop is large).
  _, m_off = registry.select("mrmc", art, labels, 0.5, num_classes=2,
                             opts=opts)
  assert (m_off & stuck).any()
  s_on, m_on = registry.select("mrmc(fit_filter=1.0)", art, labels, 0.5,
                               num_classes=2, opts=opts)
  assert not (m_on & stuck).any()
  np.testing.assert_array_equal(s_on, mrmc.mrmc_from_artefacts(art, opts))
  # At ratio 0.9 each class runs short of learned rows: all of them are
  # kept, and the quota is filled from the stuck rows.
  m9 = registry.select("mrmc(fit_filter=1.0)", art, labels, 0.9,
                       num_classes=2, opts=opts)[1]
  np.testing.assert_array_equal(np.bincount(labels[m9], minlength=2),
                                selection.class_quotas(labels, 2, 0.9))
  assert (m9 | stuck).all() and (m9 & stuck).any()
  with pytest.raises(ValueError, match="needs at least 2 classes"):
    mrmc.fit_filter_keep(art, on, 1)
  with pytest.raises(ValueError, match="fit_filter=-1"):
    options.resolve("mrmc(fit_filter=-1)", opts)


def _memorised_flips(n=200, r=5, seed=0):
  """Decaying losses; a quarter of the rows are flipped labels, memorised.

  A flipped row's loss falls like a clean row's and ends as low (the last
  epochs learned it), so `fit_filter` keeps it, but its margin is negative
  in the first epochs (the model preferred the look-alike class) and its
  mean margin is below 0; a clean row's margin is positive throughout.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  epochs = np.arange(1, r + 1)
  flipped = rng.random(n) < 0.25
  # Flipped rows drop the most (from a high first loss): MRMC's top.
  q = np.where(flipped, 6.0, rng.uniform(0.5, 2.0, n))
  w = np.where(flipped, 2.5, rng.uniform(1.2, 2.0, n))
  loss = q[:, None] * w[:, None] ** -epochs[None, :]
  margin = np.where(flipped[:, None], np.linspace(-3.0, 1.0, r)[None, :],
                    rng.uniform(0.5, 3.0, (n, r)))
  art = {"loss": loss.astype(np.float32), "visits": np.ones((n, r)),
         "correct": loss < 0.7, "p_true": np.exp(-loss),
         "el2n": 1 - np.exp(-loss), "margin": margin.astype(np.float32),
         "p_margin": np.tanh(margin).astype(np.float32)}
  return art, labels, flipped


def test_aum_filter_leaves_out_the_rows_the_warm_up_assigned_elsewhere():
  art, labels, flipped = _memorised_flips()
  opts = options.SelectionOptions()
  assert mrmc.aum_filter_keep(art, opts) is None
  assert mrmc.filter_keep(art, opts, 2) is None
  on = options.resolve("mrmc(aum_filter=0.0)", opts)[1]
  np.testing.assert_array_equal(mrmc.aum_filter_keep(art, on), ~flipped)
  # The flips are learned by the last epoch: the fit filter keeps them all.
  fit = options.resolve("mrmc(fit_filter=1.0)", opts)[1]
  assert mrmc.fit_filter_keep(art, fit, 2)[flipped].all()
  from mrmc_jax.methods import registry  # pylint: disable=g-import-not-at-top
  _, m_off = registry.select("mrmc", art, labels, 0.5, num_classes=2,
                             opts=opts)
  assert (m_off & flipped).sum() > 0.9 * flipped.sum()  # MRMC's top.
  assert (registry.select("mrmc(fit_filter=1.0)", art, labels, 0.5,
                          num_classes=2, opts=opts)[1] & flipped).any()
  s_on, m_on = registry.select("mrmc(aum_filter=0.0)", art, labels, 0.5,
                               num_classes=2, opts=opts)
  assert not (m_on & flipped).any()
  np.testing.assert_array_equal(s_on, mrmc.mrmc_from_artefacts(art, opts))
  # Among the rows left, MRMC's top: the highest score of each class.
  scores = mrmc.mrmc_from_artefacts(art, opts)
  for c in (0, 1):
    rows = (labels == c) & ~flipped
    assert scores[m_on & rows].min() >= scores[~m_on & rows].max()
  # Both filters: the intersection. A threshold of 2 leaves out clean rows.
  both = options.resolve("mrmc(aum_filter=2.0;fit_filter=1.0)", opts)[1]
  np.testing.assert_array_equal(
      mrmc.filter_keep(art, both, 2),
      mrmc.fit_filter_keep(art, both, 2)
      & (art["margin"].mean(axis=1) >= 2.0))
  # The control reads the same filter: mrmc_ra's uniform form.
  m_ctl = registry.select("mrmc_ra(aum_filter=0.0;form=uniform)", art,
                          labels, 0.5, num_classes=2, opts=opts)[1]
  assert not (m_ctl & flipped).any()
  # The margins are needed only with the filter on.
  method = registry.get_method("mrmc")
  assert method.extra_needs(opts) == frozenset()
  assert method.extra_needs(on) == frozenset({"margin"})
  assert registry.get_method("mrmc_ra").extra_needs(on) == frozenset({"margin"})
  del art["margin"]
  with pytest.raises(ValueError, match="lack"):
    mrmc.aum_filter_keep(art, on)
  with pytest.raises(ValueError, match="aum_filter"):
    options.resolve("mrmc(aum_filter=nan)", opts)


def test_rows_an_epoch_never_recorded_are_left_out_of_the_selection():
  # The runner passes the visit counts: an id that missed a fitted epoch
  # scores -inf (with a warning) and is not selected.
  rng = np.random.default_rng(0)
  n, r = 40, 6
  loss = rng.uniform(0.5, 2.0, (n, 1)) * 0.7**np.arange(r)
  visits = np.ones((n, r), np.int32)
  visits[3, 4] = 0
  loss[3, 4] = 0.0  # never recorded: the buffer's zero
  art = {"loss": loss.astype(np.float32), "visits": visits,
         "correct": np.ones((n, r), bool), "p_true": np.ones((n, r)),
         "el2n": np.ones((n, r))}
  opts = options.SelectionOptions(seed=0)
  with pytest.warns(UserWarning, match=r"1 of 40 rows were not recorded"):
    scores = mrmc.mrmc_from_artefacts(art, opts)
  assert np.isneginf(scores[3]) and np.isfinite(np.delete(scores, 3)).all()
