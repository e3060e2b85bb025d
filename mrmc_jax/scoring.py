"""MRMC scores: a bounded exponential-decay fit of per-epoch loss sequences.

MRMC records each training example's loss once per epoch for `R` epochs,
`losses[n, r - 1] = l_r` for `r = 1..R`, fits

  l_r ~= q * w**(-r),   q >= 0,  w >= 1,

to every row by least squares in loss space, and scores an example by its
fitted loss reduction, the paper's literal score `q * (1 - w**(-R))`.

Fit. Write `w = exp(lam)`. For a fixed `lam` the model is linear in `q`, so
the best `q` is a closed-form (clipped) projection; what is left is a 1-D
problem in `lam` per row (variable projection). It starts from a weighted
linear fit of `log(l)` against `r` (weights `l**2`, the first-order match to
loss-space least squares) and takes `num_steps` safeguarded Newton steps on
`lam`, for all rows at once. Each step needs only `sum_r l_r w**(-r) r**j`
and `sum_r w**(-2r) r**j`, `j = 0, 1, 2`: polynomials in `1/w` evaluated by
Horner's rule, one pass over the data without any `exp` per entry, which is
what makes a million rows take a fraction of a second on a CPU.

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
    `q` = mean of its valid losses (0 if none) and score 0.

Guarantees: `q` in `[0, max_initial_ratio * M]` and `w` in `[1, e**30]`,
where `M` is the row's largest valid loss; the literal score is in
`[0, q] subset [0, max_initial_ratio * M]`, the observed score in
`[0, max_initial_ratio * M]` as well (it is at most the fitted loss at the
first valid epoch, which the bound also caps). Scores are never NaN or inf.
"""

import functools
import math
from typing import Any, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax import validation

Array = jax.Array

# q <= 2 * (largest observed loss): a loss that at most halves between the
# unobserved epoch 0 and its largest observed value. Smooth decays found in
# practice (w of 1.05-1.5 per epoch) never reach it; sharp drops after
# epoch 1 do, and are what the bound exists to tame.
DEFAULT_MAX_INITIAL_RATIO = 2.0
# Newton converges in well under this from the log-linear start (checked
# against scipy in the tests); each step is one pass over the data.
DEFAULT_NUM_STEPS = 16
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
  """Per-row fit, all `[N]`; see `_fit_core`."""
  q: Array          # Fitted loss at epoch 0, in loss units.
  lam: Array        # log(w), in [0, _LAM_MAX].
  b: Array          # Fitted loss at the first valid epoch, in loss units.
  span: Array       # Last minus first valid epoch (0 for < 2 valid entries).


def _horner(coef, z, num_terms):
  """`sum_{k < num_terms} coef[k] * z**k` by Horner's rule.

  Args:
    coef: `[R, C]` coefficients, or None for all ones.
    z: `[C]` or scalar evaluation point.
    num_terms: R.

  Returns:
    `[C]` (or scalar for scalar z and no coef) polynomial values.
  """
  if coef is None:
    acc = jnp.ones_like(z)
    for _ in range(num_terms - 1):
      acc = acc * z + 1.0
    return acc
  acc = coef[num_terms - 1]
  for k in range(num_terms - 2, -1, -1):
    acc = acc * z + coef[k]
  return acc


def _moments(xt, vt, lam):
  """Sums of the projected problem at rate `lam`, by Horner's rule.

  With `phi_s = exp(-lam * s)`, `s` = epochs since the row's first valid
  one (rows are shifted so that it sits in column 0):
    T_j = sum_s l_s s**j phi_s,   S_j = sum_s valid_s s**j phi_s**2,
  j = 0, 1, 2: polynomials in `rho = 1/w` and `rho**2`, so no `exp` per
  entry. Each sum is its own chain on purpose: XLA on CPU has no
  multi-output fusion, so chains shared between sums would be recomputed
  for every sum anyway.

  Args:
    xt: `[R, C]` shifted normalised losses, 0 where invalid.
    vt: `[R, C]` shifted validity as 0/1 floats, or None (all valid).
    lam: `[C]` rates.

  Returns:
    `(T0, T1, T2, S0, S1, S2)`, each `[C]`.
  """
  rho = jnp.exp(-lam)
  sig = rho * rho
  r = xt.shape[0]
  out = []
  for data, z in ((xt, rho), (vt, sig)):
    for j in range(3):
      def term(k):
        c = float(k**j)
        if data is None:
          return c
        return data[k] if j == 0 else data[k] * c
      acc = jnp.broadcast_to(jnp.asarray(term(r - 1), lam.dtype), lam.shape)
      for k in range(r - 2, -1, -1):
        acc = acc * z + term(k)
      out.append(acc)
  return tuple(out)


