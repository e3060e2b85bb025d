"""Selection options: every knob of every method, and method specs.

A method spec is a name with optional option overrides, e.g. `mrmc`,
`mrmc(loss_source=eval)` or `mrmc(skip_epochs=2;score=observed)`. Values
are Python literals (`2`, `0.5`, `False`, `None`); anything else is a string.
`resolve` applies the overrides to the defaults and checks every value's
type (against the field's annotation) and, for fields with a fixed set of
values, the value itself, with one-line ValueErrors. Ranges that depend on
the data (e.g. `skip_epochs` against R) are checked by the method.
"""

import ast
import dataclasses
import numbers
import typing
from typing import Any, Optional

from mrmc_jax import scoring

LOSS_SOURCES = ("train", "eval")
DIFFICULTY_SCORES = ("forgetting", "el2n", "mrmc")


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
  """Every knob of every method, with defaults.

  The defaults equal `configs/base.py`'s `selection` fields (a test checks
  it); `seed` is the run's seed, and `epochs` is set only in a method spec
  (the config's warm-up length is `selection.warmup_epochs`). Each
  registry row lists the fields its method reads.
  """
  class_balanced: bool = True
  loss_source: str = "train"
  epochs: Optional[int] = None       # warm-up epochs used (None: all R)
  skip_epochs: int = 0
  score: str = "literal"
  max_initial_ratio: float = scoring.DEFAULT_MAX_INITIAL_RATIO
  epoch_offset: int = 1
  rho: float = 0.3
  gamma: float = 2.0
  score_scale: str = "none"
  proxy_learning_rate: float = 0.01
  proxy_batch_size: int = 512
  proxy_epochs: int = 10
  el2n_epochs: Optional[int] = None  # last k epochs of the window (None: all)
  dyn_unc_window: int = 10
  ccs_beta: float = 0.1
  ccs_strata: int = 50
  ccs_score: str = "forgetting"
  d2_k: int = 5
  d2_gamma: float = 1.0
  d2_gamma_reverse: float = 0.1
  d2_score: str = "forgetting"
  d2_mis_ratio: float = 0.1
  d2_mis_per_class: bool = False
  dual_window: int = 10
  dual_c_d: float = 4.0
  ra_cut: float = 0.0
  ra_shape: float = 8.0
  ra_form: str = "conf"
  ra_anchor: float = 0.01
  ra_score: str = "mrmc"
  seed: int = 0


# Fields whose value must be one of a fixed set.
CHOICES = {
    "loss_source": LOSS_SOURCES,
    "score": scoring.SCORES,
    "ccs_score": DIFFICULTY_SCORES,
    "d2_score": DIFFICULTY_SCORES,
    "ra_form": ("beta", "uniform", "top", "conf", "mix"),
    "ra_score": ("mrmc", "shuffled", "shuffled_rank", "shuffled_anchor",
                 "none"),
}


def field_names() -> tuple[str, ...]:
  """The `SelectionOptions` fields, in declaration order."""
  return tuple(f.name for f in dataclasses.fields(SelectionOptions))


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """Splits `name(key=value;...)` into the name and its overrides.

  Only the syntax and the keys are checked here: the name is the
  registry's (`registry.resolve` checks it), the values `resolve`'s.

  Args:
    spec: a method spec (module docstring).

  Returns:
    `(name, overrides)`: the method name and a dict of field -> value.

  Raises:
    ValueError: on bad syntax or a key that is not a `SelectionOptions`
      field.
  """
  spec = spec.strip()
  name, _, rest = spec.partition("(")
  overrides = {}
  if rest:
    if not rest.endswith(")"):
      raise ValueError(f"method spec {spec!r} is not allowed: use "
                       "name(key=value;key=value).")
    fields = set(field_names())
    for item in filter(None, rest[:-1].split(";")):
      key, eq, value = (x.strip() for x in item.partition("="))
      if not eq or key not in fields:
        raise ValueError(f"option {item!r} in method spec {spec!r} is not "
                         f"allowed: use key=value with a key from "
                         f"{', '.join(sorted(fields))}.")
      try:
        overrides[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[key] = value
  return name, overrides


def _type_error(hint: Any, value: Any) -> Optional[str]:
  """What `value` must be under the annotation `hint`; None if it is."""
  args = typing.get_args(hint)
  optional = typing.get_origin(hint) is typing.Union and type(None) in args
  base = next(a for a in args if a is not type(None)) if optional else hint
  if optional and value is None:
    return None
  is_bool = isinstance(value, bool)
  if base is bool:
    ok, what = is_bool, "True or False"
  elif base is int:
    ok, what = isinstance(value, numbers.Integral) and not is_bool, "an int"
  elif base is float:
    ok, what = isinstance(value, numbers.Real) and not is_bool, "a number"
  elif base is str:
    ok, what = isinstance(value, str), "a string"
  else:  # pragma: no cover - every field has one of the types above
    raise AssertionError(hint)
  return None if ok else what + (" or None" if optional else "")


def check_options(opts: SelectionOptions, spec: str = "",
                  overridden: frozenset[str] = frozenset()) -> None:
  """Checks every field's type and the fields with a fixed set of values.

  Args:
    opts: the options.
    spec: the method spec the options came from, named in the error.
    overridden: the fields the spec set.

  Raises:
    ValueError: (one line) on the first bad field.
  """
  hints = typing.get_type_hints(SelectionOptions)
  for key in field_names():
    value = getattr(opts, key)
    where = f" in method spec {spec!r}" if key in overridden else ""
    what = _type_error(hints[key], value)
    if what is not None:
      raise ValueError(f"{key}={value!r} is not allowed{where}: it must be "
                       f"{what}.")
    if key in CHOICES and value not in CHOICES[key]:
      raise ValueError(f"{key}={value!r} is not allowed{where}: use one of "
                       f"{', '.join(CHOICES[key])}.")


def resolve(spec: str, opts: SelectionOptions
            ) -> tuple[str, SelectionOptions]:
  """The method name and its options (defaults, then the spec's overrides).

  Args:
    spec: a method spec (module docstring).
    opts: the defaults (e.g. from the config).

  Returns:
    `(name, options)` with the overrides applied and checked. The name is
    not checked against the registry (`registry.resolve` does that).

  Raises:
    ValueError: (one line) on a bad spec or option value.
  """
  name, overrides = parse_spec(spec)
  opts = dataclasses.replace(opts, **overrides)
  check_options(opts, spec, frozenset(overrides))
  return name, opts
