"""The package's import graph has no circle: a check over the AST.

Every `import` in every module counts, at any depth (an import inside a
function is still a circle in the design, only a deferred one). A package
`__init__` depends on what it imports; `from pkg import mod` depends on the
submodule `pkg.mod` when there is one, else on `pkg`.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_files(root: str = ROOT, package: str = "mrmc_jax"
                 ) -> dict[str, str]:
  """Module name -> file, for every module of the package (tests too)."""
  out = {}
  for base, dirs, names in os.walk(os.path.join(root, package)):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    rel = os.path.relpath(base, root).replace(os.sep, ".")
    for n in names:
      if n.endswith(".py"):
        name = rel if n == "__init__.py" else f"{rel}.{n[:-3]}"
        out[name] = os.path.join(base, n)
  return out


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
  """Module -> the package modules it imports."""
  graph = {}
  for name, path in files.items():
    deps = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in
                   files else node.module for a in node.names]
      else:
        continue
      deps.update(t for t in targets if t in files and t != name)
    graph[name] = deps
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """One circle of the graph (a list of modules, first == last), or []."""
  state = {}
  stack = []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        found = visit(dep)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return []

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return []


def test_the_package_has_no_import_circle():
  files = module_files()
  assert len(files) > 30
  graph = import_graph(files)
  cycle = find_cycle(graph)
  assert not cycle, " -> ".join(cycle)


def test_the_check_sees_a_circle(tmp_path):
  pkg = tmp_path / "mrmc_jax"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from mrmc_jax import b\n")
  (pkg / "b.py").write_text("def f():\n  import mrmc_jax.a\n")
  (pkg / "c.py").write_text("from mrmc_jax import a\n")
  graph = import_graph(module_files(str(tmp_path)))
  assert graph["mrmc_jax.c"] == {"mrmc_jax.a"}
  assert find_cycle(graph) == ["mrmc_jax.a", "mrmc_jax.b", "mrmc_jax.a"]


def test_no_arrow_from_the_runner_to_the_configs():
  # The configs build on the runner's field declarations; the runner takes
  # a config as an argument and never imports one (tests may).
  graph = import_graph(module_files())
  assert "mrmc_jax.configs.base" in graph
  arrows = [f"{a} -> {b}" for a, deps in graph.items()
            if a.startswith("mrmc_jax.runner") and not a.endswith("_test")
            for b in deps if b.startswith("mrmc_jax.configs")]
  assert not arrows, arrows
