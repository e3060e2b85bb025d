"""What every stage needs: data, model, mesh and explicit settings.

The input statistics (per-channel mean and std of the training images) are
kept in the workdir (`data_stats.json`), so that a relaunch skips the
statistics pass (docs/reliability.md, "Preemption"). Streamed data sets
keep their files' hashes, sizes and modification times (`data_files.json`),
so that a relaunch checks them by metadata and a sampled re-hash
(`data.fingerprints.file_records`) instead of reading every file, and their
labels (`data_labels.npz`), so that it reads no record to get them.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator, Optional

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
import ml_collections
import numpy as np
import optax

from mrmc_jax import data as data_lib
from mrmc_jax import models
from mrmc_jax import optim
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax.data import pipeline as input_pipeline
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import workdir as wd

# The input statistics of a workdir's data.
STATS_FILE = "data_stats.json"
# The streamed files' hashes and metadata, and the streamed splits' labels.
FILES_FILE = "data_files.json"
LABELS_FILE = "data_labels.npz"


@dataclasses.dataclass(frozen=True)
class Context:
  """Loaded data, the model and the settings every stage shares.

  `workdir` is where the stage at hand keeps its checkpoints and outputs; the
  comparison harness points it at one folder per warm-up and per cell, and
  `seed` at the seed of the cell (`dataclasses.replace`).

  Attributes:
    data: the loaded data set.
    model: the Linen classifier; `apply_fn` is its `module_apply_fn`.
    mesh: the data-parallel mesh.
    workdir: the stage's folder.
    seed: model init, data order, augmentation.
    batch_size, eval_batch_size: global batch sizes.
    augment: random crop and flip in training batches.
    optimizer: `optim.make_optimizer` keyword arguments other than the
      schedule's (`config.optimizer_settings`).
    schedule: `learning_rate`, `schedule`, `end_learning_rate` and
      `lr_warmup_epochs` (`config.schedule_settings`).
    checkpoint_every: epochs between checkpoints.
    checkpoint_every_steps: steps of an epoch between mid-epoch checkpoints
      (0: none).
    stats_record: the computed input statistics to keep in the workdir
      (`save_stats`); None when they were read from it.
    flipped: {file name: int ids} of the labels flipped by
      `dataset.label_noise` (`stages.keep_claimed` writes them once the
      workdir is claimed); empty without noise.
    file_records: `data.fingerprints.file_records` of streamed data (kept
      in the workdir by `save_files`); () in memory.
  """
  data: data_lib.Dataset
  model: nn.Module
  apply_fn: Callable[..., Any]
  mesh: Mesh
  workdir: str
  seed: int
  batch_size: int
  eval_batch_size: int
  augment: bool
  optimizer: dict[str, Any]
  schedule: dict[str, Any]
  checkpoint_every: int
  checkpoint_every_steps: int = 0
  stats_record: Optional[dict[str, Any]] = None
  flipped: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  file_records: tuple[dict[str, Any], ...] = ()

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.data.train.image_shape

  def train_batches(self, epoch: int, ids: Optional[np.ndarray] = None,
                    start: int = 0) -> Iterator[dict[str, jax.Array]]:
    """Sharded training batches of epoch `epoch` (of `ids`, or all data),
    from its batch `start` on (a resumed epoch; the same on every process)."""
    ds = input_pipeline.train_dataset(
        self.data.train, batch_size=self.batch_size, seed=self.seed,
        epoch=epoch, augment=self.augment, mean=self.data.mean,
        std=self.data.std, ids=ids, process_index=jax.process_index(),
        process_count=jax.process_count(), start_step=start)
    for b in ds.as_numpy_iterator():
      yield sharding.shard_batch(b, self.mesh)

  def eval_batches(self, split: data_lib.IdSplit
                   ) -> Iterator[dict[str, jax.Array]]:
    """Sharded evaluation batches of a split, padded and masked."""
    ds = input_pipeline.eval_dataset(
        split, batch_size=self.eval_batch_size, mean=self.data.mean,
        std=self.data.std, process_index=jax.process_index(),
        process_count=jax.process_count())
    for b in ds.as_numpy_iterator():
      yield sharding.shard_batch(b, self.mesh)

  def init_state(self, tx: optax.GradientTransformation,
                 seed_offset: int) -> train_step.BatchStatsTrainState:
    """A fresh replicated state (init from `fold_in(seed, seed_offset)`)."""
    rng = jax.random.fold_in(jax.random.key(self.seed), seed_offset)
    variables = models.init_variables(self.model, rng, self.image_shape)
    state = train_step.create_train_state(variables, tx)
    return sharding.replicate(state, self.mesh)

  def schedule_options(self, total_steps: int,
                       steps_per_epoch: int) -> dict[str, Any]:
    """Arguments of `optim.make_schedule` for a stage of this length."""
    sched = self.schedule
    warmup_steps = 0
    if sched["schedule"] == "warmup_cosine":
      warmup_steps = max(1, int(sched["lr_warmup_epochs"] * steps_per_epoch))
    return dict(learning_rate=sched["learning_rate"],
                total_steps=max(1, total_steps), schedule=sched["schedule"],
                end_learning_rate=sched["end_learning_rate"],
                warmup_steps=warmup_steps)

  def make_tx(self, total_steps: int, steps_per_epoch: int
              ) -> optax.GradientTransformation:
    """The optimiser of a stage of `total_steps` updates."""
    return optim.make_optimizer(
        **self.optimizer, **self.schedule_options(total_steps,
                                                  steps_per_epoch))

  def make_schedule(self, total_steps: int,
                    steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule inside `make_tx` (same arguments)."""
    return optim.make_schedule(**self.schedule_options(total_steps,
                                                       steps_per_epoch))


