"""The one table of selection methods, and selection by method spec.

`select(spec, art, labels, ratio, ...)` turns stored warm-up artefacts into
`(scores, mask)` through the method's row, so one warm-up serves every
method and ratio. Artefacts are host numpy arrays:
  `loss`, `correct`, `p_true`, `el2n`, `visits`: `[N, R]` training-pass
    trajectories (always recorded: they cost nothing);
  `eval_loss`, ... `eval_visits`: the same from a separate evaluation pass
    after each epoch (recorded only if a method uses `loss_source=eval`);
  `features`: `[N, D]` penultimate features at the end of warm-up;
  `grad_norms`: `[N]` per-example gradient norms at the end of warm-up;
  `margin`, `p_margin` (and `eval_margin`, ...): `[N, R]` logit and
    probability margins, recorded with the trajectory when a method needs
    "margin" (AUM);
  `uncertainty`: `[N, 4]` softmax scores at the end of warm-up
    (`uncertainty.COLUMNS`);
  `boundary`: `[N]` distances to the decision boundary at the end of
    warm-up, in sign-gradient steps (`boundary.boundary_distance`).
A spec is a name with option overrides (`options` docstring), e.g.
`mrmc(loss_source=eval;skip_epochs=2)`.
"""

import importlib
import importlib.util
import os
import sys
from typing import Any, Iterable, Optional

import numpy as np

from mrmc_jax import selection as selection_lib
from mrmc_jax.methods import aum
from mrmc_jax.methods import boundary
from mrmc_jax.methods import ccs
from mrmc_jax.methods import common
from mrmc_jax.methods import d2
from mrmc_jax.methods import dual
from mrmc_jax.methods import geometry
from mrmc_jax.methods import moderate
from mrmc_jax.methods import mrmc
from mrmc_jax.methods import mrmc_r
from mrmc_jax.methods import mrmc_ra
from mrmc_jax.methods import options as options_lib
from mrmc_jax.methods import scores
from mrmc_jax.methods import tdds
from mrmc_jax.methods import uncertainty

Method = common.Method
SelectionOptions = options_lib.SelectionOptions


def _select_full(art, labels, ratio, *, num_classes, opts, cache):
  del art, ratio, num_classes, opts, cache  # Unused.
  n = labels.shape[0]
  return np.ones(n, np.float32), np.ones(n, bool)


FULL = Method("full", frozenset(), (), _select_full,
              "all data, the reference (ratio ignored)", ratio_free=True,
              role="reference", label="full data")

# MRMC's methods, then the peers'. A new method of the package is one module
# with its row and one entry here; a user's method calls `register`.
_BUILTIN: tuple[Method, ...] = (
    mrmc.METHOD,
    mrmc_r.METHOD,
    mrmc_ra.METHOD,
    FULL,
    scores.RANDOM,
    scores.EL2N,
    scores.GRAND,
    scores.FORGETTING,
    ccs.METHOD,
    moderate.METHOD,
    scores.DYN_UNC,
    d2.METHOD,
    dual.METHOD,
    tdds.METHOD,
    aum.METHOD,
    uncertainty.LEAST_CONFIDENCE,
    uncertainty.MARGIN,
    uncertainty.ENTROPY,
    geometry.KCENTER,
    geometry.HERDING,
    boundary.METHOD,
)

_BY_NAME = {m.name: m for m in _BUILTIN}
METHODS = _BUILTIN  # The current table (`register` extends it).

# The configs' default specs: one run's method, and a comparison's methods.
DEFAULT_METHOD = mrmc.METHOD.name
DEFAULT_COMPARED = tuple(m.name for m in (
    FULL, scores.RANDOM, scores.EL2N, scores.GRAND, scores.FORGETTING,
    ccs.METHOD, moderate.METHOD, scores.DYN_UNC, d2.METHOD, mrmc.METHOD,
    mrmc_r.METHOD))


