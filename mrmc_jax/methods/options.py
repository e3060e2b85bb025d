"""Selection options: declared once, by the method module that reads them.

Each method module declares its knobs with `declare(Option(...), ...,
scope=<method>)`: name, type, default, allowed values or range, and a
one-line doc. From those declarations come the defaults of
`SelectionOptions`, every type and range check (`check_options`), the
config's `selection.*` fields and their cache identity
(`mrmc_jax.runner.fields`), the method row's option list (`common.Method`)
and the README's option table (`table_rows`; a test keeps the README equal
to it).

An option read by one method is scoped to it: D2's `k` is the config field
`selection.d2.k` and the spec argument `d2(k=5)`. An option read by several
methods (`class_balanced`, MRMC's fit: `skip_epochs`, `score`, ...) has no
scope: `selection.skip_epochs`, and `name(skip_epochs=2)` in any spec.
Before 0.3.0 every option was flat (`selection.d2_k`, `d2(d2_k=5)`); such
an option declares that name as `legacy`, which still works, with a
`DeprecationWarning`, until `LEGACY_REMOVAL`, and stays its `key` (the name
of its value in `SelectionOptions` and in the stage stamps, so results
computed before keep their identity).

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
import warnings

from mrmc_jax import validation

MAX_SEED = validation.MAX_SEED
# The release that drops the flat spellings of scoped options.
LEGACY_REMOVAL = "0.4.0"


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
    name: the option's name within its scope (`name=` in specs).
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
    scope: the method that reads it (its config field is
      `selection.<scope>.<name>`), or "" for an option several methods
      read (`selection.<name>`). `declare(..., scope=)` sets it.
    legacy: its flat name before 0.3.0 (e.g. "d2_k"), accepted with a
      `DeprecationWarning` until `LEGACY_REMOVAL`; "" for none.
    paper: its value in the `paper` preset (MRMC exactly as its paper
      writes it); `NOT_SET`: the default.
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
  scope: str = ""
  legacy: str = ""
  paper: Any = NOT_SET

  @property
  def field(self) -> str:
    """Its config field under `selection.`: "scope.name" or "name"."""
    return f"{self.scope}.{self.name}" if self.scope else self.name

  @property
  def key(self) -> str:
    """The name of its value in `SelectionOptions` and in stage stamps.

    The flat pre-0.3.0 name where there is one (so stamps do not change),
    else `field`.
    """
    return self.legacy or self.field

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


# key -> Option, in declaration order (the methods package imports every
# method module, so the table is complete once `mrmc_jax.methods` is).
_DECLARED: dict[str, Option] = {}


def _clash(o: Option) -> Optional[str]:
  """Why `o` cannot join the table, or None."""
  for old in _DECLARED.values():
    if old.key == o.key:
      if old != o:
        return (f"is already declared (as {old}); declare each option "
                "once, in the module that reads it, or give the new one "
                "another name")
      continue
    if old.field == o.field or o.field == old.legacy or (
        o.legacy and o.legacy in (old.field, old.legacy)):
      return f"has the name of option {old.key!r}"
    # A scoped name equal to a shared one would make `scope(name=...)` mean
    # either.
    if old.name == o.name and "" in (old.scope, o.scope):
      return (f"is named like option {old.field!r}, which every method "
              "spec may set; give it another name")
  return None


def declare(*opts: Option, scope: str = "") -> tuple[Option, ...]:
  """Adds options to the table; returns them (for the module's `OPTIONS`).

  Args:
    *opts: the options.
    scope: the method that reads them (`Option.scope`), e.g. "d2": their
      config fields are `selection.d2.<name>`, their spec arguments
      `d2(<name>=...)`. Empty: options several methods read.

  Raises:
    ValueError: an option already declared differently, a name taken by
      another option, or a bad default.
  """
  out = []
  for o in opts:
    if scope:
      o = dataclasses.replace(o, scope=scope)
    if not o.name.isidentifier() or (o.scope and
                                     not o.scope.isidentifier()):
      raise ValueError(f"option {o.field!r} is not allowed: name and scope "
                       "must be Python identifiers.")
    if o.type not in (bool, int, float, str):
      raise ValueError(f"option {o.field!r}: type={o.type!r} is not "
                       "allowed: use bool, int, float or str.")
    clash = _clash(o)
    if clash is not None:
      raise ValueError(f"option {o.field!r} {clash}.")
    for what, value in (("default", o.default), ("paper", o.paper)):
      bad = None if value is NOT_SET else o.problem(value)
      if bad is not None:
        raise ValueError(f"option {o.field!r}: {what} {value!r} is not "
                         f"allowed: {bad}.")
    _DECLARED[o.key] = o
    out.append(o)
  return tuple(out)


def declared() -> dict[str, Option]:
  """Every declared option, key -> Option, in declaration order."""
  return dict(_DECLARED)


def field_names() -> tuple[str, ...]:
  """The declared option keys (`Option.key`), in declaration order."""
  return tuple(_DECLARED)


def legacy_names() -> dict[str, Option]:
  """Flat pre-0.3.0 name -> Option, for the options that had one."""
  return {o.legacy: o for o in _DECLARED.values() if o.legacy}


def deprecated(old: str, new: str) -> None:
  """Warns that a flat spelling is deprecated (`DeprecationWarning`)."""
  warnings.warn(f"{old} is deprecated: write {new} (the flat spelling is "
                f"removed in {LEGACY_REMOVAL}).", DeprecationWarning,
                stacklevel=3)


class _Scope:
  """The values of one scope's options, by name (`opts.d2.k`)."""

  __slots__ = ("_values",)

  def __init__(self, values: dict[str, Any]):
    object.__setattr__(self, "_values", values)

  def __getattr__(self, name: str) -> Any:
    try:
      return object.__getattribute__(self, "_values")[name]
    except KeyError:
      raise AttributeError(f"no selection option {name!r}") from None


class SelectionOptions:
  """Every declared knob's value: the declared defaults, then the given ones.

  Values are keyed by `Option.key` (`opts.d2_k`, `opts.skip_epochs`); a
  scope's options are also read by name, `opts.d2.k`. Immutable;
  `replace(**kw)` returns a copy with some values changed, and `asdict()`
  every value. Values are not checked here (`check_options`).
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
    values = object.__getattribute__(self, "_values")
    if name in values:
      return values[name]
    scoped = {o.name: values[k] for k, o in _DECLARED.items()
              if o.scope == name and k in values}
    if scoped:
      return _Scope(scoped)
    raise AttributeError(f"no selection option {name!r}")

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


def spec_key(name: str, arg: str, spec: str = "") -> Optional[str]:
  """The option key that argument `arg` of a spec of method `name` sets.

  `arg` is the option's name in the method's scope (`d2(k=5)`), a shared
  option's name (`d2(skip_epochs=2)`), or a flat pre-0.3.0 name
  (`d2(d2_k=5)`: deprecated, with a `DeprecationWarning`).

  Returns:
    The `Option.key`, or None if no option answers to `arg`.
  """
  for key, o in _DECLARED.items():
    if o.name == arg and o.scope in ("", name):
      return key
  o = legacy_names().get(arg)
  if o is None:
    return None
  if o.scope == name:
    deprecated(f"option {arg!r} in method spec {spec!r}",
               f"{name}({o.name}=...)")
  else:  # It never had an effect on this method.
    deprecated(f"option {arg!r} in method spec {spec!r} (method {name!r} "
               "does not read it)", f"selection.{o.field} in the config")
  return o.key


def spec_names(name: str) -> list[str]:
  """The arguments a spec of method `name` may set: its scope's options,
  then the shared ones."""
  return ([o.name for o in _DECLARED.values() if o.scope == name] +
          [o.name for o in _DECLARED.values() if not o.scope])


def split_spec(spec: str) -> tuple[str, Optional[str]]:
  """`name(body)` -> `(name, body)` (body None without parentheses).

  Raises:
    ValueError: a spec the grammar does not derive (one line).
  """
  m = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
  if m is None:
    raise ValueError(f"method spec {spec!r} is not allowed: use name or "
                     "name(key=value;key=value), name a Python identifier.")
  return m.group("name"), m.group("body")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
  """Splits `name(key=value;...)` into the name and its overrides.

  Only the syntax and the keys are checked here: the name is the
  registry's (`registry.resolve` checks it), the values `resolve`'s.

  Args:
    spec: a method spec (module docstring).

  Returns:
    `(name, overrides)`: the method name and a dict of option key
    (`Option.key`) -> value.

  Raises:
    ValueError: on bad syntax or an argument that names no option of the
      method (one line, with the allowed names).
  """
  name, body = split_spec(spec)
  overrides = {}
  if body is not None:
    for item in filter(None, (x.strip() for x in body.split(";"))):
      arg, eq, value = (x.strip() for x in item.partition("="))
      key = spec_key(name, arg, spec) if eq and value else None
      if key is None:
        raise ValueError(f"option {item!r} in method spec {spec!r} is not "
                         f"allowed: use key=value with a key from "
                         f"{', '.join(spec_names(name))}.")
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
    overridden: the keys the spec set.
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
      raise ValueError(f"{o.name}={value!r} is not allowed in method spec "
                       f"{spec!r}: {bad}.")
    name = prefix + o.field if o.in_config else o.name
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
    readers: option key -> the methods that read it
      (`registry.option_readers()`); only these options are listed.
  """
  rows = ["| option | default | allowed | read by | what |",
          "|---|---|---|---|---|"]
  for o in _DECLARED.values():
    if o.key not in readers:
      continue
    rows.append(f"| `{o.field}` | `{o.default!r}` | {o.allowed()} | "
                f"{', '.join(readers.get(o.key, [])) or '—'} | {o.doc} |")
  return rows


# Read by every method that keeps the highest scores (`common.select_top`).
COMMON = declare(
    Option("class_balanced", bool, True,
           "per-class quotas (True) or one global top-k", paper=False),
    Option("seed", int, 0, "the run's seed (config `seed`): tie-breaks, "
           "random draws", low=0, high=MAX_SEED, in_config=False),
)
