"""Selection options: declared once, by the method module that reads them.

Each method module declares its knobs with `declare(Option(...), ...)`:
name, type, default, allowed values or range, and a one-line doc. From
those declarations come the defaults of `SelectionOptions`, every type and
range check (`check_options`), the config's `selection.*` fields and their
cache identity (`mrmc_jax.runner.fields`), and the README's option table
(`table_rows`; a test keeps the README equal to it).

A method spec is a name with optional option overrides, e.g. `mrmc`,
`mrmc(loss_source=eval)` or `mrmc(skip_epochs=2;score=observed)`. Values
are Python literals (`2`, `0.5`, `False`, `None`); anything else is a string.
`resolve` applies the overrides to the defaults and checks every value with
one-line ValueErrors. Ranges that depend on the warm-up length (e.g.
`skip_epochs` against R) are checked by the runner's config check.
"""

import ast
import dataclasses
import math
import numbers
import re
from typing import Any, Optional

from mrmc_jax import validation

MAX_SEED = validation.MAX_SEED


class _NotSet:
  """The type of `NOT_SET`: no `absent` value declared."""

  def __repr__(self):
    return "NOT_SET"


NOT_SET = _NotSet()


def is_absent(absent: Any, value: Any) -> bool:
  """Whether `value` is the declared `absent` value.

  Numbers compare by value (a spec's `fit_filter=0` is the float 0.0);
  anything else must have the same type (`False` is not `0`).
  """
  if absent is NOT_SET:
    return False
  number = (int, float)
  if (isinstance(absent, number) and isinstance(value, number) and
      not isinstance(absent, bool) and not isinstance(value, bool)):
    return value == absent
  return type(value) is type(absent) and value == absent


@dataclasses.dataclass(frozen=True)
class Option:
  """One selection knob, as its method module declares it.

  Attributes:
    name: the field name (`selection.<name>` in configs, `name=` in specs).
    type: bool, int, float or str.
    default: the default value (None only with `optional`).
    doc: one line.
    choices: for str options, the allowed values (empty: any string).
    low, high: the allowed range of a number (None: unbounded).
    low_open, high_open: whether `low` / `high` is excluded.
    optional: None is allowed (it means "all", "none" or "off", per doc).
    in_config: whether the config has a `selection.<name>` field (False for
      `seed`, the run's seed, and `epochs`, set only in a spec).
    absent: for an option added after a release, the value that selects
      what the release without it selected (its "off" value); at that value
      it is left out of the identities and stamps (`runner.fields`).
      `NOT_SET`: always part of them.
  """
  name: str
  type: type
  default: Any
  doc: str
  choices: tuple[str, ...] = ()
  low: Optional[float] = None
  high: Optional[float] = None
  low_open: bool = False
  high_open: bool = False
  optional: bool = False
  in_config: bool = True
  absent: Any = NOT_SET

  def omitted(self, value: Any) -> bool:
    """Whether `value` is left out of identities and stamps (`absent`)."""
    return is_absent(self.absent, value)

  def allowed(self) -> str:
    """The allowed values in words, e.g. "an int >= 1" or "one of a, b"."""
    if self.type is bool:
      what = "True or False"
    elif self.choices:
      what = "one of " + ", ".join(self.choices)
    else:
      what = {int: "an int", float: "a finite number",
              str: "a string"}[self.type]
      lo, hi = (x if isinstance(x, (int, type(None))) else f"{x:g}"
                for x in (self.low, self.high))
      if self.low is not None and self.high is not None:
        what += (" in " + ("(" if self.low_open else "[") + f"{lo}, {hi}" +
                 (")" if self.high_open else "]"))
      elif self.low is not None:
        what += f" {'>' if self.low_open else '>='} {lo}"
      elif self.high is not None:
        what += f" {'<' if self.high_open else '<='} {hi}"
    return what + (" or None" if self.optional else "")

  def problem(self, value: Any) -> Optional[str]:
    """What is wrong with `value` (e.g. "it must be an int >= 1"), or None."""
    if value is None and self.optional:
      return None
    is_bool = isinstance(value, bool)
    if self.type is bool:
      ok = is_bool
    elif self.type is int:
      ok = isinstance(value, numbers.Integral) and not is_bool
    elif self.type is float:
      ok = (isinstance(value, numbers.Real) and not is_bool and
            math.isfinite(value))
    else:
      ok = isinstance(value, str)
    if self.choices:
      return None if ok and value in self.choices else (
          "use one of " + ", ".join(self.choices))
    if ok and self.low is not None:
      ok = value > self.low if self.low_open else value >= self.low
    if ok and self.high is not None:
      ok = value < self.high if self.high_open else value <= self.high
    return None if ok else "it must be " + self.allowed()


# name -> Option, in declaration order (the methods package imports every
# method module, so the table is complete once `mrmc_jax.methods` is).
_DECLARED: dict[str, Option] = {}


def declare(*opts: Option) -> tuple[Option, ...]:
  """Adds options to the table; returns them (for the module's `OPTIONS`).

  Raises:
    ValueError: an option already declared differently, or a bad default.
  """
  for o in opts:
    if o.type not in (bool, int, float, str):
      raise ValueError(f"option {o.name!r}: type={o.type!r} is not allowed: "
                       "use bool, int, float or str.")
    old = _DECLARED.get(o.name)
    if old is not None and old != o:
      raise ValueError(f"option {o.name!r} is already declared (as {old}); "
                       "declare each option once, in the module that reads "
                       "it, or give the new one another name.")
    bad = o.problem(o.default)
    if bad is not None:
      raise ValueError(f"option {o.name!r}: default {o.default!r} is not "
                       f"allowed: {bad}.")
    _DECLARED[o.name] = o
  return opts


