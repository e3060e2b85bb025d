"""Tests for options.py: spec parsing and option checks."""

import pytest

from mrmc_jax.methods import options


def test_parse_spec():
  assert options.parse_spec("mrmc") == ("mrmc", {})
  assert options.parse_spec("mrmc(loss_source=eval;skip_epochs=2)") == (
      "mrmc", {"loss_source": "eval", "skip_epochs": 2})
  # Scoped arguments come back under their keys (`Option.key`).
  assert options.parse_spec(" d2( k = 5 ; class_balanced=False ) ") == (
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
    ("ccs(difficulty=auc)", r"^difficulty='auc' .* use one of forgetting"),
    ("d2(difficulty=None)", r"^difficulty=None .* use one of forgetting"),
    # Ranges, from the declarations (issue: refused only after the warm-up).
    ("mrmc(max_initial_ratio=1e400)", r"^max_initial_ratio=inf .* > 1\.$"),
    ("mrmc(max_initial_ratio=-1)", r"^max_initial_ratio=-1 .* > 1\.$"),
    ("mrmc(epoch_offset=-3)", r"^epoch_offset=-3 .* an int >= 0\.$"),
    ("mrmc_r(rho=-1)", r"^rho=-1 .* in \(0, 1\]\.$"),
    ("ccs(strata=0)", r"^strata=0 .* an int >= 1\.$"),
    ("d2(k=0)", r"^k=0 .* an int >= 1\.$"),
    ("dyn_unc(window=0)", r"^window=0 .* an int >= 2\.$"),
    ("el2n(last_epochs=0)", r"^last_epochs=0 .* an int >= 1 or None\.$"),
])
def test_bad_values_give_one_line_errors(spec, match):
  with pytest.raises(ValueError, match=match) as err:
    options.resolve(spec, options.SelectionOptions())
  assert "\n" not in str(err.value)


def test_bad_defaults_are_checked_too():
  bad = options.SelectionOptions(proxy_epochs="10")
  with pytest.raises(ValueError,
                     match=r"^mrmc_r.proxy_epochs='10' is not allowed"):
    options.resolve("mrmc", bad)
  with pytest.raises(ValueError, match="d2.difficulty='x' is not allowed"):
    options.check_options(options.SelectionOptions(d2_score="x"))
  # The runner names config fields (selection.*); seed is the run's own.
  with pytest.raises(ValueError, match=r"^selection.d2.k=0 is not allowed"):
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
  with pytest.raises(ValueError, match="paper 0 is not allowed"):
    options.declare(options.Option("fresh_knob", int, 1, "x", low=1,
                                   paper=0))


def test_scoped_options_are_named_by_scope_and_keep_their_flat_key():
  k = options.declared()["d2_k"]
  assert (k.scope, k.name, k.field, k.key) == ("d2", "k", "d2.k", "d2_k")
  opts = options.SelectionOptions(d2_k=3)
  assert opts.d2.k == 3 and opts.d2_k == 3
  with pytest.raises(AttributeError, match="no selection option 'nosuch'"):
    opts.d2.nosuch  # pylint: disable=pointless-statement
  # The same name in two scopes is two options.
  assert options.resolve("mrmc_r(gamma=1.5)", opts)[1].gamma == 1.5
  assert options.resolve("d2(gamma=0.5)", opts)[1].d2_gamma == 0.5


def test_unknown_spec_argument_names_the_allowed_ones():
  with pytest.raises(ValueError) as err:
    options.parse_spec("d2(kk=5)")
  msg = str(err.value)
  assert msg.startswith("option 'kk=5' in method spec 'd2(kk=5)' is not "
                        "allowed: use key=value with a key from k, gamma,")
  assert "mis_per_class" in msg and "skip_epochs" in msg
  assert "ccs" not in msg and "window" not in msg and "\n" not in msg
  # Another method's scoped name is not one of this method's.
  with pytest.raises(ValueError, match="option 'strata=2' in method spec"):
    options.parse_spec("d2(strata=2)")


def test_flat_spec_arguments_still_work_with_a_deprecation_warning():
  with pytest.warns(DeprecationWarning,
                    match=r"option 'd2_k' in method spec 'd2\(d2_k=5\)' is "
                    r"deprecated: write d2\(k=\.\.\.\) .* removed in 0\.4\.0"):
    assert options.parse_spec("d2(d2_k=5)") == ("d2", {"d2_k": 5})
  # A flat name of another method's option never had an effect here; it is
  # still accepted for now, with the warning.
  with pytest.warns(DeprecationWarning, match="does not read it"):
    assert options.parse_spec("random(ccs_beta=0.2)") == (
        "random", {"ccs_beta": 0.2})


def test_a_scoped_name_may_not_shadow_a_shared_one():
  # `el2n(epochs=3)` must keep meaning the trajectory's `epochs`.
  with pytest.raises(ValueError, match="named like option 'epochs'"):
    options.declare(options.Option("epochs", int, 1, "x"), scope="toy_a")
  with pytest.raises(ValueError, match="has the name of option 'd2_k'"):
    options.declare(options.Option("k", int, 1, "x"), scope="d2")
  assert "toy_a.epochs" not in options.declared()
