"""Tests for registry.py: the table, needs, and every method's mask size."""

import re

import numpy as np
import pytest

from mrmc_jax import selection
from mrmc_jax.methods import boundary
from mrmc_jax.methods import common
from mrmc_jax.methods import options
from mrmc_jax.methods import registry


def synthetic_artefacts(n=120, r=6, c=3, d=5, seed=0):
  """Random warm-up artefacts (eval loss = half the training loss), labels."""
  rng = np.random.default_rng(seed)
  loss = np.sort(rng.gamma(2.0, 1.0, (n, r)), axis=1)[:, ::-1].copy()
  art = {"loss": loss.astype(np.float32),
         "correct": rng.random((n, r)) < 0.7,
         "p_true": rng.random((n, r)).astype(np.float32),
         "el2n": rng.random((n, r)).astype(np.float32),
         "visits": np.ones((n, r), np.int32),
         "features": rng.normal(size=(n, d)).astype(np.float32),
         "grad_norms": rng.random(n).astype(np.float32),
         "margin": rng.normal(size=(n, r)).astype(np.float32),
         "p_margin": rng.uniform(-1, 1, (n, r)).astype(np.float32),
         "uncertainty": rng.random((n, 4)).astype(np.float32),
         "boundary": rng.integers(0, 11, n).astype(np.float32),
         "boundary_settings": boundary.settings()}
  art.update({f"eval_{k}": v * 0.5 if k == "loss" else v
              for k, v in list(art.items()) if k in (
                  "loss", "correct", "p_true", "el2n", "visits", "margin",
                  "p_margin")})
  return art, rng.integers(0, c, n)


def test_registry_lists_methods_and_needs():
  builtin = ("mrmc", "mrmc_r", "mrmc_ra", "full", "random", "el2n", "grand",
             "forgetting", "ccs", "moderate", "dyn_unc", "d2", "dual")
  # The built-in rows first; a method another test registered (a plug-in
  # of tests/plugins) comes after them.
  assert registry.method_names()[:len(builtin)] == builtin
  assert registry.get_method("random").needs == frozenset()
  assert registry.get_method("grand").needs == {"grad_norms"}
  assert registry.get_method("moderate").needs == {"features"}
  assert registry.get_method("d2").needs == {"features", "trajectory"}
  with pytest.raises(ValueError, match=r"method='glister' is not allowed"):
    registry.get_method("glister")


def test_rows_are_well_formed():
  fields = set(options.field_names())
  assert len(set(registry.method_names())) == len(registry.METHODS)
  for m in registry.METHODS:
    assert m.needs <= common.ARTEFACTS, m.name
    assert set(m.options) <= fields, (m.name, set(m.options) - fields)
    assert len(set(m.options)) == len(m.options), m.name
    assert callable(m.select) and m.summary, m.name


def test_option_defaults_equal_the_base_config():
  # The config's selection fields are made from the declarations. `configs`
  # is the runner's (not in the wheel): imported here, so the tests that
  # use `synthetic_artefacts` run where only the library is installed.
  from mrmc_jax.configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_base_config().selection
  defaults = options.SelectionOptions()
  # The built-in methods' options (a plug-in's become fields of the configs
  # that load it only).
  builtin = registry.option_readers(builtin_only=True)
  for name, o in options.declared().items():
    if name not in builtin and o.in_config:
      continue
    if not o.in_config:
      # `seed` is the run's (config.seed); `epochs` is set only in a spec.
      assert name not in config, name
      continue
    want = config
    for part in o.field.split("."):  # `d2.k`: config.d2.k.
      want = want[part]
    got = getattr(defaults, name)
    assert got == want and type(got) is type(want), (name, got, want)


def test_every_option_is_read_by_a_method():
  read = {o for m in registry.METHODS for o in m.options}
  assert set(options.field_names()) == read


def test_check_method_and_resolve_reject_unknown_names():
  registry.check_method("mrmc(skip_epochs=2)")
  with pytest.raises(ValueError, match="'nope' is not allowed"):
    registry.check_method("nope")
  with pytest.raises(ValueError, match="'nope' is not allowed"):
    registry.resolve("nope(rho=0.5)", options.SelectionOptions())
  with pytest.raises(ValueError,
                     match="skip_epochs='abc' is not allowed in method spec"):
    registry.check_method("mrmc(skip_epochs=abc)")


def test_needs():
  assert registry.needs(["full", "random"]) == frozenset()
  assert registry.needs(["mrmc"]) == {"trajectory"}
  assert registry.needs(["mrmc(loss_source=eval)"]) == {
      "trajectory", "eval_trajectory"}
  assert registry.needs(["grand", "moderate", "d2(cut=p_true)"]) == {
      "grad_norms", "features", "trajectory"}
  # D2's default cut reads the accumulated margin.
  assert "margin" in registry.needs(["d2"])
  # The evaluation pass is added for any trajectory method, and only those.
  assert registry.needs(["ccs(loss_source=eval;difficulty=forgetting;"
                         "drop=score)"]) == {
                             "trajectory", "eval_trajectory"}
  # CCS's default key and drop key are the accumulated margin.
  assert registry.needs(["ccs"]) == {"trajectory", "margin"}
  assert registry.needs(["grand"]) == {"grad_norms"}
  # An override the method does not read is refused, not ignored.
  with pytest.raises(ValueError, match="grand does not read it"):
    registry.needs(["grand(loss_source=eval)"])