def declared() -> dict[str, Option]:
  """Every declared option, name -> Option, in declaration order."""
  return dict(_DECLARED)


def field_names() -> tuple[str, ...]:
  """The declared option names, in declaration order."""
  return tuple(_DECLARED)


class SelectionOptions:
  """Every declared knob's value: the declared defaults, then the given ones.

  Immutable; `replace(**kw)` returns a copy with some values changed, and
  `asdict()` every value. Values are not checked here (`check_options`).
  """

  __slots__ = ("_values",)

  def __init__(self, **values: Any):
    unknown = sorted(set(values) - set(_DECLARED))
    if unknown:
      raise TypeError(f"SelectionOptions got an unknown option "
                      f"{unknown[0]!r}; declared: {', '.join(_DECLARED)}.")
    merged = {k: o.default for k, o in _DECLARED.items()}
    merged.update(values)
    object.__setattr__(self, "_values", merged)

  def __getattr__(self, name: str) -> Any:
    try:
      return object.__getattribute__(self, "_values")[name]
    except KeyError:
      raise AttributeError(f"no selection option {name!r}") from None

  def __setattr__(self, name, value):
    raise AttributeError("SelectionOptions is immutable: use replace()")

  def replace(self, **values: Any) -> "SelectionOptions":
    return SelectionOptions(**{**self._values, **values})

  def asdict(self) -> dict[str, Any]:
    return dict(self._values)

  def __eq__(self, other):
    return (isinstance(other, SelectionOptions) and
            self._values == other._values)

  def __hash__(self):
    return hash(tuple(sorted(self._values.items())))

  def __repr__(self):
    inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
    return f"SelectionOptions({inner})"


# The spec grammar: name [ "(" [key=value {";" key=value}] ")" ], the name an
# identifier, values without parentheses or ";".
_SPEC = re.compile(r"\s*(?P<name>[A-Za-z_]\w*)\s*"
                   r"(?:\((?P<body>[^()]*)\))?\s*")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """Splits `name(key=value;...)` into the name and its overrides.

  Only the syntax and the keys are checked here: the name is the
  registry's (`registry.resolve` checks it), the values `resolve`'s.

  Args:
    spec: a method spec (module docstring).

  Returns:
    `(name, overrides)`: the method name and a dict of field -> value.

  Raises:
    ValueError: on bad syntax or a key that is not a declared option.
  """
  m = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
  if m is None:
    raise ValueError(f"method spec {spec!r} is not allowed: use name or "
                     "name(key=value;key=value), name a Python identifier.")
  name, body = m.group("name"), m.group("body")
  overrides = {}
  if body is not None:
    fields = set(field_names())
    for item in filter(None, (x.strip() for x in body.split(";"))):
      key, eq, value = (x.strip() for x in item.partition("="))
      if not eq or key not in fields or not value:
        raise ValueError(f"option {item!r} in method spec {spec!r} is not "
                         f"allowed: use key=value with a key from "
                         f"{', '.join(sorted(fields))}.")
      try:
        overrides[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        overrides[key] = value
  return name, overrides


def check_options(opts: SelectionOptions, spec: str = "",
                  overridden: frozenset[str] = frozenset(),
                  prefix: str = "") -> None:
  """Checks every value against its declaration (type, choices, range).

  Args:
    opts: the options.
    spec: the method spec the options came from, named in the error.
    overridden: the fields the spec set.
    prefix: prepended to the names of the other fields in errors (the
      runner passes "selection." so that messages name config fields).

  Raises:
    ValueError: (one line) on the first bad value.
  """
  for key, o in _DECLARED.items():
    value = getattr(opts, key)
    bad = o.problem(value)
    if bad is None:
      continue
    if key in overridden:
      raise ValueError(f"{key}={value!r} is not allowed in method spec "
                       f"{spec!r}: {bad}.")
    name = prefix + key if o.in_config else key
    raise ValueError(f"{name}={value!r} is not allowed: {bad}.")


def resolve(spec: str, opts: SelectionOptions, prefix: str = ""
            ) -> tuple[str, SelectionOptions]:
  """The method name and its options (defaults, then the spec's overrides).

  Args:
    spec: a method spec (module docstring).
    opts: the defaults (e.g. from the config).
    prefix: see `check_options`.

  Returns:
    `(name, options)` with the overrides applied and checked. The name is
    not checked against the registry (`registry.resolve` does that).

  Raises:
    ValueError: (one line) on a bad spec or option value.
  """
  name, overrides = parse_spec(spec)
  opts = opts.replace(**overrides)
  check_options(opts, spec, frozenset(overrides), prefix)
  return name, opts


def table_rows(readers: dict[str, list[str]]) -> list[str]:
  """The README's option table (markdown rows), from the declarations.

  Args:
    readers: option name -> the methods that read it
      (`registry.option_readers()`); only these options are listed.
  """
  rows = ["| option | default | allowed | read by | what |",
          "|---|---|---|---|---|"]
  for o in _DECLARED.values():
    if o.name not in readers:
      continue
    rows.append(f"| `{o.name}` | `{o.default!r}` | {o.allowed()} | "
                f"{', '.join(readers.get(o.name, [])) or '—'} | {o.doc} |")
  return rows


# Read by every method that keeps the highest scores (`common.select_top`).
COMMON = declare(
    Option("class_balanced", bool, True,
           "per-class quotas (True) or one global top-k"),
    Option("seed", int, 0, "the run's seed (config `seed`): tie-breaks, "
           "random draws", low=0, high=MAX_SEED, in_config=False),
)
