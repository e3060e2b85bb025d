"""MRMC scores: a bounded exponential-decay fit of per-epoch loss sequences.

MRMC records each training example's loss once per epoch for `R` epochs,
`losses[n, r - 1] = l_r` for `r = 1..R`, fits

  l_r ~= q * w**(-r),   q >= 0,  w >= 1,

to every row by least squares in loss space, and scores an example by its
fitted loss reduction, the paper's literal score `q * (1 - w**(-R))`.

Fit. Write `w = exp(lam)`. For a fixed `lam` the model is linear in `q`, so
the best `q` is a closed-form (clipped) projection; what is left is a 1-D
problem in `lam` per row (variable projection). It starts from the better
(lower loss) of a weighted linear fit of `log(l)` against `r` (weights
`l**2`, the first-order match to loss-space least squares) and a coarse scan
of 13 rates (noisy rows can have several local minima), then takes
`num_steps` safeguarded Newton steps on `lam` (exact second derivative,
step cap, backtracking when the loss rises), for all rows at once. Each step
needs only `sum_r l_r w**(-r) r**j` and `sum_r w**(-2r) r**j`, j = 0, 1, 2:
polynomials in `1/w`, evaluated by Horner's rule without an `exp` per entry.
Rows are processed in cache-sized blocks. Checked against a dense-grid
global optimum on random and adversarial rows: with the default 8 steps the
excess loss is below 2e-6 relative (float32 resolution).

The bound (why it exists). Epoch 0 is never observed. When a loss falls
sharply after epoch 1 (`[5, 0.01, 0.01, ...]`), unconstrained least squares
keeps improving along a ridge `w -> inf`, `q ~= w * l_1 -> inf`; a probe on
MNIST got literal scores of 1e40 and more, so the top of the ranking measured
"how sharp was the drop after epoch 1". Here the fitted loss at epoch 0, i.e.
`q`, is constrained in the fit itself:

  q <= max_initial_ratio * max_r l_r      (valid entries of the row),

and `w >= 1` (the model never rises). Both bounds are exact constraints of
the least-squares problem: for each `lam`, `q` is the constrained minimiser
(the unconstrained `q` clipped to the bound, exact because the objective is a
convex quadratic in `q`), and the Newton steps on `lam` are projected onto
`[0, lam_max]`. `lam_max = 30` (`w <= e**30`) only matters when the optimum
is at `w = inf`, which the `q` bound rules out except with `epoch_offset=0`;
there the model beyond the first observed epoch is below float32 resolution.

Edge cases (all outputs are finite for every finite, non-negative input):
  * rising or flat sequence: `w = 1`, `q` = mean valid loss, score 0;
  * zero losses are ordinary data points (the log-linear start floors its
    logarithm at a tiny epsilon and gives zeros no weight); an all-zero row
    (largest valid loss 0, or below the smallest normal float) gets `q = 0`,
    `w = 1`, score 0;
  * missing entries (`valid == False`) are ignored, whatever value they hold
    (NaN allowed); a row with fewer than 2 valid entries gets `w = 1`,
    `q` = mean of its valid losses (0 if none) and score 0. The bound still
    applies to epoch 0, so a row whose first k epochs are missing can only
    be fitted with `w**(k+1)` up to about `max_initial_ratio`.

Guarantees: `q` in `[0, max_initial_ratio * M]` and `w` in `[1, e**30]`,
where `M` is the row's largest valid loss; the literal score is in
`[0, q] subset [0, max_initial_ratio * M]`, the observed score in
`[0, max_initial_ratio * M]` as well (it is at most the fitted loss at the
first valid epoch, which the bound also caps).

Rows left out. Scores are never NaN or +inf. Outside `jax.jit` a NaN,
infinite or negative valid loss is refused; under `jax.jit` its row is
fitted as an all-zero row (`q = 0`, `w = 1`) and `mrmc_scores` gives it
the score -inf. With `visits` (the trajectory's visit counts), a row not
recorded in every epoch (an epoch never recorded, an id dropped by
`drop_remainder`) also scores -inf, with a warning when the visits are
concrete. -inf ranks after every other score in `selection.select_mask`,
which warns if it ever has to select such a row; `with_info=True` returns
the rows and their counts.
"""

import math
from typing import Any, NamedTuple, Optional, Tuple
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import checking
from mrmc_jax import validation

Array = jax.Array

# q <= 2 * (largest observed loss): a loss that at most halves between the
# unobserved epoch 0 and its largest observed value. Smooth decays found in
# practice (w of 1.05-1.5 per epoch) never reach it; sharp drops after
# epoch 1 do, and are what the bound exists to tame.
DEFAULT_MAX_INITIAL_RATIO = 2.0
# Newton steps after the start. From the scanned start 8 reach float32
# resolution on random and adversarial rows (6 leave up to 1e-3 relative
# excess loss on rows whose optimum is w -> inf with epoch_offset=0); each
# step is one pass over the data.
DEFAULT_NUM_STEPS = 8
SCORES = ("literal", "observed")

