"""Learning-rate schedules: values worked out by hand."""

import numpy as np
import pytest

from mrmc_jax import optim


def test_warmup_cosine_values():
  # Peak 1.6, end 0.1, 10 warm-up updates, 110 in all: linear 0 -> 1.6 over
  # updates 0..10, then 0.1 + 1.5 * (1 + cos(pi * t / 100)) / 2.
  sched = optim.make_schedule(learning_rate=1.6, total_steps=110,
                              schedule="warmup_cosine",
                              end_learning_rate=0.1, warmup_steps=10)
  for count, want in [(0, 0.0), (5, 0.8), (10, 1.6), (60, 0.85),
                      (110, 0.1), (200, 0.1)]:
    np.testing.assert_allclose(float(sched(count)), want, rtol=1e-6,
                               atol=1e-7, err_msg=str(count))
  # Strictly increasing during the warm-up, decreasing after it.
  values = np.array([float(sched(t)) for t in range(111)])
  assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) < 0)


def test_warmup_cosine_is_what_the_optimiser_runs():
  kw = dict(learning_rate=0.5, total_steps=20, schedule="warmup_cosine",
            warmup_steps=4)
  tx = optim.make_optimizer(optimizer="sgd", momentum=0.0, **kw)
  sched = optim.make_schedule(**kw)
  params = np.zeros(3, np.float32)
  state = tx.init(params)
  for t in range(6):
    updates, state = tx.update(np.ones(3, np.float32), state, params)
    np.testing.assert_allclose(np.asarray(updates), -float(sched(t)),
                               rtol=1e-6)


@pytest.mark.parametrize("kw,match", [
    (dict(schedule="warmup_cosine", warmup_steps=0), "warmup_steps=0"),
    (dict(schedule="warmup_cosine", warmup_steps=20), "less than total"),
    (dict(schedule="cosine", warmup_steps=3), "needs schedule='warmup_cos"),
    (dict(schedule="linear"), "schedule='linear' is not allowed"),
])
def test_bad_schedules_fail(kw, match):
  with pytest.raises(ValueError, match=match):
    optim.make_schedule(learning_rate=0.1, total_steps=20, **kw)
