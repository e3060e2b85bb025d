"""The library never imports the runner: an import-graph check over the AST."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "mrmc_jax")


def _imports(path: str) -> set[str]:
  """Every module a file imports, absolute names (`from a import b` -> a.b)."""
  tree = ast.parse(open(path).read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def _library_files() -> list[str]:
  files = []
  for root, dirs, names in os.walk(PKG):
    dirs[:] = [d for d in dirs
               if d not in ("runner", "configs", "__pycache__")]
    files += [os.path.join(root, n) for n in names
              if n.endswith(".py") and not n.endswith("_test.py")]
  return files


def test_no_library_module_imports_the_runner():
  files = _library_files()
  assert len(files) > 10  # the walk found the library
  offenders = {os.path.relpath(f, ROOT): sorted(
      m for m in _imports(f) if m.startswith("mrmc_jax.runner"))
               for f in files}
  assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_check_sees_runner_imports(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("from mrmc_jax.runner import loop\nimport mrmc_jax.runner\n")
  assert {"mrmc_jax.runner.loop", "mrmc_jax.runner"} <= _imports(str(bad))


def test_runner_reads_configs_library_does_not():
  # Library functions take explicit arguments: no library module imports
  # ml_collections or the configs package.
  for f in _library_files():
    mods = _imports(f)
    assert not any(m.startswith("ml_collections") or _is_configs(m)
                   for m in mods), f


def _is_configs(module: str) -> bool:
  return module.split(".")[0] == "configs" or module.startswith(
      "mrmc_jax.configs")


def test_the_runner_never_imports_the_config_files():
  # The configs (mrmc_jax/configs/, and the thin files of the repository's
  # configs/) sit above the runner: they build configs from the runner's
  # field declarations, never below it.
  runner = os.path.join(PKG, "runner")
  files = [os.path.join(runner, n) for n in os.listdir(runner)
           if n.endswith(".py") and not n.endswith("_test.py")]
  assert len(files) > 10
  offenders = [os.path.relpath(f, ROOT) for f in files
               if any(_is_configs(m) for m in _imports(f))]
  assert not offenders, offenders


def test_the_check_sees_config_imports():
  assert all(map(_is_configs, ("configs", "configs.base",
                               "mrmc_jax.configs", "mrmc_jax.configs.base")))
  assert not any(map(_is_configs, ("mrmc_jax.runner.config", "configs_x")))


def test_package_configs_import_no_top_level_configs():
  # The package's configs work from an installed wheel: none of them
  # reaches back to the repository's configs/ (nor do the scripts).
  files = [os.path.join(PKG, "configs", n)
           for n in os.listdir(os.path.join(PKG, "configs"))
           if n.endswith(".py")]
  files += [os.path.join(ROOT, "experiments", n)
            for n in os.listdir(os.path.join(ROOT, "experiments"))
            if n.endswith(".py")]
  assert len(files) > 10
  offenders = {os.path.relpath(f, ROOT): m for f in files
               for m in _imports(f) if m.split(".")[0] == "configs"}
  assert not offenders, offenders


def test_no_script_edits_sys_path():
  for name in os.listdir(os.path.join(ROOT, "experiments")):
    if name.endswith(".py"):
      text = open(os.path.join(ROOT, "experiments", name)).read()
      assert not re.search(r"sys\.path\.(insert|append)|sys\.path\s*=",
                           text), name


# Method knowledge lives on the method's row (`methods.Method`: options,
# `curves`, `role`, `label`, `ratio_free`): the runner names no method.
# Checked on the code, not on prose: docstrings and comments may name
# methods. Strings that equal an artefact name (`common.ARTEFACTS`, e.g.
# "margin") name what the warm-up records, not a method. A module named
# after a method (`methods.mrmc`, `methods.d2`) may not be imported; the
# warm-up's artefact code (`methods.uncertainty`: the "uncertainty"
# artefact's columns) may.
_NOT_A_METHOD = {
    # The attribution report's full-data setting ("full", "coreset_0.3",
    # "full_order1"): a setting name, not the method spec.
    ("attribution.py", "full"),
}


def _runner_files() -> list[str]:
  runner = os.path.join(PKG, "runner")
  return sorted(os.path.join(runner, n) for n in os.listdir(runner)
                if n.endswith(".py") and not n.endswith("_test.py"))


def _code_strings(tree: ast.AST) -> list[str]:
  """Every string constant of the code, docstrings left out."""
  docstrings = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                         ast.AsyncFunctionDef)) and node.body:
      first = node.body[0]
      if isinstance(first, ast.Expr) and isinstance(first.value,
                                                    ast.Constant):
        docstrings.add(id(first.value))
  return [n.value for n in ast.walk(tree)
          if isinstance(n, ast.Constant) and isinstance(n.value, str)
          and id(n) not in docstrings]


def _method_names_in(text: str, names: set[str]) -> list[str]:
  """Method names a string spells as specs: "mrmc", "d2(k=5)" or a
  comma-separated list of specs."""
  import re  # pylint: disable=g-import-not-at-top
  spec = re.compile(r"\s*([A-Za-z_]\w*)\s*(\([^()]*\))?\s*")
  parts = [spec.fullmatch(p) for p in text.split(",")]
  if not all(parts):
    return []
  return [m.group(1) for m in parts if m.group(1) in names]


def _method_knowledge(path: str, names: set[str], modules: set[str],
                      artefacts: frozenset) -> list[str]:
  tree = ast.parse(open(path).read(), path)
  base = os.path.basename(path)
  found = [f"imports {m}" for m in _imports(path)
           if m in modules and m.rsplit(".", 1)[-1] in names]
  for text in _code_strings(tree):
    if text in artefacts or (base, text) in _NOT_A_METHOD:
      continue
    found += [f"names method {n!r} in {text!r}"
              for n in _method_names_in(text, names)]
  return found


def _method_modules(rows) -> set[str]:
  """The modules that define a method's row (its select function's)."""
  return {r.select.__module__ for r in rows} - {
      "mrmc_jax.methods.registry"}


def test_the_runner_names_no_method():
  from mrmc_jax import methods  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import common  # pylint: disable=g-import-not-at-top
  names = set(methods.method_names())
  modules = _method_modules(methods.registry.METHODS)
  assert {"mrmc_jax.methods.mrmc", "mrmc_jax.methods.d2"} <= modules
  files = _runner_files()
  assert len(files) > 10
  offenders = {os.path.relpath(f, ROOT): _method_knowledge(
      f, names, modules, common.ARTEFACTS) for f in files}
  assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_method_name_check_sees_names(tmp_path):
  from mrmc_jax import methods  # pylint: disable=g-import-not-at-top
  names = set(methods.method_names())
  modules = _method_modules(methods.registry.METHODS)
  bad = tmp_path / "bad.py"
  bad.write_text(
      '"""Docstrings may name mrmc."""\n'
      "from mrmc_jax.methods import mrmc as mrmc_lib\n"
      "def f(spec):\n"
      '  """Or d2."""\n'
      '  x = "full data" if spec == "full" else spec\n'
      '  return spec.startswith("mrmc"), "el2n,d2(k=5)", f"{x} data"\n')
  found = _method_knowledge(str(bad), names, modules, frozenset())
  assert sorted(found) == ["imports mrmc_jax.methods.mrmc",
                           "names method 'd2' in 'el2n,d2(k=5)'",
                           "names method 'el2n' in 'el2n,d2(k=5)'",
                           "names method 'full' in 'full'",
                           "names method 'mrmc' in 'mrmc'"], found
