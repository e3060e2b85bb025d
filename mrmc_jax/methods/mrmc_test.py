"""Tests for mrmc.py: MRMC scores from the stored warm-up."""

import numpy as np
import pytest

from mrmc_jax import scoring
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