def register(method: Method) -> Method:
  """Adds a method to the table, e.g. from a user's own file.

  The method's options must be declared first (`options.declare`, or
  `common.declare`, in the same file); its `needs` are artefacts the
  warm-up records (`common.ARTEFACTS`). Registering the same row again is
  a no-op, so a file may be loaded twice.

  Returns:
    The method (so that `METHOD = register(Method(...))` reads well).

  Raises:
    ValueError: a name taken by another method, unknown artefacts, or
      options that are not declared.
  """
  global METHODS
  if not isinstance(method, Method):
    raise ValueError(f"register({method!r}) is not allowed: pass a "
                     "methods.Method row.")
  old = _BY_NAME.get(method.name)
  if old is not None:
    if old == method:
      return method
    raise ValueError(f"method {method.name!r} is already registered; choose "
                     "another name.")
  if not method.name.isidentifier():
    raise ValueError(f"method name {method.name!r} is not allowed: use a "
                     "Python identifier (letters, digits, _).")
  unknown = sorted(set(method.needs) - common.ARTEFACTS)
  if unknown:
    raise ValueError(f"method {method.name!r} needs {unknown}, which the "
                     f"warm-up does not record: use a subset of "
                     f"{sorted(common.ARTEFACTS)}.")
  undeclared = [o for o in method.options
                if o not in options_lib.field_names()]
  if undeclared:
    raise ValueError(f"method {method.name!r} reads undeclared options "
                     f"{undeclared}: declare them with options.declare.")
  _BY_NAME[method.name] = method
  METHODS = tuple(_BY_NAME.values())
  return method


def load_plugins(paths: Iterable[str]) -> None:
  """Imports users' method files (or modules), which call `register`.

  Args:
    paths: each a `.py` file path or a dotted module name.

  Raises:
    ValueError: a path that is neither an existing `.py` file nor an
      importable module, or a file that fails to load (one line, before
      any work).
  """
  for path in paths:
    path = path.strip()
    if not path:
      continue
    if path.endswith(".py"):
      full = os.path.abspath(path)
      if not os.path.isfile(full):
        raise ValueError(f"selection.plugins entry {path!r} is not allowed: "
                         "no such file.")
      name = "mrmc_user_methods_" + "".join(
          c if c.isalnum() else "_" for c in full)
      if name in sys.modules:
        continue
      spec = importlib.util.spec_from_file_location(name, full)
      module = importlib.util.module_from_spec(spec)
      sys.modules[name] = module
      try:
        spec.loader.exec_module(module)
      except Exception as e:  # The user's code: any error, one line.
        del sys.modules[name]
        raise ValueError(f"selection.plugins entry {path!r} failed to load: "
                         f"{type(e).__name__}: {e}".replace("\n", " ")
                         ) from None
    else:
      try:
        importlib.import_module(path)
      except ImportError as e:
        raise ValueError(f"selection.plugins entry {path!r} is not allowed: "
                         f"{e}.") from None
      except Exception as e:  # The user's code: any error, one line.
        raise ValueError(f"selection.plugins entry {path!r} failed to load: "
                         f"{type(e).__name__}: {e}".replace("\n", " ")
                         ) from None


def option_readers(builtin_only: bool = False) -> dict[str, list[str]]:
  """Option name -> the methods that read it, in table order.

  Args:
    builtin_only: only the package's methods (not those `register`ed).
  """
  out = {}
  for m in _BUILTIN if builtin_only else METHODS:
    for o in m.options:
      out.setdefault(o, []).append(m.name)
  return out


def method_names() -> tuple[str, ...]:
  """All method names, in table order."""
  return tuple(_BY_NAME)


def get_method(name: str) -> Method:
  """The row of `name`; ValueError listing the allowed names."""
  if name not in _BY_NAME:
    raise ValueError(f"method={name!r} is not allowed: it must be one of "
                     f"{', '.join(_BY_NAME)}.")
  return _BY_NAME[name]


def row(spec: str) -> Method:
  """The row of a spec's method (`mrmc(skip_epochs=2)` -> mrmc's row)."""
  return get_method(options_lib.parse_spec(spec)[0])


def resolve(spec: str, opts: SelectionOptions, prefix: str = ""
            ) -> tuple[str, SelectionOptions]:
  """The method name and its options (defaults, then the spec's overrides).

  `options.resolve` with the name checked against the table.

  Args:
    spec: a method spec.
    opts: the default options (e.g. from the config).
    prefix: see `options.check_options`.

  Returns:
    `(name, options)`.

  Raises:
    ValueError: (one line) on an unknown name, a bad option, or an
      override of an option the method does not read.
  """
  name = options_lib.split_spec(spec)[0]  # The name before its arguments.
  if name not in _BY_NAME:
    raise ValueError(f"selection.method={name!r} is not allowed: use one of "
                     f"{', '.join(_BY_NAME)}.")
  overrides = options_lib.parse_spec(spec)[1]
  # An override the method does not read would change nothing, silently.
  unread = [k for k in overrides if k not in _BY_NAME[name].options]
  if unread:
    raise ValueError(f"option {unread[0]!r} in method spec {spec!r} is not "
                     f"allowed: {name} does not read it; it reads "
                     f"{', '.join(_BY_NAME[name].options) or 'no option'}.")
  return options_lib.resolve(spec, opts, prefix)