# The methods whose reference selects over all N (their default).
_GLOBAL = ("ccs", "dual", "el2n", "grand", "forgetting", "dyn_unc",
           "moderate", "tdds", "aum")


@pytest.mark.parametrize("spec", [
    "random", "el2n", "grand", "forgetting", "ccs", "moderate", "dyn_unc",
    "d2", "mrmc", "mrmc_r", "mrmc(loss_source=eval)",
    "mrmc(epochs=3;skip_epochs=1)", "el2n(last_epochs=2)",
    "mrmc(class_balanced=False)", "dual", "mrmc_ra",
    "mrmc_ra(form=uniform)", "mrmc_ra(form=top;cut=0.5)",
    "moderate(per_class=True)", "d2(class_balanced=False)",
    "aum", "aum(loss_source=eval;margin=prob)", "least_confidence",
    "margin", "entropy(class_balanced=False)", "kcenter", "herding",
    "herding(class_balanced=False)", "ccs(difficulty=aum)",
    "d2(difficulty=aum_prob)", "ccs(per_class=True)",
    "ccs(drop=score;difficulty=forgetting)",
    "dual(per_class=True)", "el2n(per_class=True)",
    "dyn_unc(per_class=True)",
    "d2(split=proportional;cut=p_true)"])
def test_every_method_selects_the_budget(spec):
  art, labels = synthetic_artefacts()
  opts = options.SelectionOptions(proxy_epochs=2, dyn_unc_window=3)
  for ratio in (0.1, 0.5):
    scores, mask = registry.select(spec, art, labels, ratio, num_classes=3,
                                   opts=opts)
    assert mask.sum() == selection.budget(ratio, labels.size)
    assert scores.shape == labels.shape and np.all(np.isfinite(scores))
    name = options.parse_spec(spec)[0]
    per_class = ("class_balanced=True" in spec or (
        "class_balanced=False" not in spec and name not in _GLOBAL))
    # D2 splits the budget equally over the classes its cut left.
    per_class &= name != "d2" or "d2_split=proportional" in spec
    if per_class:
      np.testing.assert_array_equal(
          np.bincount(labels[mask], minlength=3),
          selection.class_quotas(labels, 3, ratio))


@pytest.mark.parametrize("name", registry.method_names())
def test_every_registered_method_returns_the_budget(name):
  art, labels = synthetic_artefacts(n=90, r=4)
  opts = options.SelectionOptions(proxy_epochs=1)
  n = labels.size
  for ratio in (0.2, 0.7):
    scores, mask = registry.select(name, art, labels, ratio, num_classes=3,
                                   opts=opts)
    assert scores.dtype == np.float32 and scores.shape == (n,)
    assert mask.dtype == bool and mask.shape == (n,)
    # `full` keeps everything whatever the ratio (the runner passes 1).
    want = n if name == "full" else selection.budget(ratio, n)
    assert int(mask.sum()) == want


def test_select_reuses_the_cache():
  art, labels = synthetic_artefacts()
  cache = {}
  opts = options.SelectionOptions()
  first = registry.select("d2", art, labels, 0.3, num_classes=3, opts=opts,
                          cache=cache)
  assert len(cache) == 1 and list(cache)[0][:3] == ("d2_graph", 5, True)
  again = registry.select("d2", art, labels, 0.3, num_classes=3, opts=opts,
                          cache=cache)
  np.testing.assert_array_equal(first[1], again[1])
  assert len(cache) == 1


def test_register_a_method_from_outside():
  def select_fn(art, labels, ratio, *, num_classes, opts, cache):
    del art, cache
    return common.select_top(-labels.astype(float) * opts.reg_test_knob,
                             labels, ratio, num_classes=num_classes,
                             class_balanced=opts.class_balanced, seed=None)

  options.declare(options.Option("reg_test_knob", float, 1.0, "a knob",
                                 low=0.0))
  row = common.Method("reg_test", frozenset(), ("class_balanced",
                                                "reg_test_knob"),
                      select_fn, "a test method")
  assert registry.register(row) is row
  assert registry.register(row) is row  # Loading a file twice is fine.
  assert "reg_test" in registry.method_names()
  labels = np.arange(10) % 2
  _, mask = registry.select("reg_test(reg_test_knob=2.0)", {}, labels, 0.5,
                            num_classes=2, opts=options.SelectionOptions())
  assert mask.sum() == 5
  with pytest.raises(ValueError, match="reg_test_knob=-1 is not allowed"):
    registry.check_method("reg_test(reg_test_knob=-1)")
  with pytest.raises(ValueError, match="already registered"):
    registry.register(common.Method("reg_test", frozenset(), (), select_fn,
                                    "other"))
  with pytest.raises(ValueError, match="undeclared options"):
    registry.register(common.Method("reg_bad", frozenset(), ("nope",),
                                    select_fn, "x"))
  with pytest.raises(ValueError, match="does not record"):
    registry.register(common.Method("reg_bad", frozenset({"logits"}), (),
                                    select_fn, "x"))


