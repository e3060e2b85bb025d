"""Tests for difficulty.py: each name reads its method's score."""

import numpy as np
import pytest

from mrmc_jax.methods import aum
from mrmc_jax.methods import difficulty
from mrmc_jax.methods import mrmc
from mrmc_jax.methods import options
from mrmc_jax.methods import registry_test
from mrmc_jax.methods import scores


def test_every_difficulty_score_is_its_method():
  art, _ = registry_test.synthetic_artefacts()
  opts = options.SelectionOptions(epochs=4)
  assert set(difficulty._SCORES) == set(difficulty.DIFFICULTY_SCORES)
  want = {
      "forgetting": scores.forgetting_scores(art["correct"][:, :4]),
      "el2n": scores.el2n_scores(art["el2n"][:, :4]),
      "mrmc": mrmc.mrmc_from_artefacts(art, opts),
      # Low AUM is hard: the difficulty is its negation.
      "aum": -np.asarray(aum.aum_scores(art["margin"][:, :4])),
      "aum_prob": -np.asarray(aum.aum_scores(art["p_margin"][:, :4])),
  }
  for kind in difficulty.DIFFICULTY_SCORES:
    got = difficulty.difficulty(kind, art, opts)
    assert got.shape == (120,)
    np.testing.assert_array_equal(got, want[kind])
  with pytest.raises(ValueError, match="difficulty='auc' is not allowed"):
    difficulty.difficulty("auc", art, opts)
  assert difficulty.needs("aum_prob") == {"margin"}
  assert difficulty.needs("el2n") == frozenset()