def check_method(spec: str) -> None:
  """Checks a spec's name and its overrides (on the default options)."""
  resolve(spec, SelectionOptions())


def needs(specs: Iterable[str],
          opts: Optional[SelectionOptions] = None) -> frozenset[str]:
  """Union of the warm-up artefacts that the given method specs need.

  A method that reads the trajectory with `loss_source="eval"` also needs
  `eval_trajectory` (the evaluation pass).
  """
  opts = SelectionOptions() if opts is None else opts
  out = set()
  for spec in specs:
    name, o = resolve(spec, opts)
    row = _BY_NAME[name]
    method_needs = row.needs | (row.extra_needs(o) if row.extra_needs
                                else frozenset())
    out |= method_needs
    if "trajectory" in method_needs and o.loss_source == "eval":
      out.add("eval_trajectory")
  return frozenset(out)


def select(spec: str,
           art: dict[str, Any],
           labels: np.ndarray,
           ratio: float,
           *,
           num_classes: int,
           opts: SelectionOptions,
           cache: Optional[dict[str, Any]] = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """Scores and selects.

  Args:
    spec: a method spec (module docstring).
    art: warm-up artefacts (module docstring).
    labels: int `[N]`.
    ratio: core-set fraction in (0, 1].
    num_classes: C.
    opts: default options; the spec's overrides apply on top.
    cache: optional dict reused across calls on the same artefacts (D2's
      kNN graph is built once for every ratio).

  Returns:
    `(scores float32 [N], mask bool [N])`. For `full`, all ones. For methods
    that select by a procedure (CCS, D2) the scores are their difficulty
    input; for MRMC-R its final ranking.

  Raises:
    ValueError: (one line) on a bad spec or option, or a ratio that
      selects no example, before any work.
  """
  name, opts = resolve(spec, opts)
  selection_lib.check_nonzero_budget(ratio, int(np.shape(labels)[0]))
  method = _BY_NAME[name]
  got = method.select(art, labels, ratio, num_classes=num_classes,
                      opts=opts, cache=cache)
  return check_output(method, got, labels.shape[0], ratio)


def check_output(method: Method, got: Any, num_examples: int,
                 ratio: float) -> tuple[np.ndarray, np.ndarray]:
  """The contract every method's `select` keeps, checked at the boundary.

  A method returns `(scores, mask)`: scores float `[N]` without NaN (+-inf
  is allowed: a method may mark examples it always or never keeps), and a
  bool `[N]` mask selecting exactly `floor(ratio * N)` examples (all `N`
  for a ratio-free method), at least one.

  Args:
    method: the method's row.
    got: what its `select` returned.
    num_examples: N.
    ratio: the core-set fraction it was given.

  Returns:
    `(scores float32 [N], mask bool [N])` as host numpy arrays.

  Raises:
    ValueError: one line naming the method and the broken rule.
  """
  def broken(what):
    return ValueError(f"method {method.name!r} broke the selection contract: "
                      f"{what}; a method's select must return (scores float "
                      f"[N], mask bool [N]) selecting floor(ratio * N) "
                      "examples.")

  if not isinstance(got, (tuple, list)) or len(got) != 2:
    raise broken(f"it returned {type(got).__name__}, not (scores, mask)")
  scores, mask = (np.asarray(x) for x in got)
  for what, x in (("scores", scores), ("mask", mask)):
    if x.shape != (num_examples,):
      raise broken(f"{what} has shape {x.shape}, not ({num_examples},)")
  if mask.dtype != bool:
    raise broken(f"the mask has dtype {mask.dtype}, not bool")
  if not (np.issubdtype(scores.dtype, np.floating) or
          np.issubdtype(scores.dtype, np.integer)):
    raise broken(f"the scores have dtype {scores.dtype}, not float")
  if np.isnan(scores.astype(np.float64)).any():
    raise broken(f"{int(np.isnan(scores.astype(np.float64)).sum())} scores "
                 "are NaN")
  want = (num_examples if method.ratio_free else
          selection_lib.checked_budget(ratio, num_examples))
  count = int(mask.sum())
  if count < 1 or count != want:
    raise broken(f"it selected {count} of {num_examples} examples, not "
                 f"{want} (ratio {ratio:g})")
  return scores.astype(np.float32), mask
