"""sharded_select equals select_mask on 8 simulated devices, ties included."""

import jax
import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax import sharded_selection
from mrmc_jax import sharding


def _mesh(devices=8):
  return sharding.make_mesh(jax.devices()[:devices])


def _place(x, mesh):
  return jax.device_put(x, sharding.rows_sharding(mesh))


def _rows(n, mesh, rng, num_classes, levels=4):
  """Heavy ties: integer scores in [0, levels), a few -0.0 and -inf;
  labels padded with -1 up to a multiple of the devices."""
  rows = sharding.padded_rows(n, mesh)
  scores = rng.integers(0, levels, n).astype(np.float32)
  scores[rng.random(n) < 0.05] = -0.0
  scores[rng.random(n) < 0.02] = -np.inf
  labels = rng.integers(0, num_classes, n).astype(np.int32)
  s = np.zeros(rows, np.float32)
  y = np.full(rows, -1, np.int32)
  s[:n], y[:n] = scores, labels
  return scores, labels, _place(s, mesh), _place(y, mesh)


# Class 3 keeps all its rows, -inf ones too (select_mask warns of those).
@pytest.mark.filterwarnings("ignore:select_mask. 5 selected rows")
@pytest.mark.parametrize("tie_seed", [None, 0, 7])
def test_equals_select_mask_with_heavy_ties(tie_seed):
  n, c = 1003, 7
  mesh = _mesh()
  scores, labels, s, y = _rows(n, mesh, np.random.default_rng(1), c)
  quotas = selection.class_quotas(labels, c, 0.3)
  quotas[2] = 0  # a class that keeps nothing
  quotas[3] = np.sum(labels == 3)  # and one that keeps all
  got = sharded_selection.sharded_select(s, y, quotas, num_classes=c,
                                         mesh=mesh, tie_seed=tie_seed)
  assert got.sharding == sharding.rows_sharding(mesh)
  want = selection.select_mask(scores, labels, quotas=quotas, num_classes=c,
                               tie_seed=tie_seed)
  mask = sharded_selection.gather_mask(got, n, mesh=mesh)
  np.testing.assert_array_equal(mask, np.asarray(want))
  np.testing.assert_array_equal(np.bincount(labels[mask], minlength=c),
                                quotas)


def test_ratio_equals_select_mask_host_on_any_device_count():
  n, c = 999, 5
  rng = np.random.default_rng(2)
  scores = rng.normal(size=n).astype(np.float32)
  scores[::3] = 1.0  # a third of the rows tie
  labels = rng.integers(0, c, n).astype(np.int32)
  want = np.asarray(selection.select_mask_host(scores, labels, 0.29,
                                               num_classes=c, tie_seed=3))
  for d in (1, 2, 8):
    mesh = _mesh(d)
    rows = sharding.padded_rows(n, mesh)
    s = _place(np.pad(scores, (0, rows - n)), mesh)
    y = _place(np.pad(labels, (0, rows - n), constant_values=-1), mesh)
    got = sharded_selection.sharded_select_ratio(
        s, y, 0.29, num_classes=c, mesh=mesh, tie_seed=3)
    np.testing.assert_array_equal(
        sharded_selection.gather_mask(got, n, mesh=mesh), want)


def test_explicit_ids_order_the_ties():
  # Rows in reverse id order: the ties follow the ids, not the rows.
  n, c = 64, 2
  mesh = _mesh()
  scores = np.zeros(n, np.float32)
  labels = np.arange(n, dtype=np.int32) % c
  ids = np.arange(n, dtype=np.int32)[::-1].copy()
  got = sharded_selection.sharded_select(
      _place(scores, mesh), _place(labels, mesh), np.array([3, 3]),
      num_classes=c, mesh=mesh, ids=_place(ids, mesh))
  kept_ids = np.sort(ids[np.asarray(got)])
  np.testing.assert_array_equal(kept_ids, [0, 1, 2, 3, 4, 5])


def test_no_row_is_gathered():
  # Only [C]-sized collectives: no all-gather, and no all-reduce of rows.
  n, c = 4096, 3
  mesh = _mesh()
  _, _, s, y = _rows(n, mesh, np.random.default_rng(0), c)
  ids = _place(np.arange(n, dtype=np.int32), mesh)
  q = sharding.replicate(np.array([10, 10, 10], np.int32), mesh)
  hlo = sharded_selection._select.lower(  # pylint: disable=protected-access
      s, y, ids, q, None, num_classes=c, mesh=mesh,
      axis=sharding.DATA_AXIS).compile().as_text()
  assert "all-gather" not in hlo
  shapes = [l for l in hlo.splitlines() if "all-reduce(" in l]
  assert shapes and all(f"[{n}]" not in l and f"[{n // 8}]" not in l
                        for l in shapes), shapes