# Upper bound of lam = log w. exp(-30) = 9e-14 is below float32 resolution,
# so larger rates are indistinguishable; the cap keeps w finite.
_LAM_MAX = 30.0
# Largest Newton step in lam: one step may change w by at most a factor e.
_MAX_STEP = 1.0
# Rates scanned for a better start than the log-linear fit: w from 1 to
# about 1.6e5, denser where per-epoch loss ratios of real training lie.
_SCAN_RATES = (0.0, 0.03, 0.08, 0.15, 0.25, 0.4, 0.6, 0.9, 1.4, 2.2, 3.5, 6.0,
               12.0)
# After a step that raised the loss, the next candidate goes this fraction
# of the way from the last accepted rate to the rejected one.
_BACKTRACK = 0.3
# Floor of the log-linear start's logarithm, relative to the row maximum.
_LOG_FLOOR = 1e-30


class _Fit(NamedTuple):
  """Per-row fit, all `[N]`; see `_fit_rows`."""
  q: Array          # Fitted loss at epoch 0, in loss units.
  lam: Array        # log(w), in [0, _LAM_MAX].
  b: Array          # Fitted loss at the first valid epoch, in loss units.
  span: Array       # Last minus first valid epoch (0 for < 2 valid entries).


def _horner(coef, z, num_terms):
  """`sum_{k < num_terms} coef[k] * z**k` by Horner's rule.

  Args:
    coef: `[R, C]` coefficients, or None for all ones.
    z: `[C]` evaluation points.
    num_terms: R.

  Returns:
    `[C]` polynomial values.
  """
  if coef is None:
    acc = jnp.ones_like(z)
    for _ in range(num_terms - 1):
      acc = acc * z + 1.0
    return acc
  # One unstack rather than R slices: the same program under jit, fewer
  # operations to dispatch when run without jit.
  coef = jnp.unstack(coef)
  acc = coef[num_terms - 1]
  for k in range(num_terms - 2, -1, -1):
    acc = acc * z + coef[k]
  return acc


def _moments(coefs, lam):
  """Sums of the projected problem at per-row rates `lam`.

  With `phi_s = exp(-lam * s)`, `s` = epochs since the row's first valid
  one (rows are shifted so that it sits in column 0):
    T_j = sum_s l_s s**j phi_s,   S_j = sum_s valid_s s**j phi_s**2,
  j = 0, 1, 2: polynomials in `rho = 1/w` and `rho**2`, evaluated by
  Horner's rule (an `exp` per entry would cost as much as all six chains
  together). Each sum is its own chain: XLA on CPU has no
  multi-output fusion, so shared chains would be recomputed per sum anyway.

  Args:
    coefs: `(l, l s, l s**2, v, v s, v s**2)`, each `[R, C]` (shifted,
      normalised, 0 where invalid); the last three are None when every
      entry is valid (their coefficients are then constants).
    lam: `[C]` rates.

  Returns:
    `((T0, T1, T2), (S0, S1, S2))`, each `[C]`.
  """
  rho = jnp.exp(-lam)
  sig = rho * rho
  r = coefs[0].shape[0]
  out = []
  for j, coef in enumerate(coefs):
    z = rho if j < 3 else sig
    if coef is None:
      # All valid: the coefficients s**(j-3) are compile-time constants.
      acc = jnp.full_like(lam, float((r - 1)**(j - 3)))
      for k in range(r - 2, -1, -1):
        acc = acc * z + float(k**(j - 3))
    else:
      acc = _horner(coef, z, r)
    out.append(acc)
  return tuple(out[:3]), tuple(out[3:])


def _derived(moments, lam, t_first, l2, ratio):
  """Objective, half-gradient and Newton curvature of the projected problem.

  For a fixed `lam` the best fitted loss at the first valid epoch is
  `b = min(T0 / S0, B)`, `B = ratio * exp(-lam * t_first)` (this is the
  bound `q = b * exp(lam * t_first) <= ratio` in normalised units; clipping
  is exact because the objective is a convex quadratic in `b`). With
  residual `res_s = b(lam) phi_s - l_s`, `f = |res|**2` and
  `J = d res / d lam`:
    g = f' / (2 S0) = J.res / S0,   h = f'' / (2 S0) = (J.J + J'.res) / S0.
  Scaling by S0 leaves the Newton step `-g / h` unchanged.

  Args:
    moments: `(T, S)` from `_moments`.
    lam: `[C]` rates.
    t_first: `[C]` (or scalar) epoch index of the first valid entry.
    l2: `[C]` sum of squared valid (normalised) losses.
    ratio: the bound on `q` in normalised units (max_initial_ratio).

  Returns:
    `(f, g, h, b)`, each `[C]`; `h > 0`.
  """
  (t0, t1, t2), (s0, s1, s2) = moments
  inv = 1.0 / jnp.maximum(s0, jnp.finfo(lam.dtype).tiny)
  t0, t1, t2, s1, s2 = t0 * inv, t1 * inv, t2 * inv, s1 * inv, s2 * inv
  b_max = ratio * jnp.exp(-lam * t_first)
  clipped = t0 > b_max
  b = jnp.where(clipped, b_max, t0)
  # b(lam) and its derivatives: on the bound b = B(lam); inside b = T0/S0,
  # with T0' = -T1, S0' = -2 S1, T1' = -T2, S1' = -2 S2.
  db = jnp.where(clipped, -t_first * b, 2.0 * b * s1 - t1)
  d2b = jnp.where(clipped, t_first * t_first * b,
                  t2 + 4.0 * db * s1 - 4.0 * b * s2)
  # res.phi, res.(s phi), res.(s**2 phi), over S0.
  e0 = b - t0
  e1 = b * s1 - t1
  e2 = b * s2 - t2
  f = jnp.maximum(l2 - s0 * b * (2.0 * t0 - b), 0.0)
  g = db * e0 - b * e1
  jj = db * db - 2.0 * b * db * s1 + b * b * s2
  hess = jj + d2b * e0 - 2.0 * db * e1 + b * e2
  # Negative or tiny curvature: fall back towards Gauss-Newton, which is a
  # descent direction; the step cap and the accept test do the rest.
  h = jnp.maximum(hess, 1e-2 * jj) + jnp.finfo(lam.dtype).tiny
  return f, g, h, b


