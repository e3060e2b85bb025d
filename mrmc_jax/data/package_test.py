"""The data package: no import circle, and the removed modules are gone."""

import ast
import importlib
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _data_imports(path: str) -> set[str]:
  """The `mrmc_jax.data` modules a file imports."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.ImportFrom) and node.module == "mrmc_jax.data":
      out.update(f"mrmc_jax.data.{a.name}" for a in node.names)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
        "mrmc_jax.data."):
      out.add(node.module)
    elif isinstance(node, ast.Import):
      out.update(a.name for a in node.names
                 if a.name.startswith("mrmc_jax.data."))
  return out


def test_no_import_circle_inside_the_package():
  modules = {n[:-3] for n in os.listdir(HERE)
             if n.endswith(".py") and not n.endswith("_test.py")
             and n != "__init__.py"}
  graph = {m: {d.rsplit(".", 1)[1] for d in _data_imports(
      os.path.join(HERE, m + ".py"))} & modules for m in modules}
  state = {}

  def visit(m, path):
    if state.get(m) == "done":
      return
    assert state.get(m) != "open", f"import circle: {' -> '.join(path + [m])}"
    state[m] = "open"
    for d in sorted(graph[m]):
      visit(d, path + [m])
    state[m] = "done"

  for m in sorted(graph):
    visit(m, [])
  assert "sources" in graph and "stream" in graph  # the walk saw the package


@pytest.mark.parametrize("old", [
    "mrmc_jax.datasets", "mrmc_jax.streaming", "mrmc_jax.input_pipeline",
    "mrmc_jax.data._legacy"])
def test_modules_removed_in_0_3_0_are_gone(old):
  sys.modules.pop(old, None)
  with pytest.raises(ModuleNotFoundError):
    importlib.import_module(old)
