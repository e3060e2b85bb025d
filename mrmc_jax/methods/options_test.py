"""Tests for options.py: spec parsing and option checks."""

import pytest

from mrmc_jax.methods import options


def test_parse_spec():
  assert options.parse_spec("mrmc") == ("mrmc", {})
  assert options.parse_spec("mrmc(loss_source=eval;skip_epochs=2)") == (
      "mrmc", {"loss_source": "eval", "skip_epochs": 2})
  assert options.parse_spec(" d2( d2_k = 5 ; class_balanced=False ) ") == (
      "d2", {"d2_k": 5, "class_balanced": False})
  with pytest.raises(ValueError, match="option 'x=1'"):
    options.parse_spec("mrmc(x=1)")
  with pytest.raises(ValueError, match="option 'skip_epochs'"):
    options.parse_spec("mrmc(skip_epochs)")
  with pytest.raises(ValueError, match=r"method spec 'mrmc\(rho=1' is not"):
    options.parse_spec("mrmc(rho=1")
  with pytest.raises(ValueError, match="loss_source='test' is not allowed"):
    options.resolve("mrmc(loss_source=test)", options.SelectionOptions())


@pytest.mark.parametrize("spec", ["mrmc(", "mrmc)", "mrmc()x", "(rho=1)",
                                  "mrmc((rho=1))", "mr mc", "mrmc(rho=)",
                                  "9mrmc", ""])
def test_parse_spec_refuses_what_the_grammar_does_not_derive(spec):
  with pytest.raises(ValueError, match="is not allowed"):
    options.parse_spec(spec)


def test_parse_spec_empty_parentheses_and_trailing_separator():
  assert options.parse_spec("mrmc()") == ("mrmc", {})
  assert options.parse_spec("mrmc(skip_epochs=1;)") == (
      "mrmc", {"skip_epochs": 1})


def test_resolve_applies_overrides_on_the_defaults():
  base = options.SelectionOptions(rho=0.5, seed=3)
  name, opts = options.resolve("mrmc_r(gamma=1;epochs=None)", base)
  assert name == "mrmc_r"
  assert (opts.rho, opts.gamma, opts.epochs, opts.seed) == (0.5, 1, None, 3)


@pytest.mark.parametrize("spec,match", [
    ("mrmc(skip_epochs=abc)",
     r"^skip_epochs='abc' is not allowed in method spec "
     r"'mrmc\(skip_epochs=abc\)': it must be an int >= 0\.$"),
    ("mrmc(skip_epochs=1.5)", r"^skip_epochs=1.5 .* must be an int >= 0\.$"),
    ("mrmc(class_balanced=1)", r"^class_balanced=1 .* True or False\.$"),
    ("mrmc_r(rho=high)", r"^rho='high' .* a finite number in \(0, 1\]\.$"),
    ("mrmc_r(gamma=True)", r"^gamma=True .* a finite number >= 0\.$"),
    ("mrmc(epochs=3.0)", r"^epochs=3.0 .* must be an int >= 1 or None\.$"),
    ("mrmc(score=2)", r"^score=2 .* use one of literal, observed\.$"),
    ("mrmc(score=fancy)", r"^score='fancy' .* use one of literal"),
    ("ccs(ccs_score=auc)", r"^ccs_score='auc' .* use one of forgetting"),
    ("d2(d2_score=None)", r"^d2_score=None .* use one of forgetting"),
    # Ranges, from the declarations (issue: refused only after the warm-up).
    ("mrmc(max_initial_ratio=1e400)", r"^max_initial_ratio=inf .* > 1\.$"),
    ("mrmc(max_initial_ratio=-1)", r"^max_initial_ratio=-1 .* > 1\.$"),
    ("mrmc(epoch_offset=-3)", r"^epoch_offset=-3 .* an int >= 0\.$"),
    ("mrmc_r(rho=-1)", r"^rho=-1 .* in \(0, 1\]\.$"),
    ("ccs(ccs_strata=0)", r"^ccs_strata=0 .* an int >= 1\.$"),
    ("d2(d2_k=0)", r"^d2_k=0 .* an int >= 1\.$"),
    ("dyn_unc(dyn_unc_window=0)", r"^dyn_unc_window=0 .* an int >= 2\.$"),
    ("el2n(el2n_epochs=0)", r"^el2n_epochs=0 .* an int >= 1 or None\.$"),
])
def test_bad_values_give_one_line_errors(spec, match):
  with pytest.raises(ValueError, match=match) as err:
    options.resolve(spec, options.SelectionOptions())
  assert "\n" not in str(err.value)


def test_bad_defaults_are_checked_too():
  bad = options.SelectionOptions(proxy_epochs="10")
  with pytest.raises(ValueError, match=r"^proxy_epochs='10' is not allowed"):
    options.resolve("mrmc", bad)
  with pytest.raises(ValueError, match="d2_score='x' is not allowed"):
    options.check_options(options.SelectionOptions(d2_score="x"))
  # The runner names config fields (selection.*); seed is the run's own.
  with pytest.raises(ValueError, match=r"^selection.d2_k=0 is not allowed"):
    options.check_options(options.SelectionOptions(d2_k=0),
                          prefix="selection.")
  with pytest.raises(ValueError, match=r"^seed=2147483648 is not allowed"):
    options.check_options(options.SelectionOptions(seed=2**31),
                          prefix="selection.")
  options.check_options(options.SelectionOptions())


def test_options_are_immutable_values():
  a = options.SelectionOptions(rho=0.5)
  assert a.replace(rho=0.3) == options.SelectionOptions()
  assert a.asdict()["rho"] == 0.5 and a.rho == 0.5
  with pytest.raises(AttributeError):
    a.rho = 1.0
  with pytest.raises(TypeError, match="unknown option 'nosuch'"):
    options.SelectionOptions(nosuch=1)


def test_declarations_are_checked_once_and_complete():
  table = options.declared()
  for o in table.values():
    assert o.doc and o.problem(o.default) is None, o.name
  # Declaring the same option again is a no-op; differently, an error.
  options.declare(table["d2_k"])
  with pytest.raises(ValueError, match="already declared"):
    options.declare(options.Option("d2_k", int, 3, "other"))
  with pytest.raises(ValueError, match="default 0 is not allowed"):
    options.declare(options.Option("fresh_knob", int, 0, "x", low=1))
