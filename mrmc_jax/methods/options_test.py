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


def test_resolve_applies_overrides_on_the_defaults():
  base = options.SelectionOptions(rho=0.5, seed=3)
  name, opts = options.resolve("mrmc_r(gamma=1;epochs=None)", base)
  assert name == "mrmc_r"
  assert (opts.rho, opts.gamma, opts.epochs, opts.seed) == (0.5, 1, None, 3)


@pytest.mark.parametrize("spec,match", [
    ("mrmc(skip_epochs=abc)",
     r"^skip_epochs='abc' is not allowed in method spec "
     r"'mrmc\(skip_epochs=abc\)': it must be an int\.$"),
    ("mrmc(skip_epochs=1.5)", r"^skip_epochs=1.5 .* must be an int\.$"),
    ("mrmc(class_balanced=1)", r"^class_balanced=1 .* True or False\.$"),
    ("mrmc_r(rho=high)", r"^rho='high' .* must be a number\.$"),
    ("mrmc_r(gamma=True)", r"^gamma=True .* must be a number\.$"),
    ("mrmc(epochs=3.0)", r"^epochs=3.0 .* must be an int or None\.$"),
    ("mrmc(score=2)", r"^score=2 .* must be a string\.$"),
    ("mrmc(score=fancy)", r"^score='fancy' .* use one of literal"),
    ("ccs(ccs_score=aum)", r"^ccs_score='aum' .* use one of forgetting"),
    ("d2(d2_score=None)", r"^d2_score=None .* must be a string\.$"),
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
  options.check_options(options.SelectionOptions())
