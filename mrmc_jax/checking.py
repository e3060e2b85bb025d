"""Checked mode: value checks inside `jax.jit`, opt-in, via `checkify`.

Under `jax.jit` the library can check shapes and dtypes (they are known at
trace time) but not values: label, id and epoch ranges, and finiteness,
depend on the data. The public functions therefore carry
`checkify.debug_check`s, which compile to nothing in an ordinary `jax.jit`
and become real checks when the function runs under `checked`:

    step = jax.jit(mj.make_recording_step(mj.make_train_step(apply_fn)))
    debug_step = mj.checked(step)       # same arguments, same outputs
    state, traj, stats = debug_step(state, traj, batch, epoch, rng)
    # -> checkify.JaxRuntimeError (a ValueError) naming the first bad value

What `checked` verifies, in every library function the wrapped function
calls (`per_example_stats`, `make_train_step`'s step, `record`,
`make_recording_step`'s step, `select_mask`, `mrmc_scores`): labels in
`[0, C)`, ids in `[0, N)` and the epoch in `[0, R)` on real (unpadded)
rows, no id twice in one batch, finite logits and losses, scores without
NaN, quotas within their classes. Each check costs a
reduction over its inputs plus one host sync per call to read the error,
so use the checked mode to debug and the plain step for speed.
"""

import functools
from typing import Any, Callable, Optional

import jax
from jax.experimental import checkify
import jax.numpy as jnp

Array = jax.Array

# The error the checked mode raises (a subclass of ValueError).
CheckError = checkify.JaxRuntimeError


def checked(fn: Callable[..., Any],
            *,
            errors: frozenset | None = None,
            jit: bool = True,
            **jit_kwargs: Any) -> Callable[..., Any]:
  """Runs `fn` with the library's value checks switched on.

  Args:
    fn: any function that calls the library, jitted or not (e.g. a jitted
      recording step).
    errors: the `checkify` error sets to enable; None (default) means the
      library's checks (`checkify.user_checks`). Add `checkify.nan_checks` or
      `checkify.index_checks` to check every operation of your own code too.
    jit: compile the checked function with `jax.jit` (once per input
      shape); False runs `checkify` on every call (slow, for debugging
      tracing itself).
    **jit_kwargs: passed to `jax.jit` (e.g. `donate_argnums`,
      `static_argnames`). A donation inside `fn` does not carry over;
      donated arguments are consumed even by a call that raises.

  Returns:
    A function with `fn`'s arguments and outputs that raises `CheckError`
    (`checkify.JaxRuntimeError`, a `ValueError`) with the first failed
    check's message.
  """
  if not callable(fn):
    raise ValueError(f"checked got fn of type {type(fn).__name__}; expected "
                     "a function (e.g. your jitted step).")
  if errors is None:
    errors = checkify.user_checks
  inner = checkify.checkify(fn, errors=errors)
  if jit:
    inner = jax.jit(inner, **jit_kwargs)

  @functools.wraps(fn)
  def run(*args, **kwargs):
    err, out = inner(*args, **kwargs)
    err.throw()
    return out

  return run


def _traced(*xs: Any) -> bool:
  """Whether any argument is a tracer. Concrete values are checked on the
  host by the callers (`validation`); checkify traces its function, so
  under `checked` the values are tracers and these checks are staged."""
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def _first_bad(bad: Array, values: Array) -> tuple[Array, Array]:
  """Flat index and value of the first True of `bad`, for messages."""
  i = jnp.argmax(bad.reshape(-1))
  return i, values.reshape(-1)[i]


def check_index_range(x: Array, name: str, stop: Any, *,
                      mask: Optional[Array] = None) -> None:
  """Checked mode: every `x` (where `mask`) lies in `[0, stop)`."""
  if not _traced(x, mask, stop):
    return
  x = jnp.asarray(x)
  bad = (x < 0) | (x >= stop)
  if mask is not None:
    bad = bad & jnp.broadcast_to(mask, bad.shape)
  i, v = _first_bad(bad, x)
  checkify.debug_check(
      ~jnp.any(bad), f"{name} (flat index {{i}}) = {{v}} is outside [0, "
      f"{{stop}}) on a real row", i=i, v=v, stop=jnp.asarray(stop))


def check_finite(x: Array, name: str, *, mask: Optional[Array] = None,
                 where: Optional[Array] = None) -> None:
  """Checked mode: every `x` is finite, on the rows where `mask` (`[B]`,
  broadcast over trailing axes) and the entries where `where` (x's shape)."""
  if not _traced(x, mask, where):
    return
  x = jnp.asarray(x)
  bad = ~jnp.isfinite(x)
  if mask is not None:
    bad = bad & jnp.broadcast_to(
        jnp.reshape(mask, mask.shape + (1,) * (bad.ndim - mask.ndim)),
        bad.shape)
  if where is not None:
    bad = bad & where
  i, v = _first_bad(bad, x)
  checkify.debug_check(
      ~jnp.any(bad), f"{name} (flat index {{i}}) = {{v}} is not finite",
      i=i, v=v)


def check_not_nan(x: Array, name: str) -> None:
  """Checked mode: no NaN in `x`."""
  if not _traced(x):
    return
  x = jnp.asarray(x)
  bad = jnp.isnan(x)
  i, _ = _first_bad(bad, x)
  checkify.debug_check(~jnp.any(bad), f"{name} (flat index {{i}}) is NaN",
                       i=i)


def check_unique(ids: Array, name: str, *, mask: Optional[Array] = None
                 ) -> None:
  """Checked mode: no value of `ids [B]` on two rows where `mask`.

  A sort of the B ids (padding rows moved past the largest id, each to a
  value of its own), so it costs O(B log B), in the checked mode only.
  """
  if not _traced(ids, mask) or jnp.shape(ids)[0] < 2:
    return
  ids = jnp.asarray(ids).astype(jnp.int64 if jax.config.jax_enable_x64
                                else jnp.int32)
  if mask is not None:
    # Padding rows get distinct values past every real id.
    spare = jnp.max(ids) + 1 + jnp.arange(ids.shape[0], dtype=ids.dtype)
    ids = jnp.where(mask, ids, spare)
  s = jnp.sort(ids)
  same = s[1:] == s[:-1]
  i = jnp.argmax(same)
  checkify.debug_check(
      ~jnp.any(same), f"{name} {{v}} appears on two real rows of one batch "
      "(recorded twice: two visits, one value)", v=s[i])


def check_quotas(quotas: Array, labels: Array, num_classes: int, *,
                 eligible: Optional[Array] = None) -> None:
  """Checked mode: no class quota above the class's eligible rows."""
  if not _traced(quotas, labels, eligible):
    return
  ok = jnp.ones(jnp.shape(labels), bool) if eligible is None else eligible
  y = jnp.where(ok, jnp.asarray(labels).astype(jnp.int32), num_classes)
  have = jnp.bincount(y, length=num_classes + 1)[:num_classes]
  over = jnp.asarray(quotas) > have
  c = jnp.argmax(over)
  checkify.debug_check(
      ~jnp.any(over), "a quota exceeds the eligible examples of its class: "
      "quotas[{c}] = {q} > {h}", c=c, q=jnp.asarray(quotas)[c], h=have[c])


def check_all(ok: Array, message: str) -> None:
  """Checked mode: every entry of the bool array `ok` is True."""
  if not _traced(ok):
    return
  ok = jnp.asarray(ok)
  i, _ = _first_bad(~ok, ok)
  checkify.debug_check(jnp.all(ok), f"{message} (flat index {{i}})", i=i)