def _aligned_rows(x, v, invalid):
  """Epochs first, each row shifted to its first valid epoch and scaled.

  Epochs first: sums over epochs become Horner chains or `[k, R] @ [R, C]`
  products, and everything else acts on contiguous `[C]` rows. Each row's
  first valid column moves to column 0 (zero-filled): every row's powers
  then count from its own first valid epoch, so no power `w**-r_first` is
  ever formed (it underflows at large rates). Rows are scaled to a maximum
  of 1: losses of 1e-30 and 1e6 behave alike.

  Args:
    x: `[C, R]` losses.
    v: `[C, R]` bool validity, or None.
    invalid: `[C]` bool, rows fitted as all-zero rows.

  Returns:
    `(xt, vt, first, count, span, scale, zero_row)`: `xt` `[R, C]` the
    shifted, scaled losses (0 where invalid); `vt` `[R, C]` their validity
    as 0/1, or None if every entry is valid; then `[C]` each: the first
    valid epoch, the valid count, last minus first valid epoch (0 for < 2
    valid entries), the row scale and whether the row is all zero.
  """
  c, r = x.shape
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  xt = jnp.where(invalid[None, :], 0.0, x.T.astype(dtype))
  if v is None:
    first = jnp.zeros((c,), jnp.int32)
    count = jnp.full((c,), r, jnp.int32)
    span = jnp.full((c,), r - 1, jnp.int32)
    vt = None
  else:
    v = v.T
    # `where`, not a product: values at invalid entries may be NaN.
    xt = jnp.where(v, xt, 0.0)
    first = jnp.argmax(v, axis=0).astype(jnp.int32)
    last = (r - 1 - jnp.argmax(v[::-1], axis=0)).astype(jnp.int32)
    count = jnp.sum(v, axis=0, dtype=jnp.int32)
    span = jnp.where(count >= 2, last - first, 0)
    idx = jnp.arange(r, dtype=jnp.int32)[:, None] + first[None, :]
    inside = idx < r
    idx = jnp.minimum(idx, r - 1)
    xt = jnp.where(inside, jnp.take_along_axis(xt, idx, axis=0), 0.0)
    vt = (inside & jnp.take_along_axis(v, idx, axis=0)).astype(dtype)
  big = jnp.max(xt, axis=0)
  zero_row = big < jnp.finfo(dtype).tiny
  scale = jnp.where(zero_row, 1.0, big)
  xt = xt * (1.0 / scale)[None, :]
  return xt, vt, first, count, span, scale, zero_row


def _log_linear_start(xt):
  """The log-linear fit's rate, and the sum of squared losses.

  Weighted least squares of `log l_s = a - lam * s` with weights `l**2`,
  the first-order match of loss-space least squares (`d log l = dl / l`);
  zero losses, whose floored log means nothing, get no weight. `s` is
  centred on the middle column to limit float32 cancellation.

  Args:
    xt: `[R, C]` aligned losses (`_aligned_rows`).

  Returns:
    `(lam, l2)`, each `[C]`: the start rate in `[0, _LAM_MAX]` and
    `sum_s l_s**2`.
  """
  r = xt.shape[0]
  dtype = xt.dtype
  hi = jax.lax.Precision.HIGHEST
  s_mid = np.arange(r) - 0.5 * (r - 1)
  centred = jnp.asarray(np.stack([np.ones(r), s_mid, s_mid * s_mid]), dtype)
  om = xt * xt
  sw, sws, swss = jnp.dot(centred, om, precision=hi)
  swy, swsy = jnp.dot(centred[:2],
                      om * jnp.log(jnp.maximum(xt, _LOG_FLOOR)), precision=hi)
  l2 = sw
  sw_safe = jnp.where(sw > 0, sw, 1.0)
  var = swss - sws * sws / sw_safe
  cov = swsy - sws * swy / sw_safe
  # One effectively weighted point (or none) has no slope: start flat.
  ok = var > 1e-4 * sw
  lam = jnp.clip(jnp.where(ok, -cov / jnp.where(ok, var, 1.0), 0.0),
                 0.0, _LAM_MAX)
  return lam, l2


