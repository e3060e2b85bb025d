"""Every config file loads and passes validation; presets and overrides."""

import importlib
import os

import pytest

from configs import base
from configs import default
from mrmc_jax.methods import options
from mrmc_jax.methods import registry
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import fields
from mrmc_jax.runner import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
               if f.endswith(".py") and f not in ("__init__.py", "base.py"))


@pytest.mark.parametrize("name", NAMES)
def test_config_validates(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  config_lib.validate_config(config)


def test_paper_preset_and_overrides():
  from configs import cifar10  # pylint: disable=g-import-not-at-top
  config = cifar10.get_config("paper,selection.ratio=0.1,train.epochs=3")
  assert not config.selection.class_balanced
  assert config.selection.max_initial_ratio == 1e30
  assert config.selection.ratio == 0.1 and config.train.epochs == 3
  quick = cifar10.get_config("quick")
  assert quick.train.epochs == 5 and quick.selection.warmup_epochs == 2
  assert base.presets("quick,a.b=1,paper") == {"quick", "paper"}


@pytest.mark.parametrize("name", NAMES)
def test_every_field_states_what_it_affects(name):
  config = importlib.import_module(f"configs.{name}").get_config()
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
