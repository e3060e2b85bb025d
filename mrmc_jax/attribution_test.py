"""Tests for attribution.py: closed forms, skipped steps, metrics, a run."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mrmc_jax import attribution
from mrmc_jax import optim
from mrmc_jax import train_step

PAD = -1


def _batch(x, y, ids, mask):
  return {"image": jnp.asarray(x, jnp.float32),
          "label": jnp.asarray(y, jnp.int32),
          "id": jnp.asarray(ids, jnp.int32), "mask": jnp.asarray(mask)}


# --------------------------------------------------------------------------
# (a) Closed forms under plain SGD.


def test_linear_squared_loss_matches_hand_computed_matrix():
  # Loss 0.5 (w.x - y)^2, so g_i = x_i (w.x_i - y_i). Five training examples
  # (ids 0..4), probes are ids 1, 3, 4; three SGD steps on known batches.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 3))
  y = rng.normal(size=5)
  probes = np.array([1, 3, 4])
  batches = [([0, 1, PAD], [True, True, False]),
             ([3, 4, 2], [True, True, True]),
             ([0, 2, PAD], [True, True, False])]
  etas = [0.1, 0.05, 0.2]

  def loss_fn(w, xi, yi):
    return 0.5 * (jnp.dot(w, xi) - yi)**2

  step = jax.jit(attribution.accumulate, static_argnums=1)
  w = jnp.asarray([0.3, -0.2, 0.5], jnp.float32)
  attr = attribution.init_attribution(3, 2)
  w_ref = np.asarray(w, np.float64)
  a_ref = np.zeros((3, 3))
  for (ids, mask), eta in zip(batches, etas):
    ids, mask = np.asarray(ids), np.asarray(mask)
    valid = ids[mask]
    in_batch = attribution.probe_membership(
        jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(probes))
    attr = step(attr, loss_fn, w, jnp.asarray(x[probes], jnp.float32),
                jnp.asarray(y[probes], jnp.float32), in_batch,
                eta / len(valid))
    # The SGD update on the batch mean, in float32 like the library.
    rows = np.maximum(ids, 0)
    resid = x[rows] @ np.asarray(w) - y[rows]
    grad = np.sum(mask[:, None] * x[rows] * resid[:, None], 0) / len(valid)
    w = w - eta * jnp.asarray(grad, jnp.float32)
    # Hand computation, in float64, from the formula.
    g = {k: x[k] * (x[k] @ w_ref - y[k]) for k in range(5)}
    for jj, j in enumerate(probes):
      if j in valid:
        for ii, i in enumerate(probes):
          a_ref[jj, ii] += eta / len(valid) * g[i] @ g[j]
    w_ref = w_ref - eta * np.mean([g[k] for k in valid], axis=0)
  np.testing.assert_allclose(attr.matrix, a_ref, rtol=2e-5, atol=1e-7)
  # Probe 1 was in step 1, probes 3, 4 in step 2; step 3 had none.
  np.testing.assert_array_equal(attr.visits, [1, 1, 1])
  assert int(attr.probe_steps) == 2 and int(attr.steps) == 3


def _linear_softmax(variables, images, *, train, mask=None,
                    return_features=False):
  del train, mask, return_features
  p = variables["params"]
  return images.reshape(images.shape[0], -1) @ p["w"] + p["b"], None


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_attributed_step_is_exact_for_sgd_with_a_schedule():
  # Softmax regression with cross-entropy: g = [x (p - e_y), p - e_y], so
  # <g_i, g_j> = (x_i.x_j + 1) (r_i.r_j) with r = p - e_y. The schedule's
  # learning rate of each update and 1 / |B_valid| must both be applied.
  rng = np.random.default_rng(1)
  n, d, c = 8, 4, 3
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, c, size=n)
  probes = np.array([2, 5, 7, 0])
  params = {"w": jnp.asarray(rng.normal(size=(d, c)) * 0.3, jnp.float32),
            "b": jnp.zeros((c,), jnp.float32)}
  sched = optax.cosine_decay_schedule(0.5, 3, alpha=0.2)
  tx = optax.sgd(sched)
  state = train_step.create_train_state({"params": params}, tx)
  step = jax.jit(attribution.make_attributed_train_step(
      _linear_softmax, tx, sched, probes, x[probes], y[probes]),
                 donate_argnums=(0, 1))
  attr = attribution.init_attribution(len(probes), 3)
  batches = [[2, 3, 4, PAD], [5, 7, 1, 6], [0, 2, PAD, PAD]]
  w, b = np.asarray(params["w"], np.float64), np.zeros(c)
  a_ref = np.zeros((4, 4))
  probe_losses = []
  for t, ids in enumerate(batches):
    ids = np.asarray(ids)
    mask = ids != PAD
    rows = np.maximum(ids, 0)
    state, attr, stats = step(state, attr,
                              _batch(x[rows], y[rows], ids, mask))
    eta = float(sched(t))
    valid = ids[mask]
    r = {k: _softmax(x[k] @ w + b) - np.eye(c)[y[k]] for k in range(n)}
    for jj, j in enumerate(probes):
      if j in valid:
        probe_losses.append(-np.log(_softmax(x[j] @ w + b)[y[j]]))
        for ii, i in enumerate(probes):
          a_ref[jj, ii] += (eta / len(valid) * (x[i] @ x[j] + 1)
                            * (r[i] @ r[j]))
    w = w - eta * np.mean([np.outer(x[k], r[k]) for k in valid], axis=0)
    b = b - eta * np.mean([r[k] for k in valid], axis=0)
    assert int(stats["probes_in_batch"]) == np.isin(probes, valid).sum()
  np.testing.assert_allclose(attr.matrix, a_ref, rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(state.params["w"], w, rtol=1e-5, atol=1e-6)
  # Each probe's training-pass loss went to the column of its visit.
  np.testing.assert_array_equal(attr.visits, [2, 1, 1, 1])
  got = np.asarray(attr.losses)
  assert np.isfinite(got[0, :2]).all() and np.isnan(got[0, 2])
  np.testing.assert_allclose(
      np.sort(got[np.isfinite(got)]), np.sort(probe_losses), rtol=1e-5)
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_momentum_scales_the_step_by_its_long_run_factor():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 3)).astype(np.float32)
  y = np.array([0, 1, 2, 0])
  params = {"w": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
            "b": jnp.zeros((3,), jnp.float32)}
  batch = _batch(x, y, [0, 1, 2, 3], [True] * 4)
  out = {}
  for beta in (0.0, 0.9):
    tx = optax.sgd(0.1, momentum=beta or None)
    state = train_step.create_train_state({"params": params}, tx)
    step = jax.jit(attribution.make_attributed_train_step(
        _linear_softmax, tx, optax.constant_schedule(0.1), [1, 3], x[[1, 3]],
        y[[1, 3]], momentum=beta))
    _, attr, _ = step(state, attribution.init_attribution(2, 1), batch)
    out[beta] = np.asarray(attr.matrix)
  np.testing.assert_allclose(out[0.9], 10 * out[0.0], rtol=1e-5)
  with pytest.raises(ValueError, match="momentum=1.0"):
    attribution.make_attributed_train_step(
        _linear_softmax, optax.sgd(0.1), optax.constant_schedule(0.1), [1],
        x[:1], y[:1], momentum=1.0)


def test_make_schedule_is_the_schedule_inside_make_optimizer():
  # The runner reads eta_t from optim.make_schedule; it must be the rate the
  # optimiser applies at every update.
  kw = dict(learning_rate=0.1, total_steps=5, schedule="cosine",
            end_learning_rate=1e-3)
  tx = optim.make_optimizer(optimizer="sgd", momentum=0.0, **kw)
  sched = optim.make_schedule(**kw)
  params = jnp.zeros(2)
  opt_state = tx.init(params)
  grad = jnp.asarray([1.0, -2.0])
  for t in range(6):
    updates, opt_state = tx.update(grad, opt_state, params)
    np.testing.assert_allclose(updates, -sched(t) * grad, rtol=1e-6)


# --------------------------------------------------------------------------
# (b) Steps without probes cost nothing and change nothing.


def test_steps_without_probes_skip_the_gradient_branch():
  calls = []

  def loss_fn(w, xi, yi):
    # Runs on the host each time the gradient branch executes.
    jax.debug.callback(lambda: calls.append(1))
    return 0.5 * (jnp.dot(w, xi) - yi)**2

  w = jnp.ones(3)
  px, py = jnp.eye(3), jnp.zeros(3)

  @jax.jit
  def step(attr, in_batch):
    return attribution.accumulate(attr, loss_fn, w, px, py, in_batch, 0.1)

  attr = attribution.init_attribution(3, 1)
  attr = attr.replace(matrix=jnp.arange(9.0).reshape(3, 3))
  # Padding rows carry a probe's id: they must not count as that probe.
  in_batch = attribution.probe_membership(
      jnp.asarray([7, 0, 1]), jnp.asarray([True, False, False]),
      jnp.asarray([0, 1, 2]))
  assert not np.asarray(in_batch).any()
  out = step(attr, in_batch)
  jax.block_until_ready(out)
  assert not calls
  np.testing.assert_array_equal(out.matrix, attr.matrix)
  assert int(out.probe_steps) == 0 and int(out.steps) == 1
  # The same compiled step with a probe does run the branch.
  out = step(attr, jnp.asarray([False, True, False]))
  jax.block_until_ready(out)
  assert calls
  assert int(out.probe_steps) == 1
  assert not np.array_equal(out.matrix, attr.matrix)
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_probes_are_stratified_seeded_and_inside_candidates():
  labels = np.repeat(np.arange(4), 25)
  labels[:20] = 3  # class 0 keeps 5 examples only
  cand = np.arange(0, 100, 2)
  p = attribution.choose_probes(labels, 12, seed=3, candidates=cand)
  assert len(set(p.tolist())) == 12 and np.isin(p, cand).all()
  assert np.all(np.diff(labels[p]) >= 0)  # ordered by class
  counts = np.bincount(labels[p], minlength=4)
  assert counts.max() - counts.min() <= 1
  np.testing.assert_array_equal(
      p, attribution.choose_probes(labels, 12, seed=3, candidates=cand))
  assert not np.array_equal(
      p, attribution.choose_probes(labels, 12, seed=4, candidates=cand))
  # A class with too few candidates gives its share to the others.
  few = attribution.choose_probes(labels, 40, seed=0,
                                  candidates=np.arange(100))
  assert np.bincount(labels[few], minlength=4)[0] == 5
  with pytest.raises(ValueError, match="only 3 candidate"):
    attribution.choose_probes(labels, 4, seed=0, candidates=[1, 2, 3])


# --------------------------------------------------------------------------
# (c) Metrics on hand matrices.


def test_metrics_on_hand_matrices():
  sym = np.array([[3.0, 1.0, -2.0], [1.0, 4.0, 0.5], [-2.0, 0.5, 1.0]])
  for diag in (True, False):
    assert attribution.symmetry_error(sym, include_diagonal=diag) == 0.0
    assert attribution.stability_error(
        7.5 * sym, sym, include_diagonal=diag) == pytest.approx(0.0, abs=1e-12)
  # A_hat = A; sum |A^T - A| = 2, sum |A| = 1; ||A^T - A||_F = sqrt(2).
  assert attribution.symmetry_error([[0.0, 1.0], [0.0, 0.0]]) == 2.0
  assert attribution.symmetry_error(
      [[0.0, 1.0], [0.0, 0.0]], norm="frobenius") == pytest.approx(2**0.5)
  assert attribution.symmetry_error(sym, norm="frobenius") == 0.0
  # Off-diagonal variant ignores the diagonal: [[9, 1], [1, 9]] vs [[1, 1],
  # [1, 1]] differ only there.
  a = np.array([[1.0, 1.0], [1.0, 1.0]])
  b = np.array([[9.0, 1.0], [1.0, 9.0]])
  assert attribution.stability_error(b, a, include_diagonal=False) == 0.0
  assert attribution.stability_error(b, a) > 0.5
  # A sign flip of B is the largest possible error: sum |-2 A_hat| / sum
  # |A_hat| = 2.
  assert attribution.stability_error(-sym, sym) == pytest.approx(2.0)
  m = np.array([[5.0, 1.0, 2.0], [3.0, 5.0, 0.0], [1.0, 1.0, 5.0]])
  np.testing.assert_array_equal(attribution.contributions(m), [3, 3, 2])
  np.testing.assert_array_equal(attribution.received(m), [4, 2, 2])
  assert attribution.spearman([1, 2, 3, 4], [10, 20, 30, 50])["rho"] == 1.0
  assert attribution.spearman([1, 1, 1], [1, 2, 3])["rho"] is None
  with pytest.raises(ValueError, match="all-zero"):
    attribution.normalise(np.zeros((2, 2)))
