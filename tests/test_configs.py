"""Every config file loads and passes validation; presets and overrides."""

import importlib
import os

import pytest

from configs import base
from mrmc_jax.runner import config as config_lib

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
