"""Every config file loads and passes validation; presets and overrides."""

import copy
import importlib
import os
import runpy

import pytest

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax.methods import options
from mrmc_jax.methods import registry
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import fields
from mrmc_jax.runner import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "mrmc_jax", "configs")
NAMES = sorted(f[:-3] for f in os.listdir(PACKAGE)
               if f.endswith(".py") and f not in ("__init__.py", "base.py"))


@pytest.mark.parametrize("name", NAMES)
def test_config_validates(name):
  config = importlib.import_module(f"mrmc_jax.configs.{name}").get_config()
  config_lib.validate_config(config)


def test_every_package_config_has_its_thin_file_and_no_other():
  thin = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                if f.endswith(".py"))
  assert thin == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_thin_file_loads_as_the_flag_loads_it(name):
  # By path, as `--config=configs/<name>.py:arg` loads it.
  loaded = runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))
  arg = "dataset.name='digits'" if name == "attribution" else "seed=3"
  want = importlib.import_module(f"mrmc_jax.configs.{name}").get_config(arg)
  assert loaded["get_config"](arg).to_dict() == want.to_dict()


def test_paper_preset_and_overrides():
  from mrmc_jax.configs import cifar10  # pylint: disable=g-import-not-at-top
  config = cifar10.get_config("paper,selection.ratio=0.1,train.epochs=3")
  assert not config.selection.class_balanced
  assert config.selection.max_initial_ratio == 1e30
  assert config.selection.ratio == 0.1 and config.train.epochs == 3
  quick = cifar10.get_config("quick")
  assert quick.train.epochs == 5 and quick.selection.warmup_epochs == 2
  assert base.presets("quick,a.b=1,paper") == {"quick", "paper"}


@pytest.mark.parametrize("name", NAMES)
def test_every_field_states_what_it_affects(name):
  config = importlib.import_module(f"mrmc_jax.configs.{name}").get_config()
  declared = fields.declared()
  for path, _ in fields.leaves(config):
    assert path in declared, f"{path} has no declaration in fields.py"
    assert set(declared[path].affects) <= set(fields.STAGES), path


def test_a_field_without_a_mark_is_refused():
  config = default.get_config()
  config.train.nosuch = 3
  with pytest.raises(ValueError, match=r"^unknown field train.nosuch"):
    config_lib.validate_config(config)
  config = default.get_config()
  config.train.learning_rat = 0.1
  with pytest.raises(ValueError, match=r"did you mean train.learning_rate"):
    config_lib.validate_config(config)


def _stamps(**overrides):
  config = base.set_fields(default.get_config(), overrides)
  opts = config_lib.selection_options(config)
  warm = stages.warmup_stamp(config, config.seed, {"data": 1})
  sel = stages.selection_stamp(warm, config, "mrmc", 0.3, opts)
  return warm, sel, stages.result_stamp(sel, config)


def test_stage_stamps_follow_the_marks():
  ref = _stamps()
  assert _stamps(**{"train.checkpoint_every_epochs": 5}) == ref
  assert _stamps(**{"selection.method": "random"}) == ref  # Explicit input.
  budget = _stamps(**{"train.budget": "steps"})
  assert budget[:2] == ref[:2] and budget[2] != ref[2]
  rho = _stamps(**{"selection.rho": 0.5})
  assert rho[0] == ref[0] and rho[1] != ref[1]
  epochs = _stamps(**{"train.epochs": 7})
  assert all(a != b for a, b in zip(epochs, ref))


def test_readme_option_table_is_the_declarations():
  readme = open(os.path.join(ROOT, "README.md")).read()
  begin = "<!-- method options: begin -->\n"
  end = "<!-- method options: end -->"
  got = readme[readme.index(begin) + len(begin):readme.index(end)]
  want = "\n".join(options.table_rows(
      registry.option_readers(builtin_only=True))) + "\n"
  assert got == want, "README.md's option table should read:\n" + want


# The fields added with an `absent` value (since fields.py's rule).
ADDED = ("selection.fit_filter", "selection.aum_filter",
         "dataset.label_noise_kind",
         "selection.aum_margin", "selection.least_confidence_on",
         "selection.herding_pick", "selection.boundary_mode")


def _without(config, paths):
  """The config as a version without the fields `paths` built it."""
  config = copy.deepcopy(config)
  config.unlock()
  for path in paths:
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    del node[leaf]
  return config


def test_fields_added_at_their_absent_value_change_no_stamp_or_identity():
  declared = fields.declared()
  assert all(declared[p].absent is not options.NOT_SET for p in ADDED)
  config = default.get_config()
  old = _without(config, ADDED)
  # The stamps and the identity of a version without the fields.
  data = {"data": 1}
  warm = stages.warmup_stamp(config, 0, data)
  assert warm == stages.warmup_stamp(old, 0, data)
  assert (fields.affecting(config, fields.S) ==
          fields.affecting(old, fields.S))
  assert config_lib.run_identity(config) == config_lib.run_identity(old)
  # Any other value is part of both.
  for path, value in [("dataset.label_noise", 0.2),
                      ("selection.fit_filter", 0.75),
                      ("dataset.label_noise_kind", "pairs:mnist")]:
    other = copy.deepcopy(config)
    *parents, leaf = path.split(".")
    node = other
    for p in parents:
      node = node[p]
    setattr(node, leaf, value)
    assert config_lib.run_identity(other) != config_lib.run_identity(config)
  noisy = default.get_config()
  noisy.dataset.label_noise = 0.2
  assert stages.warmup_stamp(noisy, 0, data) != warm
  opts = config_lib.selection_options(config)
  sel = stages.selection_stamp(warm, config, "mrmc", 0.3, opts)
  off = config_lib.selection_options(
      base.set_fields(default.get_config(), {"selection.fit_filter": 0.75}))
  assert sel != stages.selection_stamp(warm, config, "mrmc", 0.3, off)
  fit_filter = options.declared()["fit_filter"]
  assert fit_filter.omitted(0.0) and fit_filter.omitted(0)
  assert not fit_filter.omitted(0.75) and not fit_filter.omitted(False)


def test_a_workdir_written_before_a_field_resumes(tmp_path):
  from mrmc_jax.runner import workdir as wd  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  identity = config_lib.run_identity(config)
  for stored in (config_lib.run_identity(_without(config, ADDED)),
                 # An earlier build that stored the field at that value.
                 {**identity, "selection": {**identity["selection"],
                                            "fit_filter": 0.0}}):
    workdir = str(tmp_path / f"w{len(os.listdir(tmp_path))}")
    os.makedirs(workdir)
    wd.write_json(os.path.join(workdir, "config.json"), stored)
    wd.check_workdir(workdir, "main", identity)  # Accepted.
  stored = {**identity, "selection": {**identity["selection"],
                                      "fit_filter": 0.5}}
  workdir = str(tmp_path / "changed")
  os.makedirs(workdir)
  wd.write_json(os.path.join(workdir, "config.json"), stored)
  with pytest.raises(wd.ConfigMismatchError, match="selection.fit_filter: "
                     "stored 0.5, given '<missing>'"):
    wd.check_workdir(workdir, "main", identity)