def _shift_to_first(cols, first):
  """Moves each row's first valid column to column 0, zero-filled.

  Afterwards every row's powers count from its own first valid epoch, so
  the Horner chains need no per-row gating and never form `rho**first`
  (which underflows at large rates). Written as a sum over one-hot shifts
  with float masks: O(R**2) multiply-adds once, all vectorised (a chain of
  selects would be re-evaluated exponentially often by XLA's fusion).

  Args:
    cols: R arrays `[C]`, column k of the block.
    first: `[C]` int32 shift per row, in `[0, R)`.

  Returns:
    R arrays `[C]`: `out[k][c] = cols[k + first[c]][c]`, 0 past the end.
  """
  r = len(cols)
  hot = [(first == j).astype(cols[0].dtype) for j in range(r)]
  out = []
  for k in range(r):
    acc = hot[0] * cols[k]
    for j in range(1, r - k):
      acc = acc + hot[j] * cols[k + j]
    out.append(acc)
  return out


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
    moments: `(T0, T1, T2, S0, S1, S2)` from `_moments`.
    lam: `[C]` rates.
    t_first: `[C]` epoch index of the first valid entry.
    l2: `[C]` sum of squared valid losses.
    ratio: the bound on `q`, normalised (max_initial_ratio).

  Returns:
    `(f, g, h, b)`, each `[C]`; `h` > 0 (see below).
  """
  t0, t1, t2, s0, s1, s2 = moments
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


def _fit_rows(x, v, *, max_initial_ratio, epoch_offset, num_steps):
  """The whole fit for one block of rows; see `fit_exponential_decay`.

  Args:
    x: `[C, R]` losses.
    v: `[C, R]` bool validity, or None.
    max_initial_ratio, epoch_offset, num_steps: static options.

  Returns:
    `(q, lam, b, span)`, each `[C]`; see `_Fit`.
  """
  c, r = x.shape
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  # The block is handled as R column vectors `[C]`: every pass below is a
  # short unrolled loop over them, which XLA on CPU fuses and vectorises (a
  # reduction over a length-R minor axis is many times slower). Columns are
  # sliced straight from x: a transposed copy would be made once per
  # consumer.
  cols = [x[:, k].astype(dtype) for k in range(r)]
  vcols = None if v is None else [v[:, k] for k in range(r)]
  if vcols is not None:
    # `where`, not a product: values at invalid entries may be NaN.
    cols = [jnp.where(vk, xk, 0.0) for xk, vk in zip(cols, vcols)]
  big = functools.reduce(jnp.maximum, cols)
  zero_row = big < jnp.finfo(dtype).tiny
  # Rows scaled to a maximum of 1: 1e-30 and 1e6 losses behave alike. A
  # product, not a quotient: XLA recomputes this in every consumer, and a
  # divide per entry per consumer would dominate the set-up.
  scale = jnp.where(zero_row, 1.0, big)
  inv_scale = 1.0 / scale
  cols = [xk * inv_scale for xk in cols]

  if vcols is None:
    first = jnp.zeros((c,), jnp.int32)
    count = jnp.full((c,), r, jnp.int32)
    span = jnp.full((c,), r - 1, jnp.int32)
    vt = None
  else:
    first = jnp.full((c,), r - 1, jnp.int32)
    last = jnp.zeros((c,), jnp.int32)
    for k in range(r):
      first = jnp.where(vcols[r - 1 - k], r - 1 - k, first)
      last = jnp.where(vcols[k], k, last)
    count = sum(vk.astype(jnp.int32) for vk in vcols)
    span = jnp.where(count >= 2, last - first, 0)
    cols = _shift_to_first(cols, first)
    vt = jnp.stack(_shift_to_first([vk.astype(dtype) for vk in vcols],
                                   first))
  xt = jnp.stack(cols)
  t_first = (epoch_offset + first).astype(dtype)
  ratio = jnp.asarray(max_initial_ratio, dtype)

  # Log-linear start: weighted least squares of log l_r = a - lam * r with
  # weights l**2, the first-order match of loss-space least squares (d log l
  # = dl / l); zero losses, whose floored log means nothing, get no weight.
  # r is centred on the middle column to limit float32 cancellation.
  sw = sws = swss = swy = swsy = jnp.zeros((c,), dtype)
  for k, xk in enumerate(cols):
    om = xk * xk
    s = k - 0.5 * (r - 1)
    y = jnp.log(jnp.maximum(xk, _LOG_FLOOR))
    sw = sw + om
    sws = sws + om * s
    swss = swss + om * (s * s)
    swy = swy + om * y
    swsy = swsy + (om * s) * y
  l2 = sw
  sw_safe = jnp.where(sw > 0, sw, 1.0)
  var = swss - sws * sws / sw_safe
  cov = swsy - sws * swy / sw_safe
  # One effectively weighted point (or none) has no slope: start flat.
  ok = var > 1e-4 * sw
  lam = jnp.clip(jnp.where(ok, -cov / jnp.where(ok, var, 1.0), 0.0),
                 0.0, _LAM_MAX)

  # A coarse scan of rates guards against starting in the wrong basin: on
  # very noisy rows f(lam) can have several local minima, and the
  # log-linear start is only a first-order guess. Each scan point costs two
  # short Horner chains (f needs only T0 and S0), about a fifth of a step.
  def objective(lam):
    rho = jnp.exp(-lam)
    t0 = _horner(xt, rho, r)
    s0 = _horner(vt, rho * rho, r)
    b = jnp.minimum(t0 / jnp.maximum(s0, jnp.finfo(dtype).tiny),
                    ratio * jnp.exp(-lam * t_first))
    return l2 - b * (2.0 * t0 - b * s0)

  best_f = objective(lam)
  for scan_lam in _SCAN_RATES:
    f_scan = objective(jnp.asarray(scan_lam, dtype))
    lam = jnp.where(f_scan < best_f, scan_lam, lam)
    best_f = jnp.minimum(f_scan, best_f)

  # Accept a step unless it raises f by more than the rounding error of
  # f = L2 - S0 b (2 T0/S0 - b) (cancellation near a good fit); closer than
  # that the gradient, which is accurate, drives the Newton steps.
  tol = 64.0 * jnp.finfo(dtype).eps * l2
  evaluate = lambda m, lam: _derived(m, lam, t_first, l2, ratio)
  moments = lambda lam: _moments(xt, vt, lam)

  def newton(lam, g, h):
    step = jnp.clip(-g / h, -_MAX_STEP, _MAX_STEP)
    return jnp.clip(lam + step, 0.0, _LAM_MAX)

  def accept(state, lam_c, m_c):
    """Takes the candidate if f did not rise, else backtracks towards lam."""
    lam, f, b = state
    f_c, g_c, h_c, b_c = evaluate(m_c, lam_c)
    ok = f_c <= f + tol
    pick = lambda new, old: jnp.where(ok, new, old)
    next_c = pick(newton(lam_c, g_c, h_c), lam + _BACKTRACK * (lam_c - lam))
    return (pick(lam_c, lam), pick(f_c, f), pick(b_c, b)), next_c

  f, g, h, b = evaluate(moments(lam), lam)
  state = (lam, f, b)
  if num_steps > 0:
    # The moments at the candidate travel in the loop carry, so they are
    # materialised once; computed and consumed in the same loop body, XLA
    # would fuse (and rerun) the Horner chains into every consumer.
    def body(_, carry):
      state, lam_c, m_c = carry
      state, lam_c = accept(state, lam_c, m_c)
      return state, lam_c, moments(lam_c)

    lam_c = newton(lam, g, h)
    state, lam_c, m_c = jax.lax.fori_loop(
        0, num_steps - 1, body, (state, lam_c, moments(lam_c)))
    state, _ = accept(state, lam_c, m_c)
  lam, _, b = state

  # q = b * w**t_first, formed in log space (w**t_first alone may overflow);
  # min() with the ratio absorbs rounding, so the bound holds exactly.
  log_q = jnp.log(jnp.maximum(b, jnp.finfo(dtype).tiny)) + lam * t_first
  q = jnp.where(b > 0, jnp.minimum(jnp.exp(log_q), ratio), 0.0)
  # Fewer than 2 valid entries: no rate; q is the mean valid loss.
  few = count < 2
  mean = sum(cols) / jnp.maximum(count, 1).astype(dtype)
  degenerate = few | zero_row
  lam = jnp.where(degenerate, 0.0, lam)
  q = jnp.where(zero_row, 0.0, jnp.where(few, mean, q))
  b = jnp.where(degenerate, 0.0, b)
  span = jnp.where(degenerate, 0, span)
  top = jnp.finfo(dtype).max
  return (jnp.minimum(q * scale, top), lam, jnp.minimum(b * scale, top),
          span.astype(dtype))


# Rows per block: a block's [C] working vectors (a few dozen) stay in cache,
# so each Newton step costs compute, not memory traffic.
_BLOCK_ROWS = 16384


@functools.partial(
    jax.jit, static_argnames=("max_initial_ratio", "epoch_offset",
                              "num_steps"))
def _fit_core(losses, valid, *, max_initial_ratio, epoch_offset, num_steps):
  """Jitted fit of all rows, block by block; returns a `_Fit` of `[N]`."""
  n = losses.shape[0]
  opts = dict(max_initial_ratio=max_initial_ratio, epoch_offset=epoch_offset,
              num_steps=num_steps)
  if n <= _BLOCK_ROWS:
    return _Fit(*_fit_rows(losses, valid, **opts))
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
    res = _fit_rows(x, v, **opts)
    return tuple(jax.lax.dynamic_update_slice_in_dim(o, r, start, 0)
                 for o, r in zip(out, res))

  return _Fit(*jax.lax.fori_loop(0, num_blocks, body, out))


@functools.partial(
    jax.jit, static_argnames=("score", "max_initial_ratio", "epoch_offset",
                              "num_steps"))
def _scores_core(losses, valid, *, score, max_initial_ratio, epoch_offset,
                 num_steps):
  """Jitted scores; see `mrmc_scores`. Returns `[N]`."""
  fit = _fit_core(losses, valid, max_initial_ratio=max_initial_ratio,
                  epoch_offset=epoch_offset, num_steps=num_steps)
  if score == "literal":
    r_last = epoch_offset + losses.shape[1] - 1
    # q * (1 - w**-R); expm1 keeps slow decays (lam * R << 1) accurate.
    return fit.q * -jnp.expm1(-fit.lam * r_last)
  # q * (w**-r_first - w**-r_last) = b * (1 - w**-(r_last - r_first)).
  return fit.b * -jnp.expm1(-fit.lam * fit.span)


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
    if tuple(valid.shape) != tuple(losses.shape):
      raise ValueError(f"valid has shape {tuple(valid.shape)}; it must match "
                       f"losses, {tuple(losses.shape)}.")
    if valid.dtype != np.bool_:
      raise ValueError(f"valid has dtype {valid.dtype}; expected bool (True "
                       "= observed).")
  if (isinstance(max_initial_ratio, bool)
      or not isinstance(max_initial_ratio, (int, float, np.integer,
                                            np.floating))
      or not math.isfinite(max_initial_ratio) or max_initial_ratio <= 1):
    raise ValueError(f"max_initial_ratio={max_initial_ratio!r} is not "
                     "allowed: it must be a finite number > 1.")
  validation.check_positive_int(epoch_offset, "epoch_offset", minimum=0)
  validation.check_positive_int(num_steps, "num_steps", minimum=0)
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
      raise ValueError(f"losses[{i}, {j}] = {x[i, j]!r} is not allowed: "
                       f"valid losses must be finite, >= 0 and <= {top:.3g} "
                       "(mark missing entries False in `valid`).")
  return losses, valid, float(max_initial_ratio)


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
    `w` in `[1, e**30]`; never NaN or inf for finite non-negative input.

  Raises:
    ValueError: bad shapes, dtypes, options, or (concrete inputs) NaN,
      negative or infinite valid losses.
  """
  losses, valid, ratio = _check_inputs(losses, valid, max_initial_ratio,
                                       epoch_offset, num_steps)
  fit = _fit_core(jnp.asarray(losses), valid, max_initial_ratio=ratio,
                  epoch_offset=int(epoch_offset), num_steps=int(num_steps))
  return fit.q, jnp.exp(fit.lam)