def test_class_counts_and_refusals():
  mesh = _mesh()
  y = _place(np.array([0, 1, 1, -1, 2, 2, 2, -1], np.int32), mesh)
  s = _place(np.zeros(8, np.float32), mesh)
  np.testing.assert_array_equal(
      sharded_selection.class_counts(y, num_classes=3, mesh=mesh), [1, 2, 3])
  with pytest.raises(ValueError, match=r"quotas\[1\] = 3 is not allowed"):
    sharded_selection.sharded_select(s, y, np.array([1, 3, 0]),
                                     num_classes=3, mesh=mesh)
  with pytest.raises(ValueError, match="expected int \\[3\\]"):
    sharded_selection.sharded_select(s, y, np.array([1, 1]), num_classes=3,
                                     mesh=mesh)
  bad = _place(np.array([0, 1, 1, -1, 2, 2, 5, -1], np.int32), mesh)
  with pytest.raises(ValueError, match="1 values outside \\[-1, 3\\)"):
    sharded_selection.class_counts(bad, num_classes=3, mesh=mesh)
  with pytest.raises(ValueError, match="ratio"):
    sharded_selection.sharded_select_ratio(s, y, 0.0, num_classes=3,
                                           mesh=mesh)


def test_nan_scores_refused_except_in_padding_rows():
  mesh = _mesh()
  y = _place(np.array([0, 1, 1, -1, 0, 1, 0, -1], np.int32), mesh)
  s = np.zeros(8, np.float32)
  s[3] = np.nan  # a padding row: ignored
  got = sharded_selection.sharded_select(_place(s, mesh), y, np.array([1, 1]),
                                         num_classes=2, mesh=mesh)
  assert int(np.asarray(got).sum()) == 2
  s[5] = np.nan
  with pytest.raises(ValueError, match="1 NaN values in labelled rows"):
    sharded_selection.sharded_select(_place(s, mesh), y, np.array([1, 1]),
                                     num_classes=2, mesh=mesh)


def test_two_axis_mesh_rows_over_data_replicated_over_model():
  n, c = 301, 4
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(4, 2),
                           ("data", "model"))
  rng = np.random.default_rng(5)
  scores = rng.integers(0, 3, n).astype(np.float32)
  labels = rng.integers(0, c, n).astype(np.int32)
  rows = sharding.padded_rows(n, mesh)
  where = sharding.rows_sharding(mesh)
  s = jax.device_put(np.pad(scores, (0, rows - n)), where)
  y = jax.device_put(np.pad(labels, (0, rows - n), constant_values=-1),
                     where)
  got = sharded_selection.sharded_select_ratio(s, y, 0.5, num_classes=c,
                                               mesh=mesh, tie_seed=1)
  want = selection.select_mask_host(scores, labels, 0.5, num_classes=c,
                                    tie_seed=1)
  np.testing.assert_array_equal(
      sharded_selection.gather_mask(got, n, mesh=mesh), np.asarray(want))


def test_gather_mask_round_trip_with_odd_blocks():
  # 8 devices x 13 rows: blocks that are not whole bytes.
  mesh = _mesh()
  m = np.random.default_rng(4).random(104) < 0.5
  got = sharded_selection.gather_mask(_place(m, mesh), 100, mesh=mesh)
  np.testing.assert_array_equal(got, m[:100])


@pytest.mark.filterwarnings("ignore:select_mask. .* selected rows")
@pytest.mark.parametrize("class_balanced", [True, False])
def test_select_rows_from_the_rows_a_process_holds(class_balanced):
  # The runner's path: the keys of the rows this process holds (here all of
  # them, on 8 devices; padding rows left out, as the warm-up does), with
  # their ids from `process_rows`, laid out again and selected.
  n, c = 301, 5
  mesh = _mesh()
  rng = np.random.default_rng(3)
  scores, labels, placed, _ = _rows(n, mesh, rng, c)
  ids, held = sharding.process_rows(placed)
  assert ids.tolist() == list(range(sharding.padded_rows(n, mesh)))
  np.testing.assert_array_equal(held[:n], scores)
  real = ids < n
  got = sharded_selection.select_rows(
      held[real], ids[real], labels, 0.3, num_classes=c, mesh=mesh,
      class_balanced=class_balanced, tie_seed=4)
  want = selection.select_mask_host(scores, labels, 0.3, num_classes=c,
                                    class_balanced=class_balanced,
                                    tie_seed=4)
  np.testing.assert_array_equal(got, np.asarray(want))
  with pytest.raises(ValueError, match="rows .* lie on this process"):
    sharded_selection.select_rows(held[:n - 1], ids[:n - 1], labels, 0.3,
                                  num_classes=c, mesh=mesh)


def test_process_rows_of_a_two_axis_mesh_holds_each_row_once():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(4, 2),
                           ("data", "model"))
  x = np.arange(24, dtype=np.float32).reshape(8, 3)
  ids, rows = sharding.process_rows(
      jax.device_put(x, sharding.rows_sharding(mesh)))
  assert ids.tolist() == list(range(8))
  np.testing.assert_array_equal(rows, x)
  with pytest.raises(ValueError, match="split by rows only"):
    sharding.process_rows(jax.device_put(
        x[:, :2], jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(None, "model"))))
