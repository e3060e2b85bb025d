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
