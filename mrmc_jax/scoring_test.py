"""Tests for mrmc_jax.scoring.

Compiling the fit takes a second or more on a CPU, so every test pads its
rows to one shared `[64, 20]` shape (zero rows score 0 and are dropped): the
whole file compiles the core twice (with and without a validity mask), and
options are traced, so changing them does not recompile.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from mrmc_jax import scoring

R = 20
N_PAD = 64
RATIO = scoring.DEFAULT_MAX_INITIAL_RATIO
EPOCHS = np.arange(1, R + 1)


def _pad(rows, valid=None):
  """Stacks rows into the shared `[N_PAD, R]` shape (float32, bool)."""
  rows = np.asarray(rows, np.float32).reshape(-1, R)
  n = rows.shape[0]
  assert n <= N_PAD
  x = np.zeros((N_PAD, R), np.float32)
  x[:n] = rows
  if valid is None:
    return x, None, n
  v = np.zeros((N_PAD, R), bool)
  v[:n] = np.asarray(valid, bool).reshape(-1, R)
  return x, v, n


def _fit(rows, valid=None, **kw):
  """(q, w, literal, observed) as float64 numpy, for the given rows."""
  x, v, n = _pad(rows, valid)
  q, w = scoring.fit_exponential_decay(x, v, **kw)
  lit = scoring.mrmc_scores(x, v, score="literal", **kw)
  obs = scoring.mrmc_scores(x, v, score="observed", **kw)
  return tuple(np.asarray(a, np.float64)[:n] for a in (q, w, lit, obs))


def _exact(q, w, epochs=EPOCHS):
  return q * np.power(w, -np.asarray(epochs, np.float64))


def _check_bounds(rows, valid, out, ratio=RATIO):
  """All outputs finite; w >= 1; q and both scores in [0, ratio * M]."""
  rows = np.asarray(rows, np.float64)
  valid = np.ones(rows.shape, bool) if valid is None else np.asarray(valid)
  top = ratio * np.max(np.where(valid, rows, 0.0), axis=1)
  top = np.minimum(top, np.finfo(np.float32).max)
  q, w, lit, obs = out
  for a in out:
    assert np.all(np.isfinite(a))
  assert np.all(w >= 1.0)
  for a in (q, lit, obs):
    assert np.all(a >= 0.0)
    assert np.all(a <= top * (1 + 1e-6))


# Values worked out by hand.


def test_exact_sequence_recovers_q_w_and_scores():
  # l_r = 2 * 1.5**-r and 0.7 * 1.05**-r, r = 1..20 (inside the bound: q is
  # at most 1.5 times the largest loss).
  q, w, lit, obs = _fit([_exact(2.0, 1.5), _exact(0.7, 1.05)])
  np.testing.assert_allclose(q, [2.0, 0.7], rtol=1e-4)
  np.testing.assert_allclose(w, [1.5, 1.05], rtol=1e-4)
  np.testing.assert_allclose(lit, [2 * (1 - 1.5**-20), 0.7 * (1 - 1.05**-20)],
                             rtol=1e-4)
  np.testing.assert_allclose(
      obs, [2 * (1.5**-1 - 1.5**-20), 0.7 * (1.05**-1 - 1.05**-20)],
      rtol=1e-4)


def test_epoch_offset_zero_and_observed_by_hand():
  row = _exact(2.0, 1.5)
  # Columns are epochs 0..19: l = (2 / 1.5) * 1.5**-r, so q = 4/3.
  q, w, lit, obs = _fit([row], epoch_offset=0)
  np.testing.assert_allclose(q, [2.0 / 1.5], rtol=1e-4)
  np.testing.assert_allclose(w, [1.5], rtol=1e-4)
  np.testing.assert_allclose(lit, [(2.0 / 1.5) * (1 - 1.5**-19)], rtol=1e-4)
  # The observed drop does not depend on how epochs are numbered.
  np.testing.assert_allclose(obs, [2 * (1.5**-1 - 1.5**-20)], rtol=1e-4)
  # With epochs 1 and 2 missing, the observed drop starts at epoch 3 while
  # the literal score still extrapolates to epoch 0 (w = 1.2: q = 1.2**3
  # times the largest valid loss, inside the bound).
  row = _exact(2.0, 1.2)
  valid = np.ones(R, bool)
  valid[:2] = False
  q, w, lit, obs = _fit([row], [valid])
  np.testing.assert_allclose([q[0], w[0]], [2.0, 1.2], rtol=1e-4)
  np.testing.assert_allclose(lit, [2 * (1 - 1.2**-20)], rtol=1e-4)
  np.testing.assert_allclose(obs, [2 * (1.2**-3 - 1.2**-20)], rtol=1e-4)
  # w = 1.5 would need q = 1.5**3 times the largest valid loss: the bound
  # holds q at 2 times it.
  q, _, _, _ = _fit([_exact(2.0, 1.5)], [valid])
  np.testing.assert_allclose(q, [RATIO * 2 * 1.5**-3], rtol=1e-5)


def test_decay_faster_than_the_bound_is_capped():
  # w = 3 would need q = 3 * l_1 > 2 * max l: q sits on the bound.
  q, w, lit, _ = _fit([_exact(3.0, 3.0)])
  np.testing.assert_allclose(q, [RATIO * 1.0], rtol=1e-6)
  assert lit[0] <= RATIO * 1.0


# Agreement with scipy.


def test_agrees_with_curve_fit_on_noisy_decays():
  rng = np.random.default_rng(0)
  n = 50
  q_true = rng.uniform(0.5, 3.0, n)
  w_true = rng.uniform(1.05, 1.6, n)
  rows = _exact(q_true[:, None], w_true[:, None]) * np.exp(
      rng.normal(0.0, 0.03, (n, R)))
  q, w, _, _ = _fit(rows)
  model = lambda r, q, w: q * np.power(w, -r)
  compared = 0
  for i in range(n):
    (q_ref, w_ref), _ = optimize.curve_fit(
        model, EPOCHS.astype(np.float64), rows[i].astype(np.float32),
        p0=(q_true[i], w_true[i]), maxfev=10000)
    if q_ref > RATIO * rows[i].max() or w_ref < 1:
      continue  # scipy's optimum is outside the bound.
    compared += 1
    np.testing.assert_allclose([q[i], w[i]], [q_ref, w_ref], rtol=1e-3)
  assert compared >= 45


def test_ridge_case_is_bounded_and_constrained_optimal():
  row = np.array([5.0] + [0.01] * (R - 1))
  q, w, lit, obs = _fit([row])
  # The bound is active: q = 2 * 5, every score <= 10.
  np.testing.assert_allclose(q, [RATIO * 5.0], rtol=1e-6)
  assert np.isfinite(lit[0]) and lit[0] <= RATIO * 5.0
  assert np.isfinite(obs[0]) and obs[0] <= RATIO * 5.0
  # Without a useful bound, least squares runs off along the ridge (here to
  # w ~ 500, where 5 / w matches the tail).
  _, w_free, lit_free, _ = _fit([row], max_initial_ratio=1e30)
  assert w_free[0] > 100 and lit_free[0] > 100 * RATIO * 5.0
  # The bounded fit is the constrained least-squares optimum.
  ref = optimize.least_squares(
      lambda p: p[0] * np.power(p[1], -EPOCHS) - row, x0=(5.0, 2.0),
      bounds=([0.0, 1.0], [RATIO * 5.0, np.inf]), xtol=1e-14, ftol=1e-14)
  np.testing.assert_allclose([q[0], w[0]], ref.x, rtol=1e-4)


# Documented edge cases.


def test_rising_flat_and_zero_rows():
  rising = np.linspace(0.1, 2.0, R)
  flat = np.full(R, 3.0)
  zero = np.zeros(R)
  q, w, lit, obs = _fit([rising, flat, zero])
  np.testing.assert_allclose(w, [1.0, 1.0, 1.0])
  np.testing.assert_allclose(lit, [0.0, 0.0, 0.0], atol=0)
  np.testing.assert_allclose(obs, [0.0, 0.0, 0.0], atol=0)
  # With w = 1 the best q is the mean loss.
  np.testing.assert_allclose(q, [rising.mean(), 3.0, 0.0], rtol=1e-5)


def test_missing_entries():
  row = _exact(2.0, 1.5)
  holes = np.ones(R, bool)
  holes[[3, 7, 8, 15]] = False
  one = np.zeros(R, bool)
  one[5] = True
  rows = np.stack([row, row, row, row])
  rows[0, ~holes] = np.nan  # Ignored: marked missing.
  valid = np.stack([holes, one, np.zeros(R, bool), np.ones(R, bool)])
  q, w, lit, obs = _fit(rows, valid)
  # Holes in the middle: still the exact parameters.
  np.testing.assert_allclose([q[0], w[0]], [2.0, 1.5], rtol=1e-4)
  # One valid entry: w = 1, q = that loss, score 0.
  np.testing.assert_allclose([q[1], w[1], lit[1], obs[1]],
                             [row[5], 1.0, 0.0, 0.0], rtol=1e-6)
  # No valid entry: q = 0, w = 1, score 0.
  np.testing.assert_allclose([q[2], w[2], lit[2], obs[2]], [0, 1, 0, 0])
  # A full mask gives the same answer as no mask.
  q_ref, w_ref, lit_ref, _ = _fit(row[None])
  np.testing.assert_allclose([q[3], w[3], lit[3]],
                             [q_ref[0], w_ref[0], lit_ref[0]], rtol=1e-5)


def _adversarial_rows():
  big = float(np.finfo(np.float32).max)
  rows = [
      np.zeros(R),
      np.full(R, 1e-30),
      np.full(R, 1e-40),                       # Subnormal.
      np.full(R, 1e6),
      np.r_[1e6, np.zeros(R - 1)],             # Single huge drop to 0.
      np.r_[1e6, np.full(R - 1, 1e-30)],
      np.r_[1e-30, np.full(R - 1, 1e6)],       # Huge rise.
      np.r_[np.zeros(R - 1), 1e6],              # Late spike.
      np.r_[np.zeros(R // 2), np.full(R // 2, 5.0)],
      np.tile([0.0, 1e6], R // 2),              # Alternating.
      np.full(R, big),
      np.r_[big, np.zeros(R - 1)],
      np.r_[big, np.full(R - 1, 1.0)],
      np.r_[5.0, np.full(R - 1, 0.01)],
      np.geomspace(1e6, 1e-30, R),
      np.geomspace(1e-30, 1e6, R),
  ]
  rng = np.random.default_rng(1)
  rows += list(np.exp(rng.normal(0.0, 5.0, (16, R))))
  rows += list(np.where(rng.random((16, R)) < 0.5, 0.0, rng.random((16, R))))
  return np.array(rows)


@pytest.mark.parametrize("masked", [False, True])
def test_no_nan_or_inf_on_adversarial_rows(masked):
  rows = _adversarial_rows()
  valid = None
  if masked:
    valid = np.random.default_rng(2).random(rows.shape) < 0.7
    valid[:4] = True
  for epoch_offset in (0, 1):
    out = _fit(rows, valid, epoch_offset=epoch_offset)
    _check_bounds(rows, valid, out)


def test_scores_within_the_bound_on_random_data():
  rng = np.random.default_rng(3)
  rows = np.exp(rng.normal(0.0, 1.0, (N_PAD, R))) * np.exp(
      -rng.uniform(0.0, 1.0, (N_PAD, 1)) * EPOCHS)
  valid = rng.random((N_PAD, R)) < 0.8
  for ratio in (1.1, 2.0, 10.0):
    _check_bounds(rows, valid, _fit(rows, valid, max_initial_ratio=ratio),
                  ratio=ratio)


# Compilation and blocks.


def test_no_jit_in_blocks_agrees_with_jit(monkeypatch):
  # The core run op by op (no jit), on 69 rows in blocks of 16 (5 blocks,
  # the last overlapping the fourth), against the compiled single-block
  # path on the same rows. Blocks are only exercised here: a jitted
  # multi-block run would cost another compilation.
  rng = np.random.default_rng(5)
  rows = np.exp(rng.normal(0.0, 0.5, (69, R))) * np.exp(
      -rng.uniform(0.0, 0.5, (69, 1)) * EPOCHS)
  rows[:3] = _adversarial_rows()[[4, 7, 13]]
  rows = rows.astype(np.float32)
  valid = rng.random((69, R)) < 0.9
  valid[3] = False
  # Two Newton steps keep the op-by-op run short; the loop is the same.
  head = _fit(rows[:N_PAD], valid[:N_PAD], num_steps=2)
  tail = _fit(rows[N_PAD:], valid[N_PAD:], num_steps=2)
  monkeypatch.setattr(scoring, "_BLOCK_ROWS", 16)
  with jax.disable_jit():
    eager = scoring._core(jnp.asarray(rows), jnp.asarray(valid), RATIO, 1, 2)
  for got, a, b in zip(eager, head, tail):
    np.testing.assert_allclose(got, np.r_[a, b], rtol=1e-4, atol=1e-7)


def test_public_functions_trace_under_jit():
  # Traced inputs skip the value checks (a concrete NaN would raise) but
  # shapes and options are still checked.
  x = jnp.full((N_PAD, R), jnp.nan)
  for fn in (scoring.mrmc_scores, scoring.fit_exponential_decay):
    jax.make_jaxpr(fn)(x)
    jax.make_jaxpr(lambda x, v: fn(x, v, epoch_offset=0))(
        x, jnp.ones((N_PAD, R), bool))
  with pytest.raises(ValueError, match="losses has shape"):
    jax.make_jaxpr(scoring.mrmc_scores)(jnp.ones(R))
  with pytest.raises(ValueError, match="losses\\[0, 0\\] = nan"):
    scoring.mrmc_scores(np.asarray(x))


def test_changing_options_does_not_recompile():
  x, v, _ = _pad([_exact(2.0, 1.5)], np.ones((1, R), bool))
  scoring.mrmc_scores(x, v)
  size = scoring._core._cache_size()
  for kw in (dict(max_initial_ratio=3.0), dict(epoch_offset=0),
             dict(num_steps=3), dict(score="observed")):
    scoring.mrmc_scores(x, v, **kw)
    scoring.fit_exponential_decay(x, v, **{k: a for k, a in kw.items()
                                           if k != "score"})
  assert scoring._core._cache_size() == size


# Bad input.


@pytest.mark.parametrize("kwargs, message", [
    (dict(losses=np.ones(5)), "shape (5,)"),
    (dict(losses=np.ones((2, 3, 4))), "shape (2, 3, 4)"),
    (dict(losses=np.ones((4, 1))), "R=1"),
    (dict(losses=np.ones((4, 5)), valid=np.ones((4, 6), bool)),
     "valid has shape (4, 6)"),
    (dict(losses=np.ones((4, 5)), valid=np.ones((4, 5))), "expected bool"),
    (dict(losses=np.array([[1.0, np.nan]])), "losses[0, 1] = nan"),
    (dict(losses=np.array([[1.0, 2.0], [0.5, -1.0]])), "losses[1, 1] = -1.0"),
    (dict(losses=np.array([[np.inf, 2.0]])), "losses[0, 0] = inf"),
    (dict(losses=np.array([[1e39, 2.0]])), "losses[0, 0] = 1e+39"),
    (dict(losses=np.ones((4, 5), complex)), "dtype complex128"),
    (dict(max_initial_ratio=1.0), "max_initial_ratio=1.0"),
    (dict(max_initial_ratio=0.5), "max_initial_ratio=0.5"),
    (dict(max_initial_ratio=np.inf), "max_initial_ratio=inf"),
    (dict(max_initial_ratio=True), "max_initial_ratio=True"),
    (dict(epoch_offset=-1), "epoch_offset=-1"),
    (dict(epoch_offset=1.0), "epoch_offset=1.0"),
    (dict(num_steps=-2), "num_steps=-2"),
])
def test_bad_input_raises_one_clear_line(kwargs, message):
  kwargs.setdefault("losses", np.ones((4, 5)))
  for fn in (scoring.fit_exponential_decay, scoring.mrmc_scores):
    with pytest.raises(ValueError) as info:
      fn(**kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_unknown_score_raises():
  with pytest.raises(ValueError, match="score='paper'.*'literal', 'observed'"):
    scoring.mrmc_scores(np.ones((4, 5)), score="paper")


def test_invalid_entries_may_hold_anything():
  x = np.array([[1.0, 0.5, np.nan, -3.0, np.inf]])
  valid = np.array([[True, True, False, False, False]])
  # Checked without running the fit (no compile for this shape).
  scoring._check_inputs(x, valid, RATIO, 1, 8)


# Plot helper.


def test_fitted_curve():
  curve = scoring.fitted_curve(jnp.array([2.0, 1.0]), jnp.array([1.5, 1.0]),
                               jnp.arange(1, 4))
  np.testing.assert_allclose(curve, [_exact(2.0, 1.5, [1, 2, 3]),
                                     [1.0, 1.0, 1.0]], rtol=1e-6)
  assert scoring.fitted_curve(jnp.ones(3), jnp.full(3, 1e13),
                              jnp.arange(50)).shape == (3, 50)
  with pytest.raises(ValueError, match="both must be 1-D"):
    scoring.fitted_curve(jnp.ones(3), jnp.ones(2), jnp.arange(3))
  with pytest.raises(ValueError, match="epochs has shape"):
    scoring.fitted_curve(jnp.ones(3), jnp.ones(3), jnp.ones((2, 2)))


def test_non_finite_rows_score_minus_inf_under_jit_and_are_counted():
  x = np.stack([_exact(2.0, 1.5), _exact(1.0, 1.2), _exact(3.0, 1.1),
                _exact(1.0, 1.3)]).astype(np.float32)
  x[1, 2] = np.nan
  x[2, 0] = np.inf
  x[3, 4] = -1.0
  valid = np.ones_like(x, bool)
  valid[3, 4] = False  # a negative entry that is not valid is ignored
  for v in (None, valid):
    scores, info = jax.jit(lambda x, v: scoring.mrmc_scores(
        x, v, with_info=True))(x, v)
    bad = [False, True, True, v is None]
    assert not np.isnan(scores).any()
    np.testing.assert_array_equal(np.isneginf(scores), bad)
    np.testing.assert_array_equal(info["invalid_rows"], bad)
    assert int(info["num_invalid"]) == sum(bad)
    assert int(info["num_excluded"]) == sum(bad)
    assert scores[0] > 0
    q, w = jax.jit(scoring.fit_exponential_decay)(x, v)
    np.testing.assert_array_equal(np.asarray(q)[bad], 0.0)
    np.testing.assert_array_equal(np.asarray(w)[bad], 1.0)
  np.testing.assert_array_equal(scoring.invalid_rows(x),
                                [False, True, True, True])
  # Eagerly the same input is refused, as before.
  with pytest.raises(ValueError, match=r"losses\[1, 2\] = nan"):
    scoring.mrmc_scores(x)
  # The clean row's score is the one it gets alone.
  np.testing.assert_allclose(scores[0], scoring.mrmc_scores(x[:1])[0],
                             rtol=1e-6)


def test_an_inf_column_under_jit_leaves_every_row_out_not_scored_zero():
  x = np.stack([_exact(2.0, 1.5)] * N_PAD).astype(np.float32)
  x[:, 3] = np.inf
  scores = jax.jit(scoring.mrmc_scores)(x)
  assert np.isneginf(scores).all()


def _visits_case():
  """Row 1 missed epoch 2, row 3 was never recorded (zero rows after 3)."""
  x, _, _ = _pad([_exact(2.0, 1.5), _exact(1.0, 1.2), _exact(3.0, 1.1),
                  np.zeros(R)])
  visits = np.ones(x.shape, np.int32)
  visits[1, 2] = 0
  visits[3] = 0
  return x, visits


def test_visits_leave_rows_never_fully_recorded_out():
  x, visits = _visits_case()
  with pytest.warns(UserWarning, match=r"mrmc_scores: 2 of 64 rows were not "
                    r"recorded in every epoch \(visits == 0; first rows "
                    r"\[1, 3\]\); they score -inf"):
    scores, info = scoring.mrmc_scores(x, visits=visits, with_info=True)
  left_out = np.zeros(N_PAD, bool)
  left_out[[1, 3]] = True
  np.testing.assert_array_equal(np.isneginf(scores), left_out)
  np.testing.assert_array_equal(info["unrecorded_rows"], left_out)
  assert int(info["num_unrecorded"]) == 2 and int(info["num_excluded"]) == 2
  # The other rows score as without visits.
  np.testing.assert_allclose(np.asarray(scores)[~left_out],
                             np.asarray(scoring.mrmc_scores(x))[~left_out])
  # The same under jax.jit (no warning there: the -inf scores say it).
  jitted = jax.jit(lambda x, v: scoring.mrmc_scores(x, visits=v))(x, visits)
  np.testing.assert_array_equal(jitted, scores)
  # Never selected: the never-seen id 3 had score 0 and a random tie before.
  from mrmc_jax import selection  # pylint: disable=g-import-not-at-top
  mask = selection.select_mask(scores, jnp.zeros(N_PAD, jnp.int32), 0.9,
                               num_classes=1, tie_seed=0)
  assert not mask[1] and not mask[3] and int(mask.sum()) == 57


def test_visits_are_checked():
  x, visits = _visits_case()
  with pytest.raises(ValueError, match=r"visits has shape \(64, 5\); it "
                     r"must match losses, \(64, 20\)"):
    scoring.mrmc_scores(x, visits=visits[:, :5])
  with pytest.raises(ValueError, match=r"visits has dtype float32; expected "
                     r"an integer"):
    scoring.mrmc_scores(x, visits=visits.astype(np.float32))


def test_a_transposed_trajectory_is_caught_when_valid_or_visits_say_so():
  x, visits = _visits_case()
  with pytest.raises(ValueError, match=r"losses has shape \(20, 64\) and "
                     r"visits \(64, 20\), its transpose: one of them is "
                     r"transposed; both must be \[N, R\]"):
    scoring.mrmc_scores(x.T, visits=visits)
  with pytest.raises(ValueError, match=r"transposed"):
    scoring.mrmc_scores(x.T, visits > 0)


def test_traced_options_are_refused_with_one_line():
  x, _ = _visits_case()
  with pytest.raises(ValueError, match=r"max_initial_ratio is traced.*"
                     r"static"):
    jax.jit(lambda x, m: scoring.mrmc_scores(x, max_initial_ratio=m))(
        x, 2.0)
  with pytest.raises(ValueError, match=r"num_steps is traced"):
    jax.jit(lambda x, k: scoring.fit_exponential_decay(x, num_steps=k))(x, 3)
