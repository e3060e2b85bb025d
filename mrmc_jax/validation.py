"""Input checks shared by the public functions.

Every check raises `ValueError` with one line that names the bad value and
what is allowed. Checks on values run only on concrete arrays: under
`jax.jit` the arguments are tracers and only their shapes can be checked, so
public functions validate first and then call their jitted core.
"""

from typing import Any

import jax
import numpy as np


def is_concrete(*xs: Any) -> bool:
  """True when no argument is a JAX tracer (values can be inspected)."""
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_ratio(ratio: Any, name: str = "ratio") -> None:
  """Checks that a selection ratio lies in (0, 1] (and is not traced)."""
  check_static(ratio, name)
  r = np.asarray(ratio)
  if r.ndim != 0 or not np.isfinite(r) or not 0.0 < float(r) <= 1.0:
    raise ValueError(f"{name}={ratio!r} is not allowed: it must be a number "
                     "in (0, 1].")


def check_labels(labels: Any, num_classes: int) -> None:
  """Checks `labels` is int [N] with values in [0, num_classes)."""
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f"num_classes={num_classes!r} is not allowed: it must be "
                     "a positive int.")
  if np.ndim(labels) != 1:
    raise ValueError(f"labels has shape {np.shape(labels)}; expected a 1-D "
                     "[N] array.")
  if not np.issubdtype(np.asarray(labels).dtype if is_concrete(labels)
                       else labels.dtype, np.integer):
    raise ValueError(f"labels has dtype {labels.dtype}; expected an integer "
                     "dtype.")
  if is_concrete(labels) and np.size(labels):
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo < 0 or hi >= num_classes:
      bad = lo if lo < 0 else hi
      raise ValueError(f"label {bad} is outside [0, {num_classes}) "
                       f"(num_classes={num_classes}).")


def check_scores(scores: Any, name: str = "scores") -> None:
  """Checks `scores` is a 1-D float array without NaN."""
  if np.ndim(scores) != 1:
    raise ValueError(f"{name} has shape {np.shape(scores)}; expected a 1-D "
                     "[N] array.")
  if is_concrete(scores):
    nan = np.isnan(np.asarray(scores, dtype=np.float64))
    if nan.any():
      raise ValueError(f"{name} holds {int(nan.sum())} NaN values (first at "
                       f"index {int(np.argmax(nan))}); scores must not be "
                       "NaN.")


def check_same_length(**arrays: Any) -> None:
  """Checks all arrays share their leading dimension."""
  lengths = {k: np.shape(v)[0] if np.ndim(v) else None
             for k, v in arrays.items()}
  if len(set(lengths.values())) > 1:
    desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
    raise ValueError(f"mismatched leading dimensions: {desc}; they must be "
                     "equal.")


def check_int(value: Any, name: str, minimum: int = 1) -> None:
  """Checks `value` is an int >= minimum."""
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < minimum):
    raise ValueError(f"{name}={value!r} is not allowed: it must be an int >= "
                     f"{minimum}.")


MAX_SEED = 2**31 - 1


def check_seed(seed: Any, name: str = "seed") -> None:
  """Checks an int seed in [0, 2^31) (a `jax.random.key` or numpy seed)."""
  check_int(seed, name, minimum=0)
  if seed > MAX_SEED:
    raise ValueError(f"{name}={seed!r} is not allowed: it must be an int in "
                     f"[0, {MAX_SEED}].")


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))


def dtype_of(x: Any) -> np.dtype:
  """The dtype of an array, tracer, or Python/numpy value."""
  dtype = getattr(x, "dtype", None)
  return np.dtype(dtype if dtype is not None else np.asarray(x).dtype)


def check_rank(x: Any, name: str, ndim: int, expected: str) -> None:
  """Checks `x` has `ndim` dimensions; `expected` describes the shape."""
  if np.ndim(x) != ndim:
    raise ValueError(f"{name} has shape {_shape(x)}; expected {expected}.")


def check_leading(x: Any, name: str, length: int, expected: str) -> None:
  """Checks `x` is 1-D of `length` rows; `expected` describes the shape."""
  if _shape(x) != (length,):
    raise ValueError(f"{name} has shape {_shape(x)}; expected {expected} = "
                     f"({length},).")


def check_integer_dtype(x: Any, name: str) -> None:
  """Checks `x` holds integers (class labels, ids, epochs), not floats."""
  dtype = dtype_of(x)
  if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
    raise ValueError(f"{name} has dtype {dtype}; expected an integer dtype.")


def check_float_dtype(x: Any, name: str) -> None:
  """Checks `x` holds real floats."""
  dtype = dtype_of(x)
  if not np.issubdtype(dtype, np.floating):
    raise ValueError(f"{name} has dtype {dtype}; expected a float dtype.")


def check_mask_dtype(x: Any, name: str = "mask") -> None:
  """Checks a padding mask is bool (True = a real row)."""
  dtype = dtype_of(x)
  if dtype != np.bool_:
    raise ValueError(f"{name} has dtype {dtype}; expected bool (True = a real "
                     "row, False = padding).")


def check_index_range(x: Any, name: str, stop: int, *, mask: Any = None,
                      what: str = "") -> None:
  """Concrete values only: every `x` (where `mask`) lies in `[0, stop)`.

  Args:
    x: int array of indices (labels, ids, epochs).
    name: its name in the message.
    stop: the exclusive upper bound.
    mask: optional bool array of x's shape; False entries are not checked.
    what: what `stop` is, for the message (e.g. "num_classes").
  """
  if not is_concrete(x, mask) or not np.size(x):
    return
  v = np.asarray(x)
  bad = (v < 0) | (v >= stop)
  if mask is not None:
    bad &= np.asarray(mask, bool)
  if bad.any():
    i = np.unravel_index(int(np.argmax(bad)), v.shape)
    at = f"[{', '.join(str(int(k)) for k in i)}]" if v.ndim else ""
    hint = f" ({what}={stop})" if what else ""
    raise ValueError(f"{name}{at} = {int(v[i])} is outside [0, {stop}){hint}; "
                     f"{int(bad.sum())} such entries.")


def check_array(x: Any, name: str, expected: str = "") -> None:
  """Checks `x` is an array (jax, numpy or a tracer), not a list or dict.

  Args:
    x: the argument.
    name: its name in the message.
    expected: its shape, for the message (e.g. "float [N]").
  """
  if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
    shape = f" {expected}" if expected else ""
    raise ValueError(f"{name} has type {type(x).__name__}; expected a jax or "
                     f"numpy array{shape} (e.g. jnp.asarray({name})).")


def check_static(value: Any, name: str, hint: str = "") -> None:
  """Checks a static argument (an option fixed at trace time) is not traced.

  Args:
    value: the argument.
    name: its name in the message.
    hint: what to pass instead, appended to the message.
  """
  if not is_concrete(value):
    raise ValueError(f"{name} is traced (an argument of your jax.jit?), but "
                     f"it is a static argument: pass a Python value{hint}.")