def _scanned_start(xt, vt, lam, l2, t_first, ratio):
  """The better of the start `lam` and each of `_SCAN_RATES`, per row.

  A coarse scan of rates guards against starting in the wrong basin: on
  very noisy rows f(lam) can have several local minima, and the log-linear
  start is only a first-order guess. Only T0 and S0 are needed for f; for
  the fixed scan rates they are one `[G, R] @ [R, C]` product each, at the
  log-linear start two Horner chains.

  Args:
    xt, vt: `[R, C]` aligned losses and validity (`_aligned_rows`).
    lam, l2: `[C]` start rates and squared sums (`_log_linear_start`).
    t_first: `[C]` (or scalar) epoch of each row's first valid entry.
    ratio: the bound on `q` in normalised units.

  Returns:
    `[C]` rates.
  """
  r = xt.shape[0]
  dtype = xt.dtype
  hi = jax.lax.Precision.HIGHEST
  scan = np.asarray(_SCAN_RATES, np.float64)
  phi = np.exp(-scan[:, None] * np.arange(r)[None, :])
  t0 = jnp.dot(jnp.asarray(phi, dtype), xt, precision=hi)
  if vt is None:
    s0 = jnp.asarray((phi * phi).sum(axis=1), dtype)[:, None]
  else:
    s0 = jnp.dot(jnp.asarray(phi * phi, dtype), vt, precision=hi)
  scan = jnp.asarray(scan, dtype)[:, None]
  b_scan = jnp.minimum(t0 / jnp.maximum(s0, jnp.finfo(dtype).tiny),
                       ratio * jnp.exp(-scan * t_first))
  f_scan = l2[None, :] - b_scan * (2.0 * t0 - b_scan * s0)
  rho = jnp.exp(-lam)
  t0 = _horner(xt, rho, r)
  s0 = jnp.maximum(_horner(vt, rho * rho, r), jnp.finfo(dtype).tiny)
  b_start = jnp.minimum(t0 / s0, ratio * jnp.exp(-lam * t_first))
  best_f = l2 - b_start * (2.0 * t0 - b_start * s0)
  # A running minimum over the G scan rows (an argmin over the leading axis
  # plus a gather is several times slower on CPU).
  for rate, f_rate in zip(_SCAN_RATES, jnp.unstack(f_scan)):
    better = f_rate < best_f
    lam = jnp.where(better, rate, lam)
    best_f = jnp.where(better, f_rate, best_f)
  return lam


def _newton(xt, vt, lam, l2, t_first, ratio, num_steps):
  """Safeguarded Newton steps in `lam` from the start; see `_derived`.

  Args:
    xt, vt: `[R, C]` aligned losses and validity (`_aligned_rows`).
    lam: `[C]` start rates (`_scanned_start`).
    l2, t_first, ratio: as `_scanned_start`.
    num_steps: Newton steps (traced scalar).

  Returns:
    `(lam, b)`, each `[C]`: the fitted rate and fitted loss at the first
    valid epoch (normalised units).
  """
  r = xt.shape[0]
  dtype = xt.dtype
  # Coefficients of the six Horner chains, weighted by s**j once here so
  # that each chain step is a single multiply-add.
  s_col = jnp.arange(r, dtype=dtype)[:, None]
  coefs = (xt, xt * s_col, xt * (s_col * s_col))
  coefs += (None, None, None) if vt is None else (
      vt, vt * s_col, vt * (s_col * s_col))
  moments = lambda lam: _moments(coefs, lam)
  evaluate = lambda m, lam: _derived(m, lam, t_first, l2, ratio)

  # Accept a step unless it raises f by more than the rounding error of
  # f = L2 - S0 b (2 T0/S0 - b) (cancellation near a good fit); closer than
  # that the gradient, which is accurate, drives the Newton steps.
  tol = 64.0 * jnp.finfo(dtype).eps * l2

  def newton(lam, g, h):
    step = jnp.clip(-g / h, -_MAX_STEP, _MAX_STEP)
    return jnp.clip(lam + step, 0.0, _LAM_MAX)

  def body(_, carry):
    """Takes the candidate if f did not rise, else backtracks towards lam.

    The moments at the candidate arrive in the loop carry, so they are
    materialised once; computed and consumed in the same body, XLA would
    fuse (and rerun) the Horner chains into every consumer.
    """
    (lam, f, b), lam_c, m_c = carry
    f_c, g_c, h_c, b_c = evaluate(m_c, lam_c)
    ok = f_c <= f + tol
    pick = lambda new, old: jnp.where(ok, new, old)
    next_c = pick(newton(lam_c, g_c, h_c), lam + _BACKTRACK * (lam_c - lam))
    state = (pick(lam_c, lam), pick(f_c, f), pick(b_c, b))
    return state, next_c, moments(next_c)

  # The first pass evaluates the start itself (f = inf accepts it); then
  # num_steps Newton steps. Every moments() result feeds only the carry.
  start = (lam, jnp.full_like(lam, jnp.inf), jnp.zeros_like(lam))
  (lam, _, b), _, _ = jax.lax.fori_loop(
      0, num_steps + 1, body, (start, lam, moments(lam)))
  return lam, b


