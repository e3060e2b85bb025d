"""Config checks (before any expensive work) and the settings they imply.

The only module that turns a config into explicit arguments: the rest of the
runner, and the library, take those arguments.
"""

import copy
import json
import math
from typing import Any

import jax.numpy as jnp
import ml_collections

from mrmc_jax import data
from mrmc_jax import methods
from mrmc_jax import models
from mrmc_jax import optim
from mrmc_jax import selection
from mrmc_jax import sharding
from mrmc_jax import validation
from mrmc_jax.runner import fields

BUDGETS = ("epochs", "steps")
WARMUP_SCHEDULES = ("truncated", "own")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _allowed(value, allowed, name):
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not allowed: use one of "
                     f"{', '.join(map(str, allowed))}.")


def selection_options(config: ml_collections.ConfigDict
                      ) -> methods.SelectionOptions:
  """The selection options of the config, as explicit arguments.

  Each declared option with a config field (`selection.<scope>.<name>` or
  `selection.<name>`) takes the config's value (a user method's option
  without one keeps its declared default); `seed` is the run's.
  """
  kw = {k: fields.get(config, f"selection.{o.field}")
        for k, o in methods.declared().items()
        if o.in_config and fields.has(config, f"selection.{o.field}")}
  return methods.SelectionOptions(**kw, seed=config.seed)


def load_plugins(config: ml_collections.ConfigDict) -> None:
  """Imports the user's method files named in `selection.plugins`.

  The config's side of `methods.load_plugins`, which does the loading.

  Raises:
    ValueError: `selection.plugins` is not a string, or an entry that
      `methods.load_plugins` refuses (one line).
  """
  plugins = config.selection.get("plugins") or ""
  if not isinstance(plugins, str):
    raise ValueError(f"selection.plugins={plugins!r} is not allowed: use a "
                     "comma-separated string of .py files or modules.")
  methods.load_plugins(plugins.split(","))


def ratio_free(spec: str) -> bool:
  """Whether a method ignores the ratio (it keeps every example: `full`)."""
  return methods.get_method(methods.parse_spec(spec)[0]).ratio_free


def _check_float(value, name: str, minimum: float = 0.0,
                 positive: bool = False) -> None:
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and
        math.isfinite(value) and value >= minimum and
        (value > minimum or not positive))
  if not ok:
    bound = f"> {minimum}" if positive else f">= {minimum}"
    raise ValueError(f"{name}={value!r} is not allowed: it must be a finite "
                     f"number {bound}.")


