"""The public API: `__all__`, `dir()`, the README's table, versions, shims."""

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import tomllib
import types
import warnings

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mrmc_jax as mj
from mrmc_jax import train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_table() -> list[str]:
  """The first cells of the README's API table (under 'Library use')."""
  readme = open(os.path.join(ROOT, "README.md")).read()
  section = readme.split("## Library use", 1)[1].split("\n## ", 1)[0]
  table = section.split("| function | what it does |", 1)[1]
  cells = []
  for line in table.strip().splitlines()[1:]:
    if not line.startswith("|"):
      break
    cells.append(line.split("|")[1])
  return cells


def _entries() -> list[tuple[str, str | None]]:
  """(dotted name, parameter list or None) of every backticked entry."""
  out = []
  for cell in _readme_table():
    for code in re.findall(r"`([^`]+)`", cell):
      m = re.fullmatch(r"([\w.]+)(?:\((.*)\))?", code)
      assert m, f"README API entry {code!r} is not `name(params)` or `Name`"
      out.append((m.group(1), m.group(2)))
  return out


def _resolve(name: str):
  obj = mj
  parts = name.split(".")
  if len(parts) > 1:  # a module of the package: methods.select
    obj = importlib.import_module("mrmc_jax." + ".".join(parts[:-1]))
  return getattr(obj, parts[-1])


_KINDS = {"posonlyargs": inspect.Parameter.POSITIONAL_ONLY,
          "args": inspect.Parameter.POSITIONAL_OR_KEYWORD,
          "kwonlyargs": inspect.Parameter.KEYWORD_ONLY}
_NO_DEFAULT = "<required>"


def _documented(params: str) -> list[tuple[str, object, object]]:
  """(name, kind, default) from a README parameter list, via Python's AST."""
  args = ast.parse(f"def f({params}): pass").body[0].args
  out = []
  positional = args.posonlyargs + args.args
  defaults = [None] * (len(positional) - len(args.defaults)) + args.defaults
  for group in ("posonlyargs", "args"):
    for a in getattr(args, group):
      d = defaults[positional.index(a)]
      out.append((a.arg, _KINDS[group],
                  _NO_DEFAULT if d is None else ast.literal_eval(d)))
  if args.vararg:
    out.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, _NO_DEFAULT))
  for a, d in zip(args.kwonlyargs, args.kw_defaults):
    out.append((a.arg, inspect.Parameter.KEYWORD_ONLY,
                _NO_DEFAULT if d is None else ast.literal_eval(d)))
  if args.kwarg:
    out.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, _NO_DEFAULT))
  return out


def _actual(obj) -> list[tuple[str, object, object]]:
  return [(p.name, p.kind,
           _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default)
          for p in inspect.signature(obj).parameters.values()]


def test_readme_api_table_matches_the_signatures():
  entries = _entries()
  assert len(entries) > 30
  for name, params in entries:
    obj = _resolve(name)
    if params is None:
      assert inspect.isclass(obj), f"README lists {name} without parameters"
      continue
    assert _documented(params) == _actual(obj), (
        f"README documents {name}({params}); the code has "
        f"{name}{inspect.signature(obj)}")


def test_every_public_name_is_in_the_readme_table():
  documented = {name for name, _ in _entries()}
  missing = [n for n in mj.__all__ if n not in documented]
  assert not missing, f"public names missing from the README table: {missing}"


def test_all_and_dir_list_functions_not_modules():
  assert len(mj.__all__) == len(set(mj.__all__))
  for name in mj.__all__:
    obj = getattr(mj, name)
    assert not isinstance(obj, types.ModuleType), name
    assert callable(obj), name
  # dir() shows the API; the submodules stay importable.
  assert dir(mj) == sorted(mj.__all__ + ["__version__"])
  assert not any(isinstance(getattr(mj, n), types.ModuleType)
                 for n in dir(mj) if n != "__version__")
  from mrmc_jax import losses  # pylint: disable=g-import-not-at-top
  assert losses.per_example_stats is mj.per_example_stats
  namespace = {}
  exec("from mrmc_jax import *", namespace)  # pylint: disable=exec-used
  assert set(namespace) - {"__builtins__"} == set(mj.__all__)


def test_version_is_one_in_the_package_and_the_changelog():
  # pyproject.toml takes the version from the package, nowhere else.
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    pyproject = tomllib.load(f)
  assert "version" not in pyproject["project"]
  assert pyproject["project"]["dynamic"] == ["version"]
  assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
      "attr": "mrmc_jax.__version__"}
  assert not os.path.exists(os.path.join(ROOT, "setup.py"))
  version = mj.__version__
  assert re.fullmatch(r"0\.\d+\.\d+", version)
  changelog = open(os.path.join(ROOT, "CHANGELOG.md")).read()
  first = re.search(r"^## (\d+\.\d+\.\d+)", changelog, re.M).group(1)
  assert first == version
  assert "## Deprecation policy" in changelog


def test_train_state_alias_removed_in_0_3_0():
  with pytest.raises(AttributeError, match="no attribute 'TrainState'"):
    mj.TrainState  # pylint: disable=pointless-statement
  with pytest.raises(AttributeError, match="no attribute 'TrainState'"):
    train_step.TrainState  # pylint: disable=pointless-statement
  assert issubclass(mj.BatchStatsTrainState, train_state.TrainState)
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    mj.nope  # pylint: disable=pointless-statement
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    state = mj.create_train_state({"params": {"w": jnp.ones(2)}},
                                  optax.sgd(0.1))
  assert isinstance(state, train_state.TrainState)


def test_flax_train_state_through_the_recording_step():
  """flax's own TrainState (no look-alike): train, record, score."""
  w = {"w": jnp.zeros((4, 3))}
  state = train_state.TrainState.create(apply_fn=None, params=w,
                                        tx=optax.sgd(0.5))
  apply_fn = lambda v, x, train, mask=None: (x @ v["params"]["w"], None)
  step = jax.jit(mj.make_recording_step(mj.make_train_step(apply_fn)),
                 donate_argnums=(0, 1))
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, 8)
  traj = mj.init_trajectory(8, 3)
  for epoch in range(3):
    batch = {"image": x, "label": y.astype(np.int32),
             "id": np.arange(8, dtype=np.int32), "mask": np.ones(8, bool)}
    state, traj, _ = step(state, traj, batch, epoch)
  mj.check_visits(np.asarray(traj["visits"]))
  assert int(state.step) == 3
  assert np.all(np.isfinite(mj.mrmc_scores(traj["loss"])))


def test_import_stays_light():
  """`import mrmc_jax` loads neither TensorFlow nor flax.nnx."""
  code = ("import sys, mrmc_jax as mj; "
          "assert 'tensorflow' not in sys.modules; "
          "assert 'flax.nnx' not in sys.modules; "
          "mj.make_nnx_train_step; assert 'flax.nnx' in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True,
                 env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
