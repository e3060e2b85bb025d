"""The full set of config fields, with their defaults; every config starts here.

Every field is declared once, with its default, its doc and the stages it
affects (warm-up, selection, training), in `mrmc_jax/runner/fields.py`;
the `selection.*` option fields come from the options each method module
declares (`mrmc_jax/methods/options.py`). README.md lists them all.
A method spec (`selection.method`, `compare.methods` entries) may carry
option overrides, e.g. "mrmc(loss_source=eval;skip_epochs=2)".
"""

import ml_collections

from mrmc_jax.runner import config as runner_config
from mrmc_jax.runner import fields
# `set_fields` has an argument named `fields`.
from mrmc_jax.runner import fields as fields_lib  # pylint: disable=reimported


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the base config (the digits default's shape, paper optimiser)."""
  return fields.base_config()


def apply_overrides(config: ml_collections.ConfigDict, arg: str | None,
                    known: tuple[str, ...] = ()
                    ) -> ml_collections.ConfigDict:
  """Applies `key=value,...` from a config string argument.

  `--config=configs/cifar10.py:quick,selection.ratio=0.1` gives arg
  `"quick,selection.ratio=0.1"`; bare words are presets (`paper` is handled
  here, others by the config file, which names them in `known`), `a.b=v`
  pairs set fields (values parsed as Python literals).

  Raises:
    ValueError: a bare word that is neither `paper` nor in `known` (a
      typo would otherwise silently run the config without its preset).
  """
  import ast
  if not arg:
    return config
  unknown = sorted(presets(arg) - {"paper", *known})
  if unknown:
    raise ValueError(f"unknown preset {unknown[0]!r}: this config knows "
                     f"{', '.join(sorted({'paper', *known}))} (and "
                     "field=value overrides).")
  if "paper" in presets(arg):
    paper_preset(config)
  items = []
  for item in arg.split(","):
    if "=" not in item:
      continue
    key, value = item.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    items.append((key.strip(), value))
  # The user's methods first: their options become fields to override.
  items.sort(key=lambda kv: kv[0] != "selection.plugins")
  for key, value in items:
    set_fields(config, {key: value})
    if key == "selection.plugins":
      runner_config.load_plugins(config)
      fields.add_option_fields(config)
  return config


def set_fields(config: ml_collections.ConfigDict, fields: dict
               ) -> ml_collections.ConfigDict:
  """Sets dotted fields, e.g. `{"train.epochs": 1}`; returns the config.

  Raises:
    ValueError: an unknown field, named with the closest known one.
  """
  for key, value in fields.items():
    fields_lib.check_field(config, key)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def presets(arg: str | None) -> set[str]:
  """Bare words of a config string argument, e.g. {"quick"}."""
  return {w.strip() for w in (arg or "").split(",")
          if w.strip() and "=" not in w}


def without_presets(arg: str | None, words) -> str:
  """`arg` less the given bare words (for a config that handles them)."""
  return ",".join(w for w in (arg or "").split(",")
                  if w.strip() and w.strip() not in words)


def paper_preset(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """MRMC exactly as the paper writes it, for reproducing its setting.

  Global top-k without class quotas, the literal score q(1 - w^-R) fitted on
  epochs 1..R with (practically) no bound on the extrapolated epoch-0 loss,
  the training-pass loss, no burn-in, and MRMC-R's regulariser on the raw
  score scale. `configs/X.py:paper` selects it. The values are declared by
  the method options themselves (`Option.paper`).
  """
  return set_fields(config, fields.paper_values())