def check_spec(spec: str, opts: methods.SelectionOptions,
               warmup_epochs: Any, name: str = "selection.method") -> None:
  """Checks a method spec and the options it resolves to, before any work.

  The options the warm-up length bounds (`skip_epochs`, `epochs`) are
  checked here, so that a spec override such as `mrmc(skip_epochs=9)` is
  refused before the warm-up rather than after it.
  """
  try:
    method, o = methods.resolve(spec, opts, prefix="selection.")
  except TypeError as e:
    raise ValueError(f"{name}={spec!r} is not allowed: {e}") from None
  need = methods.needs([spec], opts)
  if not need:
    return
  # A value from the spec is named with the spec, one from the config by its
  # config field.
  overrides = methods.parse_spec(spec)[1]

  def label(key):
    option = methods.declared()[key]
    if key in overrides:
      return f"{option.name}={getattr(o, key)!r} in {name}={spec!r}"
    return f"selection.{option.field}={getattr(o, key)!r}"

  def check_int(key, minimum, maximum):
    value = getattr(o, key)
    if (isinstance(value, bool) or not isinstance(value, int) or
        not minimum <= value <= maximum):
      raise ValueError(f"{label(key)} is not allowed: it must be an int in "
                       f"[{minimum}, {maximum}] with warmup_epochs="
                       f"{warmup_epochs}.")

  min_r = 2 if "trajectory" in need else 1
  validation.check_int(warmup_epochs, "selection.warmup_epochs",
                       minimum=min_r)
  r = warmup_epochs
  if o.epochs is not None:
    check_int("epochs", min_r, warmup_epochs)
    r = o.epochs
  if ("trajectory" in need
      and "skip_epochs" in methods.get_method(method).options):
    check_int("skip_epochs", 0, r - 2)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ValueError` (one line) on any bad field, before loading data.

  The fields every job reads: each is declared (`fields.check_known`),
  every method option is checked against its declaration, with the config's
  field names in the messages. The method specs and ratios a job runs are
  checked by the job (`check_main`, `compare.plan`, ...).
  """
  sel, tr = config.selection, config.train
  load_plugins(config)
  fields.apply_legacy(config)
  fields.check_known(config)
  validation.check_seed(config.seed)
  methods.check_options(selection_options(config), prefix="selection.")
  _allowed(config.model.name, models.MODEL_NAMES, "model.name")
  _allowed(config.model.dtype, tuple(DTYPES), "model.dtype")
  check_input(config)
  _allowed(tr.budget, BUDGETS, "train.budget")
  _allowed(tr.warmup_schedule, WARMUP_SCHEDULES, "train.warmup_schedule")
  _allowed(tr.optimizer, optim.OPTIMIZERS, "train.optimizer")
  _allowed(tr.schedule, optim.SCHEDULES, "train.schedule")
  for name in ("epochs", "batch_size", "eval_batch_size",
               "checkpoint_every_epochs"):
    validation.check_int(tr[name], f"train.{name}", minimum=1)
  validation.check_int(tr.checkpoint_every_steps,
                       "train.checkpoint_every_steps", minimum=0)
  check_lr_warmup(config)
  _check_float(tr.learning_rate, "train.learning_rate", positive=True)
  _check_float(tr.end_learning_rate, "train.end_learning_rate")
  _check_float(tr.weight_decay, "train.weight_decay")
  _check_float(tr.momentum, "train.momentum")
  validation.check_int(sel.warmup_epochs, "selection.warmup_epochs")
  try:
    sharding.mesh_devices(config.distributed.num_devices)
  except ValueError as e:
    raise ValueError(f"distributed.{e}") from None


def check_main(config: ml_collections.ConfigDict) -> None:
  """experiments/main.py's `selection.method` and `selection.ratio`."""
  spec = config.selection.method
  check_spec(spec, selection_options(config), config.selection.warmup_epochs)
  if not ratio_free(spec):
    validation.check_ratio(config.selection.ratio, "selection.ratio")


def check_input(config: ml_collections.ConfigDict) -> None:
  """`dataset.input` and the validation split it can be cut from."""
  data.check_source(config.dataset.name, input=config.dataset.input,
                    image_size=config.dataset.image_size, prefix="dataset.")
  fraction = config.dataset.validation_fraction
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or (
      not 0.0 <= fraction < 1.0):
    raise ValueError(f"dataset.validation_fraction={fraction!r} is not "
                     "allowed: it must lie in [0, 1) (0: no validation "
                     "split).")
  validation.check_seed(config.dataset.validation_seed,
                        "dataset.validation_seed")
  if fraction and config.dataset.input == "stream":
    raise ValueError(f"dataset.validation_fraction={fraction!r} is not "
                     "allowed with dataset.input='stream': carve the "
                     "validation split from an in-memory data set.")


def check_lr_warmup(config: ml_collections.ConfigDict) -> None:
  """`train.lr_warmup_epochs`: in (0, epochs) with "warmup_cosine", else 0."""
  tr, sel = config.train, config.selection
  e = tr.lr_warmup_epochs
  if tr.schedule != "warmup_cosine":
    if e:
      raise ValueError(f"train.lr_warmup_epochs={e!r} is not allowed with "
                       f"train.schedule={tr.schedule!r}: use warmup_cosine.")
    return
  limit = tr.epochs
  if tr.warmup_schedule == "own":
    limit = min(limit, sel.warmup_epochs)
  if isinstance(e, bool) or not isinstance(e, (int, float)) or not (
      0 < e < limit):
    raise ValueError(f"train.lr_warmup_epochs={e!r} is not allowed: it must "
                     f"lie in (0, {limit}) with train.schedule="
                     "'warmup_cosine'.")


def run_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as stored in `config.json` and checked on resume.

  How a job is launched (coordinator port, process id, mesh size) is not
  part of what it computes: every process must match process 0's
  config.json, and a job relaunched on another port must resume. Fields
  at their `absent` value are left out (`fields.drop_absent`).
  """
  config_json = json.loads(config.to_json_best_effort())
  config_json.pop("distributed", None)
  # How a launch checks its files, not what it computes.
  config_json.get("dataset", {}).pop("rehash_files", None)
  if not config_json.get("selection", {}).get("plugins", True):
    # No user methods: the config.json of workdirs made before the field.
    # (Not an `absent` field: its empty value is part of the stage stamps
    # since 0.2.0, and marking it now would change them.)
    del config_json["selection"]["plugins"]
  # Fields at their `absent` value: the identity of a version without them.
  return fields.drop_absent(config_json)


def check_coreset_size(ratio: float, num_examples: int,
                       name: str = "selection.ratio") -> None:
  """Refuses a ratio whose core-set is empty, once the data size is known."""
  if selection.budget(ratio, num_examples) < 1:
    raise ValueError(f"{name}={ratio!r} is not allowed for {num_examples} "
                     f"training examples: the core-set would be empty (use "
                     f"a ratio >= {1 / num_examples:.3g}).")


def grid_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A comparison's `grid.json`: the config less what a grid may extend.

  The grid's methods, ratios and seeds (`compare.*`), and the single-run
  fields it does not use (`seed`, `selection.method`, `selection.ratio`),
  are left out, so a grid extended by a method, a ratio, a seed or `full`
  reuses the workdir's warm-ups and finished cells.
  """
  ident = copy.deepcopy(run_identity(config))
  ident.pop("compare", None)
  ident.pop("seed", None)
  ident["selection"].pop("method", None)
  ident["selection"].pop("ratio", None)
  return ident


def optimizer_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`optim.make_optimizer` keyword arguments other than the schedule's."""
  tr = config.train
  return dict(optimizer=tr.optimizer, momentum=tr.momentum,
              nesterov=tr.nesterov, weight_decay=tr.weight_decay)


def schedule_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The learning-rate schedule, with its warm-up in epochs."""
  tr = config.train
  return dict(learning_rate=tr.learning_rate, schedule=tr.schedule,
              end_learning_rate=tr.end_learning_rate,
              lr_warmup_epochs=tr.lr_warmup_epochs)


def warmup_settings(config: ml_collections.ConfigDict) -> dict[str, int]:
  """`run_warmup`'s epochs and the length of the schedule it follows."""
  r = config.selection.warmup_epochs
  truncated = config.train.warmup_schedule == "truncated"
  return {"epochs": r, "schedule_epochs": config.train.epochs if truncated
          else r}