def _fit_rows(x, v, invalid, *, max_initial_ratio, epoch_offset, num_steps):
  """The whole fit for one block of rows; see `fit_exponential_decay`.

  Named steps: align and scale the rows (`_aligned_rows`), a log-linear
  start (`_log_linear_start`), a scan of rates for a better one
  (`_scanned_start`), Newton steps (`_newton`), then back to loss units.

  Args:
    x: `[C, R]` losses.
    v: `[C, R]` bool validity, or None.
    invalid: `[C]` bool, rows fitted as all-zero rows (see `invalid_rows`).
    max_initial_ratio, epoch_offset, num_steps: scalar options (traced).

  Returns:
    `(q, lam, b, span)`, each `[C]`; see `_Fit`.
  """
  xt, vt, first, count, span, scale, zero_row = _aligned_rows(x, v, invalid)
  dtype = xt.dtype
  # Epoch of each row's first valid entry; a scalar when all are valid,
  # which saves an exp per scan rate and row below.
  t_first = epoch_offset + (0 if v is None else first)
  t_first = jnp.asarray(t_first).astype(dtype)
  ratio = jnp.asarray(max_initial_ratio, dtype)
  lam, l2 = _log_linear_start(xt)
  lam = _scanned_start(xt, vt, lam, l2, t_first, ratio)
  lam, b = _newton(xt, vt, lam, l2, t_first, ratio, num_steps)
  return _in_loss_units(xt, lam, b, t_first, ratio, count, span, scale,
                        zero_row)


def _in_loss_units(xt, lam, b, t_first, ratio, count, span, scale, zero_row):
  """`(q, lam, b, span)` of `_Fit` from the normalised fit, degenerate rows
  (fewer than 2 valid entries, all zero) set apart. All `[C]`."""
  dtype = xt.dtype
  # q = b * w**t_first, formed in log space (w**t_first alone may overflow);
  # min() with the ratio absorbs rounding, so the bound holds exactly.
  log_q = jnp.log(jnp.maximum(b, jnp.finfo(dtype).tiny)) + lam * t_first
  q = jnp.where(b > 0, jnp.minimum(jnp.exp(log_q), ratio), 0.0)
  # Fewer than 2 valid entries: no rate; q is the mean valid loss.
  few = count < 2
  mean = jnp.sum(xt, axis=0) / jnp.maximum(count, 1).astype(dtype)
  degenerate = few | zero_row
  lam = jnp.where(degenerate, 0.0, lam)
  q = jnp.where(zero_row, 0.0, jnp.where(few, mean, q))
  b = jnp.where(degenerate, 0.0, b)
  span = jnp.where(degenerate, 0, span)
  top = jnp.finfo(dtype).max
  return (jnp.minimum(q * scale, top), lam, jnp.minimum(b * scale, top),
          span.astype(dtype))


# Rows per block: a block's working arrays (`[R, C]` and a few dozen `[C]`)
# stay in cache, so the Newton steps cost compute, not memory traffic.
_BLOCK_ROWS = 4096


class _Result(NamedTuple):
  """Everything the public functions return, all `[N]`."""
  q: Array
  w: Array
  literal: Array
  observed: Array
  invalid: Array    # bool: a valid entry was NaN, inf or negative.


def invalid_rows(losses: Any, valid: Optional[Any] = None) -> Array:
  """Rows with a NaN, infinite or negative valid loss, bool `[N]`.

  Such rows cannot be fitted. Outside `jax.jit` the public functions refuse
  them; under `jax.jit` (where values cannot be refused) they are fitted as
  all-zero rows instead (`q = 0`, `w = 1`) and `mrmc_scores` scores them
  -inf. Count them with
  `jnp.sum(invalid_rows(losses, valid))`, or ask `mrmc_scores(...,
  with_info=True)`.

  Args:
    losses: `[N, R]` losses.
    valid: optional bool `[N, R]`; entries that are False are ignored.

  Returns:
    bool `[N]`.
  """
  losses = jnp.asarray(losses)
  bad = ~(jnp.isfinite(losses) & (losses >= 0))
  if valid is not None:
    bad = bad & jnp.asarray(valid)
  return jnp.any(bad, axis=1)