def test_a_ratio_that_selects_nothing_is_refused_for_every_method():
  art, labels = synthetic_artefacts(n=90, r=4)
  with pytest.raises(ValueError, match=r"ratio=0.01 selects floor\(0.01 \* "
                     r"N\) = 0 of N=90 examples"):
    registry.select("random", art, labels, 0.01, num_classes=3,
                    opts=options.SelectionOptions())
def _contract_breaker(name, returns):
  """Registers a method whose select returns `returns(labels)`."""
  def select_fn(art, labels, ratio, *, num_classes, opts, cache):
    del art, ratio, num_classes, opts, cache
    return returns(labels)

  return registry.register(common.Method(name, frozenset(), (), select_fn,
                                         "breaks the contract"))


@pytest.mark.parametrize("name,returns,match", [
    ("broken_length", lambda y: (np.zeros(y.size - 1), np.ones(y.size - 1,
                                                                bool)),
     r"scores has shape \(9,\), not \(10,\)"),
    ("broken_empty", lambda y: (np.zeros(y.size), np.zeros(y.size, bool)),
     "selected 0 of 10 examples, not 5"),
    ("broken_count", lambda y: (np.zeros(y.size), np.arange(y.size) < 7),
     "selected 7 of 10 examples, not 5"),
    ("broken_int_mask", lambda y: (np.zeros(y.size),
                                   (np.arange(y.size) < 5).astype(int)),
     "the mask has dtype int64, not bool"),
    ("broken_nan", lambda y: (np.full(y.size, np.nan), np.arange(y.size) < 5),
     "10 scores are NaN"),
    ("broken_tuple", lambda y: np.ones(y.size, bool),
     "it returned ndarray, not"),
])
def test_select_checks_every_method_output_at_the_boundary(name, returns,
                                                           match):
  _contract_breaker(name, returns)
  labels = np.arange(10) % 2
  with pytest.raises(ValueError, match=f"method {name!r} broke the "
                     "selection contract") as e:
    registry.select(name, {}, labels, 0.5, num_classes=2,
                    opts=options.SelectionOptions())
  assert re.search(match, str(e.value)), str(e.value)
  assert "\n" not in str(e.value)


def test_a_plugin_module_that_raises_on_import_is_one_line(tmp_path,
                                                          monkeypatch):
  (tmp_path / "raising_plugin_mod.py").write_text(
      "raise RuntimeError('boom at import')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(ValueError, match="'raising_plugin_mod' failed to load: "
                     "RuntimeError: boom at import"):
    registry.load_plugins(["raising_plugin_mod"])
  path = tmp_path / "raising_plugin_file.py"
  path.write_text("raise RuntimeError('boom')\n")
  with pytest.raises(ValueError, match="failed to load: RuntimeError: boom"):
    registry.load_plugins([str(path)])


ROW_SPECS = ("mrmc", "mrmc(fit_filter=0.75)",
             "mrmc(aum_filter=-0.5;skip_epochs=1)",
             "mrmc(score=observed;epochs=4;class_balanced=False)",
             "mrmc(loss_source=eval)", "el2n", "el2n(per_class=True)",
             "forgetting", "dyn_unc(window=3)", "aum",
             "aum(margin=prob;per_class=True)")


def test_the_row_specs_cover_every_method_with_row_keys():
  assert {registry.resolve(s, options.SelectionOptions())[0]
          for s in ROW_SPECS} == {
              m.name for m in registry.METHODS if m.row_keys is not None}


@pytest.mark.parametrize("spec", ROW_SPECS)
def test_row_keys_of_any_rows_are_those_of_all_rows(spec):
  # What lets the runner score each host's rows apart: the keys of a subset
  # of the rows are bit for bit those rows' keys among all rows, and the
  # method's selection is the top keys under its quotas.
  art, labels = synthetic_artefacts(n=301)
  name, opts = registry.resolve(spec, options.SelectionOptions())
  row_keys = registry.get_method(name).row_keys
  scores, keys, balanced = row_keys(art, opts, 3)
  rows = {k: v for k, v in art.items() if np.ndim(v) and len(v) == 301}
  rng = np.random.default_rng(1)
  for part in np.array_split(np.sort(rng.permutation(301)[:150]), 3):
    s, k, b = row_keys({n: v[part] for n, v in rows.items()}, opts, 3)
    assert s.dtype == k.dtype == np.float32 and b == balanced
    assert s.tobytes() == scores[part].tobytes()
    assert k.tobytes() == keys[part].tobytes()
  got, mask = registry.select(spec, art, labels, 0.3, num_classes=3,
                              opts=options.SelectionOptions())
  assert got.tobytes() == np.asarray(scores, np.float32).tobytes()
  want = selection.select_mask_host(keys, labels, 0.3, num_classes=3,
                                    class_balanced=balanced,
                                    tie_seed=opts.seed)
  np.testing.assert_array_equal(np.asarray(want), mask)
