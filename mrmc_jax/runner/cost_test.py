"""Tests for mrmc_jax.runner.cost."""

from mrmc_jax.runner import cost


def row(**kw):
  base = dict(warmup_epochs=5, warmup_seconds=40.0, selection_seconds=1.0,
              train_seconds=16.0, train_steps=30, full_steps_per_epoch=10)
  return {**base, **kw}


def test_cell_cost_counts_the_warmup_only_for_methods_that_read_it():
  c = cost.cell_cost(row())
  assert c["cost_epochs"] == 5 + 3 and c["cost_seconds"] == 57.0
  assert c["oneoff_seconds"] == 41.0 and c["train_epochs_equivalent"] == 3
  r = cost.cell_cost(row(warmup_epochs=0))
  assert r["cost_epochs"] == 3 and r["cost_seconds"] == 17.0


def test_reuses_to_pay_off():
  # 41 s once, 16 s per core-set training against 102 s on all data.
  assert cost.reuses_to_pay_off(41.0, 16.0, 102.0) == 1
  assert cost.reuses_to_pay_off(100.0, 16.0, 41.0) == 4  # 100/25 = 4
  assert cost.reuses_to_pay_off(101.0, 16.0, 41.0) == 5
  assert cost.reuses_to_pay_off(0.0, 16.0, 41.0) == 1
  assert cost.reuses_to_pay_off(5.0, 15.0, 15.0) is None