@jax.jit
def _core(losses, valid, max_initial_ratio, epoch_offset, num_steps):
  """Jitted fit and scores of all rows, block by block.

  The options are traced scalars, not static arguments: one compilation per
  input shape serves every option value (compiling takes seconds on a CPU;
  the tests check that changing an option does not retrace).

  Args:
    losses: `[N, R]` losses.
    valid: `[N, R]` bool, or None.
    max_initial_ratio: scalar bound on q / max valid loss.
    epoch_offset: int scalar, epoch index of column 0.
    num_steps: int scalar, Newton steps.

  Returns:
    A `_Result`.
  """
  # Rows holding a NaN, inf or negative valid loss (only possible when
  # traced: concrete input is refused) are fitted as all-zero rows, so
  # every output of the fit stays finite; mrmc_scores scores them -inf.
  invalid = invalid_rows(losses, valid)
  n, r = losses.shape
  opts = dict(max_initial_ratio=max_initial_ratio, epoch_offset=epoch_offset,
              num_steps=num_steps)
  if n <= _BLOCK_ROWS:
    fit = _Fit(*_fit_rows(losses, valid, invalid, **opts))
  else:
    num_blocks = -(-n // _BLOCK_ROWS)
    dtype = jnp.promote_types(losses.dtype, jnp.float32)
    out = tuple(jnp.zeros((n,), dtype) for _ in range(4))

    def body(i, out):
      # The last block is moved back to end at row n; it overlaps its
      # predecessor, whose rows it recomputes identically. No padding copy.
      start = jnp.minimum(i * _BLOCK_ROWS, n - _BLOCK_ROWS)
      x = jax.lax.dynamic_slice_in_dim(losses, start, _BLOCK_ROWS)
      v = None if valid is None else jax.lax.dynamic_slice_in_dim(
          valid, start, _BLOCK_ROWS)
      bad = jax.lax.dynamic_slice_in_dim(invalid, start, _BLOCK_ROWS)
      res = _fit_rows(x, v, bad, **opts)
      return tuple(jax.lax.dynamic_update_slice_in_dim(o, r, start, 0)
                   for o, r in zip(out, res))

    fit = _Fit(*jax.lax.fori_loop(0, num_blocks, body, out))
  r_last = jnp.asarray(epoch_offset + r - 1).astype(fit.lam.dtype)
  # q (1 - w**-R_last); expm1 keeps slow decays (lam R << 1) accurate.
  literal = fit.q * -jnp.expm1(-fit.lam * r_last)
  # q (w**-r_first - w**-r_last) = b (1 - w**-(r_last - r_first)).
  observed = fit.b * -jnp.expm1(-fit.lam * fit.span)
  return _Result(q=fit.q, w=jnp.exp(fit.lam), literal=literal,
                 observed=observed, invalid=invalid)


def _compute_dtype(dtype) -> np.dtype:
  """The float dtype the fit runs in (float32, or float64 under x64)."""
  return np.dtype(jax.dtypes.canonicalize_dtype(
      jnp.promote_types(dtype, jnp.float32)))


def _check_inputs(losses: Any, valid: Any, max_initial_ratio: Any,
                  epoch_offset: Any, num_steps: Any) -> Tuple[Any, Any, float]:
  """Validates the arguments; returns `(losses, valid, max_initial_ratio)`.

  Shapes and options are always checked; loss values only when concrete.

  Raises:
    ValueError: with one line naming the bad value and what is allowed.
  """
  if not isinstance(losses, (jax.Array, np.ndarray)):
    losses = np.asarray(losses)
  if losses.ndim != 2:
    raise ValueError(f"losses has shape {tuple(losses.shape)}; expected a "
                     "2-D [N, R] array (examples x epochs).")
  if losses.shape[1] < 2:
    raise ValueError(f"losses has R={losses.shape[1]} epochs (shape "
                     f"{tuple(losses.shape)}); at least 2 are needed to fit a "
                     "decay.")
  dtype = np.dtype(losses.dtype)
  if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating)
                               or np.issubdtype(dtype, np.integer)):
    raise ValueError(f"losses has dtype {dtype}; expected a real float or "
                     "integer dtype.")
  if valid is not None:
    if not isinstance(valid, (jax.Array, np.ndarray)):
      valid = np.asarray(valid)
    check_like_losses(valid, "valid", losses)
    if valid.dtype != np.bool_:
      raise ValueError(f"valid has dtype {valid.dtype}; expected bool (True "
                       "= observed).")
  validation.check_static(max_initial_ratio, "max_initial_ratio")
  validation.check_static(epoch_offset, "epoch_offset")
  validation.check_static(num_steps, "num_steps")
  if (isinstance(max_initial_ratio, bool)
      or not isinstance(max_initial_ratio, (int, float, np.integer,
                                            np.floating))
      or not math.isfinite(max_initial_ratio) or max_initial_ratio <= 1):
    raise ValueError(f"max_initial_ratio={max_initial_ratio!r} is not "
                     "allowed: it must be a finite number > 1.")
  validation.check_int(epoch_offset, "epoch_offset", minimum=0)
  validation.check_int(num_steps, "num_steps", minimum=0)
  if validation.is_concrete(losses, valid) and losses.size:
    x = np.asarray(losses)
    top = np.finfo(_compute_dtype(dtype)).max
    lo, hi = (np.min(x), np.max(x)) if valid is None else (
        np.min(x, where=np.asarray(valid), initial=0),
        np.max(x, where=np.asarray(valid), initial=0))
    # NaN propagates through min/max, so two reductions catch every case.
    if not (lo >= 0 and hi <= top):
      bad = ~((x >= 0) & (x <= top))
      if valid is not None:
        bad &= np.asarray(valid)
      i, j = (int(a) for a in np.argwhere(bad)[0])
      raise ValueError(f"losses[{i}, {j}] = {float(x[i, j])!r} is not allowed: "
                       f"valid losses must be finite, >= 0 and <= {top:.3g} "
                       "(mark missing entries False in `valid`).")
  return losses, valid, float(max_initial_ratio)


