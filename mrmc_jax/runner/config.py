"""Config checks (before any expensive work) and the settings they imply.

The only module that turns a config into explicit arguments: the rest of the
runner, and the library, take those arguments.
"""

import dataclasses
import json
from typing import Any

import jax.numpy as jnp
import ml_collections

from mrmc_jax import methods
from mrmc_jax import models
from mrmc_jax import optim
from mrmc_jax import scoring
from mrmc_jax import sharding
from mrmc_jax import validation

BUDGETS = ("epochs", "steps")
INPUTS = ("memory", "stream")
WARMUP_SCHEDULES = ("truncated", "own")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
LOCAL_DATASETS = ("digits", "mnist5k", "fashion_mnist_idx", "mnist_idx")


def _allowed(value, allowed, name):
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not allowed: use one of "
                     f"{', '.join(map(str, allowed))}.")


def check_dataset_name(name: str) -> None:
  """Accepts the local sources, `npz:`/`folder:`/`tfds:` and tfds names."""
  kind, _, _ = name.partition(":")
  if name in LOCAL_DATASETS or kind in ("npz", "folder", "tfds"):
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if name.split("/")[0] not in tfds.list_builders():
    raise ValueError(f"dataset.name={name!r} is not allowed: use one of "
                     f"{', '.join(LOCAL_DATASETS)}, npz:<path>, "
                     "folder:<path>, or a tfds image-classification name "
                     "(cifar10, cifar100, mnist, fashion_mnist, imagenet2012).")


def selection_options(config: ml_collections.ConfigDict
                      ) -> methods.SelectionOptions:
  """The selection options of the config, as explicit arguments."""
  fields = {f.name for f in dataclasses.fields(methods.SelectionOptions)}
  kw = {k: v for k, v in config.selection.items() if k in fields}
  return methods.SelectionOptions(**kw, seed=config.seed)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises `ValueError` (one line) on any bad field, before loading data."""
  sel, tr = config.selection, config.train
  methods.check_method(sel.method)
  if sel.method != "full":
    validation.check_ratio(sel.ratio, "selection.ratio")
  _allowed(config.model.name, models.MODEL_NAMES, "model.name")
  _allowed(config.model.dtype, tuple(DTYPES), "model.dtype")
  check_dataset_name(config.dataset.name)
  check_input(config)
  _allowed(sel.loss_source, methods.LOSS_SOURCES, "selection.loss_source")
  _allowed(sel.score, scoring.SCORES, "selection.score")
  _allowed(tr.budget, BUDGETS, "train.budget")
  _allowed(tr.warmup_schedule, WARMUP_SCHEDULES, "train.warmup_schedule")
  _allowed(tr.optimizer, optim.OPTIMIZERS, "train.optimizer")
  _allowed(tr.schedule, optim.SCHEDULES, "train.schedule")
  for name in ("epochs", "batch_size", "eval_batch_size",
               "checkpoint_every_epochs"):
    validation.check_int(tr[name], f"train.{name}", minimum=1)
  check_lr_warmup(config)
  opts = selection_options(config)
  methods.resolve(sel.method, opts)
  need = methods.needs([sel.method], opts)
  if "trajectory" in need:
    r = sel.warmup_epochs
    validation.check_int(r, "selection.warmup_epochs", minimum=2)
    if not 0 <= sel.skip_epochs <= r - 2:
      raise ValueError(f"selection.skip_epochs={sel.skip_epochs!r} is not "
                       f"allowed: it must be in [0, {r - 2}] with "
                       f"warmup_epochs={r}.")
  elif need:
    validation.check_int(sel.warmup_epochs, "selection.warmup_epochs",
                         minimum=1)
  try:
    sharding.mesh_devices(config.distributed.num_devices)
  except ValueError as e:
    raise ValueError(f"distributed.{e}") from None


def check_input(config: ml_collections.ConfigDict) -> None:
  """`dataset.input`: "memory", or "stream" for tfds data sets only."""
  _allowed(config.dataset.input, INPUTS, "dataset.input")
  kind = config.dataset.name.partition(":")[0]
  if config.dataset.input == "stream" and (
      config.dataset.name in LOCAL_DATASETS or kind in ("npz", "folder")):
    raise ValueError(f"dataset.input='stream' is not allowed for "
                     f"dataset.name={config.dataset.name!r}: streaming reads "
                     "a tfds data set prepared as ArrayRecord.")


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
  config.json, and a job relaunched on another port must resume.
  """
  config_json = json.loads(config.to_json_best_effort())
  config_json.pop("distributed", None)
  return config_json


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
