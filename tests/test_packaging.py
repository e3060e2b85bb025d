"""The package's metadata: core ranges without TensorFlow, the stacks, the lock.

`make test-core-stacks` installs the wheel on the oldest and newest stacks
(constraints/core-*.txt); these checks keep pyproject.toml's ranges, those
files and the runner's lock (requirements.txt) consistent.
"""

import os
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = {"jax", "flax", "optax", "numpy", "scipy"}


def _project() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def _pins(path: str) -> dict[str, Version]:
  """{name: version} of a file of `name==version` lines."""
  pins = {}
  for line in open(os.path.join(ROOT, path)):
    line = line.split("#", 1)[0].strip()
    if line:
      name, version = line.split("==")
      pins[canonicalize_name(name)] = Version(version)
  return pins


def _reqs(strings: list[str]) -> dict[str, Requirement]:
  return {canonicalize_name(r.name): r for r in map(Requirement, strings)}


def _lower_bound(req: Requirement) -> Version:
  return next(Version(s.version) for s in req.specifier if s.operator == ">=")


def test_core_is_ranges_of_jax_flax_optax_numpy_scipy_only():
  core = _reqs(_project()["dependencies"])
  assert set(core) == CORE
  for name, req in core.items():
    ops = {s.operator for s in req.specifier}
    # A lower bound and an upper bound, never an exact pin.
    assert ops == {">=", "<"}, (name, str(req.specifier))


def test_lower_bounds_are_the_oldest_stack_and_newest_is_in_range():
  project = _project()
  oldest = _pins("constraints/core-oldest.txt")
  newest = _pins("constraints/core-newest.txt")
  for name, req in _reqs(project["dependencies"]).items():
    low = _lower_bound(req)
    assert oldest[name] == low, (name, oldest[name], low)
    assert newest[name] in req.specifier, (name, newest[name])
    assert newest[name] > oldest[name], name
  # The test tools too: the oldest stack runs the lower bounds.
  for name, req in _reqs(project["optional-dependencies"]["test"]).items():
    assert oldest[name] == _lower_bound(req), name
    assert newest[name] in req.specifier, name


def test_core_stacks_have_no_tensorflow_or_runner_packages():
  for stack in ("oldest", "newest"):
    pins = _pins(f"constraints/core-{stack}.txt")
    assert not {"tensorflow", "tensorflow-cpu", "tensorflow-datasets",
                "ml-collections", "clu", "mrmc-jax"} & set(pins), stack


def test_the_lock_satisfies_every_declared_range():
  project = _project()
  lock = _pins("requirements.txt")
  declared = project["dependencies"] + [
      r for extra in ("runner", "test")
      for r in project["optional-dependencies"][extra]]
  for req in map(Requirement, declared):
    name = canonicalize_name(req.name)
    assert name in lock, f"{name} is declared but not in requirements.txt"
    assert lock[name] in req.specifier, (name, lock[name], str(req.specifier))


def test_py_typed_is_package_data():
  assert os.path.exists(os.path.join(ROOT, "mrmc_jax", "py.typed"))
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    tool = tomllib.load(f)["tool"]["setuptools"]
  assert "py.typed" in tool["package-data"]["mrmc_jax"]


def test_the_wheel_holds_the_package_configs():
  # The packages pyproject.toml's find section selects (what the wheel
  # holds) include the configs the scripts load.
  import setuptools  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    find = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]
  packages = setuptools.find_packages(ROOT, include=find["include"])
  assert "mrmc_jax.configs" in packages and "configs" not in packages