def check_like_losses(x: Any, name: str, losses: Any) -> None:
  """`x` (valid, visits) must have the shape of `losses`; a transposed one
  is named as such."""
  want, got = tuple(np.shape(losses)), tuple(np.shape(x))
  if got == want:
    return
  if got == want[::-1]:
    raise ValueError(f"losses has shape {want} and {name} {got}, its "
                     "transpose: one of them is transposed; both must be "
                     "[N, R] (examples x epochs).")
  raise ValueError(f"{name} has shape {got}; it must match losses, {want}.")


def unrecorded_rows(visits: Any) -> Array:
  """Rows not recorded in every epoch: bool `[N]` of int `visits [N, R]`."""
  return jnp.any(jnp.asarray(visits) <= 0, axis=1)


def _check_visits(visits: Any, losses: Any) -> Any:
  """Checks `mrmc_scores`' `visits`; warns about concrete unrecorded rows."""
  if not isinstance(visits, (jax.Array, np.ndarray)):
    visits = np.asarray(visits)
  check_like_losses(visits, "visits", losses)
  validation.check_integer_dtype(visits, "visits")
  if validation.is_concrete(visits):
    rows = np.flatnonzero(np.any(np.asarray(visits) <= 0, axis=1))
    if rows.size:
      warnings.warn(
          f"mrmc_scores: {rows.size} of {visits.shape[0]} rows were not "
          f"recorded in every epoch (visits == 0; first rows "
          f"{rows[:5].tolist()}); they score -inf, after every other row in "
          "select_mask. check_visits names the epochs.", stacklevel=3)
  return visits


def _checked_mode_checks(losses: Any, valid: Any) -> None:
  """Traced input: finite, non-negative valid losses (`checking.checked`)."""
  if validation.is_concrete(losses, valid):
    return  # Checked on the host by _check_inputs.
  checking.check_finite(losses, "losses", where=valid)
  checking.check_all(losses >= 0 if valid is None else (losses >= 0) | ~valid,
                     "losses hold a negative valid entry")


def fit_exponential_decay(
    losses: Any,
    valid: Optional[Any] = None,
    *,
    max_initial_ratio: float = DEFAULT_MAX_INITIAL_RATIO,
    num_steps: int = DEFAULT_NUM_STEPS,
    epoch_offset: int = 1,
) -> Tuple[Array, Array]:
  """Fits `l_r ~= q * w**(-r)` to every row by bounded least squares.

  Minimises `sum_r valid * (q * w**(-r) - l_r)**2` per row subject to
  `0 <= q <= max_initial_ratio * max_r l_r` and `w >= 1` (see the module
  docstring for the method and the edge cases). Works under `jax.jit`;
  value checks are skipped for traced inputs.

  Args:
    losses: float `[N, R]`, `losses[n, j]` = loss of example `n` recorded at
      epoch `r = epoch_offset + j`. Finite and >= 0 where valid.
    valid: optional bool `[N, R]`, True where observed. Entries that are
      False are ignored and may hold anything, NaN included.
    max_initial_ratio: bound on the fitted loss at epoch 0 relative to the
      row's largest valid loss; > 1.
    num_steps: Newton steps after the log-linear start; >= 0.
    epoch_offset: epoch index of column 0: 1 is the paper (`q` extrapolates
      to an unobserved epoch 0); 0 makes `q` the fitted loss at the first
      column.

  Returns:
    `(q, w)`, each float `[N]`: `q` in `[0, max_initial_ratio * max_r l_r]`,
    `w` in `[1, e**30]`; never NaN or inf. Under `jax.jit`, rows with a
    NaN, infinite or negative valid loss get `q = 0`, `w = 1` (see
    `invalid_rows`).

  Raises:
    ValueError: bad shapes, dtypes, options, or (concrete inputs) NaN,
      negative or infinite valid losses.
  """
  losses, valid, ratio = _check_inputs(losses, valid, max_initial_ratio,
                                       epoch_offset, num_steps)
  _checked_mode_checks(losses, valid)
  res = _core(jnp.asarray(losses), valid, ratio, int(epoch_offset),
              int(num_steps))
  return res.q, res.w