def load_data(config: ml_collections.ConfigDict,
              mean_std: Optional[tuple[np.ndarray, np.ndarray]] = None,
              labels: Optional[dict[str, np.ndarray]] = None
              ) -> data_lib.Dataset:
  """The data set: held in memory, or streamed (`dataset.input`).

  Streamed splits are `StreamSplit`s: every process reads only its rows of
  each batch, and the statistics pass is split between processes. With
  `mean_std` (float [C] each, `cached_stats`) that pass decodes no image;
  with the `labels` too (`cached_labels`) it reads no record.
  """
  return data_lib.load(
      config.dataset.name, config.dataset.data_dir,
      input=config.dataset.input, image_size=config.dataset.image_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      allgather=multihost_utils.process_allgather, mean_std=mean_std,
      labels=labels)


def _stats_source(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config fields the statistics are computed from (JSON form)."""
  ds = config.dataset
  return json.loads(json.dumps(
      {"name": ds.name, "data_dir": ds.data_dir, "input": ds.input,
       "image_size": ds.image_size}, default=list))


def cached_stats(config: ml_collections.ConfigDict, workdir: str
                 ) -> Optional[tuple[np.ndarray, np.ndarray]]:
  """The input statistics `save_stats` kept in `workdir`, or None.

  They are used only if written for the same source (`dataset.name`,
  `data_dir`, `input`, `image_size`) and for the data recorded in the
  workdir's `data.json` (its stamp). The run then checks that the data it
  loaded are those of `data.json` (`workdir.claim`) before any stage, so
  statistics of other data are never used. Process 0 decides, every process
  follows (one broadcast) and reads the file.

  Returns:
    (mean, std), float32 [C] each, or None.

  Raises:
    ValueError: process 0 reads the file and this process cannot (the
      workdir must be a folder every process sees).
  """
  path = os.path.join(workdir, STATS_FILE)
  found = None
  try:
    record = wd.read_json(path)
    data = wd.read_json(os.path.join(workdir, "data.json"))
    if (record["source"] == _stats_source(config) and
        record["data"] == wd.stamp(data)):
      found = tuple(np.asarray(record[k], np.float32) for k in ("mean", "std"))
  except (OSError, ValueError, KeyError, TypeError):
    found = None  # Missing or damaged: computed again, then rewritten.
  return _as_process_0(found, path)


def _as_process_0(found: Any, path: str) -> Any:
  """`found` if process 0 found it too, else None (one broadcast)."""
  use = found is not None
  if jax.process_count() > 1:
    use = bool(multihost_utils.broadcast_one_to_all(np.int32(use)))
  if use and found is None:
    raise ValueError(f"process {jax.process_index()} cannot read {path}, "
                     "which process 0 reads: the workdir must be shared by "
                     "every process")
  return found if use else None


def cached_labels(config: ml_collections.ConfigDict, workdir: str
                  ) -> Optional[dict[str, np.ndarray]]:
  """The streamed splits' labels `save_labels` kept in `workdir`, or None.

  Used only if their hashes are those the workdir's `data.json` records
  (and, by `make_context`, only with the statistics `cached_stats` found);
  the run then checks that the files it streams are those of `data.json`
  (`file_records`, `workdir.claim`), so the labels are those of the files.
  Process 0 decides, every process follows (one broadcast) and reads them.

  Returns:
    {"train": int32 [N], "test": int32 [M]} (test only with a test
    split), or None (in-memory input, none kept, or not those of
    `data.json`).
  """
  if config.dataset.input != "stream":
    return None
  path = os.path.join(workdir, LABELS_FILE)
  found = None
  try:
    data = wd.read_json(os.path.join(workdir, "data.json"))
    labels = wd.read_npz(path)
    if all(data_lib.fingerprints.labels_digest(labels[k]) ==
           data[f"{k}_labels_sha256"] for k in labels) and (
               "test" in labels) == ("test_labels_sha256" in data):
      found = labels
  except (OSError, ValueError, KeyError, TypeError):
    found = None  # Missing or damaged: scanned again, then rewritten.
  return _as_process_0(found, path)


def save_labels(ctx: Context) -> None:
  """Keeps the streamed splits' labels in the workdir (process 0).

  Call once `workdir.claim` has accepted the data (their hashes are in
  `data.json`). Written when missing or damaged; in-memory data keep none.
  """
  if not ctx.file_records or not wd.is_writer():
    return
  path = os.path.join(ctx.workdir, LABELS_FILE)
  labels = {k: np.asarray(v.labels, np.int32) for k, v in
            (("train", ctx.data.train), ("test", ctx.data.test))
            if v is not None}
  try:
    kept = wd.read_npz(path)
    if kept.keys() == labels.keys() and all(
        np.array_equal(kept[k], v) for k, v in labels.items()):
      return
  except (OSError, ValueError):
    pass  # Missing or damaged: written again.
  wd.write_npz(path, **labels)


def save_stats(ctx: Context, data: dict[str, Any]) -> None:
  """Keeps the statistics the run computed in its workdir (process 0).

  Call once the workdir is claimed for `data` (`workdir.claim`), so that a
  refused run writes nothing. Atomic (`workdir.write_json`).

  Args:
    ctx: the run's context.
    data: the data fingerprint recorded in `data.json`.
  """
  if ctx.stats_record is not None and wd.is_writer():
    wd.write_json(os.path.join(ctx.workdir, STATS_FILE),
                  {**ctx.stats_record, "data": wd.stamp(data)})


def known_files(workdir: str) -> list[dict[str, Any]]:
  """The file records `save_files` kept in `workdir`, or [] (none, damaged).

  Each process reads them for its own share of the files: one that cannot
  hashes its share whole, which gives the same digests on the same data.
  """
  try:
    found = wd.read_json(os.path.join(workdir, FILES_FILE))["files"]
    return [r for r in found if isinstance(r, dict)]
  except (OSError, ValueError, KeyError, TypeError):
    return []


def file_records(data: data_lib.Dataset, workdir: str, rehash: bool
                 ) -> tuple[dict[str, Any], ...]:
  """`data.fingerprints.file_records` of the loaded data, checked against
  the records of `workdir` (every process; one collective when several)."""
  # A new sample of blocks at each launch.
  seed = time.time_ns() % 2**32
  return tuple(data_lib.fingerprints.file_records(
      data, known=known_files(workdir), rehash=rehash, seed=seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      allgather=multihost_utils.process_allgather))


def save_files(ctx: Context) -> None:
  """Keeps the file records of `ctx` in its workdir (process 0).

  Call once `workdir.claim` has accepted the data, so that the records kept
  are those of the data in `data.json`. Written only when they changed (a
  first launch, files copied with new modification times).
  """
  if not ctx.file_records or not wd.is_writer():
    return
  records = list(ctx.file_records)
  if known_files(ctx.workdir) != records:
    wd.write_json(os.path.join(ctx.workdir, FILES_FILE), {"files": records})


def make_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """Loads the data, builds the model and the mesh (after validation)."""
  if config.dataset.input == "stream":
    data_lib.fingerprints.check_local(config.dataset.data_dir)
  cached = cached_stats(config, workdir)
  # Kept labels only with kept statistics, which are checked to come from
  # the same source (name, data_dir, input, image_size).
  data = load_data(config, mean_std=cached, labels=None if cached is None
                   else cached_labels(config, workdir))
  record = None if cached is not None else {
      "source": _stats_source(config),
      "mean": np.asarray(data.mean, np.float32).reshape(-1).tolist(),
      "std": np.asarray(data.std, np.float32).reshape(-1).tolist()}
  if config.dataset.validation_fraction:
    # Model choices are made on a split of the training data; the test
    # split is not used by the run.
    data = data_lib.validation_split(data, config.dataset.validation_fraction,
                                     config.dataset.validation_seed)
  model = models.create_model(config.model.name, data.num_classes,
                              dtype=config_lib.DTYPES[config.model.dtype])
  mesh = sharding.make_mesh(
      sharding.mesh_devices(config.distributed.num_devices))
  tr = config.train
  sharding.check_batch_size(tr.batch_size, mesh)
  sharding.check_batch_size(tr.eval_batch_size, mesh)
  return Context(data=data, model=model,
                 apply_fn=train_step.module_apply_fn(model), mesh=mesh,
                 workdir=workdir, seed=config.seed, batch_size=tr.batch_size,
                 eval_batch_size=tr.eval_batch_size, augment=tr.augment,
                 optimizer=config_lib.optimizer_settings(config),
                 schedule=config_lib.schedule_settings(config),
                 checkpoint_every=tr.checkpoint_every_epochs,
                 checkpoint_every_steps=tr.checkpoint_every_steps,
                 stats_record=record,
                 file_records=file_records(data, workdir,
                                           config.dataset.rehash_files))