def mrmc_scores(
    losses: Any,
    valid: Optional[Any] = None,
    *,
    score: str = "literal",
    max_initial_ratio: float = DEFAULT_MAX_INITIAL_RATIO,
    epoch_offset: int = 1,
    num_steps: int = DEFAULT_NUM_STEPS,
) -> Array:
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

  Args:
    losses: float `[N, R]` per-epoch losses; see `fit_exponential_decay`.
    valid: optional bool `[N, R]`, True where observed.
    score: "literal" or "observed".
    max_initial_ratio: bound on `q / max_r l_r`; > 1.
    epoch_offset: epoch index of column 0 (1 = paper).
    num_steps: Newton steps of the fit.

  Returns:
    float `[N]` scores; higher = larger fitted loss reduction.

  Raises:
    ValueError: as `fit_exponential_decay`, or an unknown `score`.
  """
  if score not in SCORES:
    raise ValueError(f"score={score!r} is not allowed: it must be one of "
                     f"{', '.join(repr(s) for s in SCORES)}.")
  losses, valid, ratio = _check_inputs(losses, valid, max_initial_ratio,
                                       epoch_offset, num_steps)
  return _scores_core(jnp.asarray(losses), valid, score=score,
                      max_initial_ratio=ratio, epoch_offset=int(epoch_offset),
                      num_steps=int(num_steps))


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
  q = jnp.asarray(q)
  dtype = jnp.promote_types(q.dtype, jnp.float32)
  log_w = jnp.log(jnp.asarray(w, dtype))
  e = jnp.asarray(epochs, dtype)
  # exp(-log(w) r) rather than w**-r: no inf intermediate for large w.
  return q.astype(dtype)[:, None] * jnp.exp(-log_w[:, None] * e[None, :])