def mrmc_scores(
    losses: Any,
    valid: Optional[Any] = None,
    *,
    visits: Optional[Any] = None,
    score: str = "literal",
    max_initial_ratio: float = DEFAULT_MAX_INITIAL_RATIO,
    epoch_offset: int = 1,
    num_steps: int = DEFAULT_NUM_STEPS,
    with_info: bool = False,
) -> Array | Tuple[Array, dict[str, Array]]:
  """MRMC score of every example from its per-epoch losses.

  Fits `l_r ~= q * w**(-r)` with `fit_exponential_decay`, then:
    * `score="literal"` (the paper): `q * (1 - w**(-R_last))` with
      `R_last = epoch_offset + R - 1`, the fitted drop from epoch 0 to the
      last epoch;
    * `score="observed"`: `q * (w**(-r_first) - w**(-r_last))`, the fitted
      drop between the row's first and last valid epochs (never extrapolates
      before the data).
  Both lie in `[0, max_initial_ratio * max_r l_r]` (valid entries of the
  row); rising, flat, all-zero rows and rows with fewer than 2 valid entries
  score 0.

  Rows left out score -inf (never NaN or +inf, also under `jax.jit`), and
  `select_mask` ranks them after every other row:
    * a NaN, infinite or negative valid loss: refused outside `jax.jit`
      (`ValueError`); under it, where values cannot be refused, the row
      scores -inf, is reported by `with_info=True`, and makes the checked
      mode (`checking.checked`) raise;
    * with `visits`, a row with a zero visit count in some epoch (never
      recorded there): -inf, with a `UserWarning` naming the count and the
      first rows when `visits` is concrete.

  Args:
    losses: float `[N, R]` per-epoch losses; see `fit_exponential_decay`.
    valid: optional bool `[N, R]`, True where observed.
    visits: optional int `[N, R]`, the trajectory's visit counts
      (`traj["visits"]`): rows with a 0 in any column score -inf. Pass it
      whenever the trajectory comes from `record`.
    score: "literal" or "observed".
    max_initial_ratio: bound on `q / max_r l_r`; > 1.
    epoch_offset: epoch index of column 0 (1 = paper).
    num_steps: Newton steps of the fit.
    with_info: also return `info`, a dict with `invalid_rows` (bool `[N]`,
      the rows left out for a NaN, inf or negative valid loss; see
      `invalid_rows`), `unrecorded_rows` (bool `[N]`, left out for a zero
      visit count; all False without `visits`), and the int32 counts
      `num_invalid`, `num_unrecorded` and `num_excluded` (rows scored
      -inf).

  Returns:
    float `[N]` scores; higher = larger fitted loss reduction; -inf for
    the rows left out (count them with `jnp.sum(jnp.isneginf(scores))`,
    also under `jax.jit`). With `with_info`, `(scores, info)`.

  Raises:
    ValueError: as `fit_exponential_decay`, an unknown `score`, `visits`
      not an int array of the shape of `losses`, or a `losses` that
      `valid`'s or `visits`' shape shows to be transposed (`[R, N]`).
  """
  if score not in SCORES:
    raise ValueError(f"score={score!r} is not allowed: it must be one of "
                     f"{', '.join(repr(s) for s in SCORES)}.")
  losses, valid, ratio = _check_inputs(losses, valid, max_initial_ratio,
                                       epoch_offset, num_steps)
  if visits is not None:
    visits = _check_visits(visits, losses)
  _checked_mode_checks(losses, valid)
  res = _core(jnp.asarray(losses), valid, ratio, int(epoch_offset),
              int(num_steps))
  scores = res.literal if score == "literal" else res.observed
  unrecorded = (jnp.zeros_like(res.invalid) if visits is None
                else unrecorded_rows(visits))
  left_out = res.invalid | unrecorded
  scores = jnp.where(left_out, -jnp.inf, scores)
  if not with_info:
    return scores
  count = lambda x: jnp.sum(x, dtype=jnp.int32)
  return scores, {"invalid_rows": res.invalid,
                  "num_invalid": count(res.invalid),
                  "unrecorded_rows": unrecorded,
                  "num_unrecorded": count(unrecorded),
                  "num_excluded": count(left_out)}


def fitted_curve(q: Any, w: Any, epochs: Any) -> Array:
  """The fitted losses `q * w**(-r)` at the given epochs, for plots.

  Args:
    q: float `[N]` fitted loss at epoch 0.
    w: float `[N]` decay factors, > 0 (>= 1 from the fit).
    epochs: `[E]` epoch indices (the same indexing as the fit's
      `epoch_offset`, e.g. `jnp.arange(1, R + 1)`).

  Returns:
    float `[N, E]`.

  Raises:
    ValueError: `q` and `w` not 1-D of equal length, or `epochs` not 1-D.
  """
  if np.ndim(q) != 1 or np.shape(q) != np.shape(w):
    raise ValueError(f"q has shape {np.shape(q)} and w {np.shape(w)}; both "
                     "must be 1-D [N] of the same length.")
  if np.ndim(epochs) != 1:
    raise ValueError(f"epochs has shape {np.shape(epochs)}; expected a 1-D "
                     "[E] array.")
  return _curve(jnp.asarray(q), jnp.asarray(w), jnp.asarray(epochs))


@jax.jit
def _curve(q, w, epochs):
  dtype = jnp.promote_types(q.dtype, jnp.float32)
  # exp(-log(w) r) rather than w**-r: no inf intermediate for large w.
  log_w = jnp.log(w.astype(dtype))
  return q.astype(dtype)[:, None] * jnp.exp(
      -log_w[:, None] * epochs.astype(dtype)[None, :])
