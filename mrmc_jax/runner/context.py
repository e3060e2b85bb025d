"""What every stage needs: data, model, mesh and explicit settings."""

import dataclasses
from typing import Any, Callable, Iterator, Optional

import flax.linen as nn
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np
import optax

from mrmc_jax import datasets
from mrmc_jax import input_pipeline
from mrmc_jax import models
from mrmc_jax import optim
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax.runner import config as config_lib


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
    optimizer: `optim.make_optimizer` keyword arguments less `total_steps`.
    checkpoint_every: epochs between checkpoints.
  """
  data: datasets.Dataset
  model: nn.Module
  apply_fn: Callable[..., Any]
  mesh: Mesh
  workdir: str
  seed: int
  batch_size: int
  eval_batch_size: int
  augment: bool
  optimizer: dict[str, Any]
  checkpoint_every: int

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.data.train.image_shape

  def train_batches(self, epoch: int, ids: Optional[np.ndarray] = None
                    ) -> Iterator[dict[str, jax.Array]]:
    """Sharded training batches of epoch `epoch` (of `ids`, or all data)."""
    ds = input_pipeline.train_dataset(
        self.data.train, batch_size=self.batch_size, seed=self.seed,
        epoch=epoch, augment=self.augment, mean=self.data.mean,
        std=self.data.std, ids=ids, process_index=jax.process_index(),
        process_count=jax.process_count())
    for b in ds.as_numpy_iterator():
      yield sharding.shard_batch(b, self.mesh)

  def eval_batches(self, split: datasets.ArraySplit
                   ) -> Iterator[dict[str, jax.Array]]:
    """Sharded evaluation batches of a split, padded and masked."""
    ds = input_pipeline.eval_dataset(
        split, batch_size=self.eval_batch_size, mean=self.data.mean,
        std=self.data.std, process_index=jax.process_index(),
        process_count=jax.process_count())
    for b in ds.as_numpy_iterator():
      yield sharding.shard_batch(b, self.mesh)

  def init_state(self, tx: optax.GradientTransformation,
                 seed_offset: int) -> train_step.TrainState:
    """A fresh replicated state (init from `fold_in(seed, seed_offset)`)."""
    rng = jax.random.fold_in(jax.random.key(self.seed), seed_offset)
    variables = models.init_variables(self.model, rng, self.image_shape)
    state = train_step.create_train_state(variables, tx)
    return sharding.replicate(state, self.mesh)

  def make_tx(self, total_steps: int) -> optax.GradientTransformation:
    return optim.make_optimizer(total_steps=max(1, total_steps),
                                **self.optimizer)


def make_context(config: ml_collections.ConfigDict, workdir: str) -> Context:
  """Loads the data, builds the model and the mesh (after validation)."""
  data = datasets.load_dataset(
      config.dataset.name, config.dataset.data_dir,
      image_size=(None if config.dataset.image_size is None else
                  (config.dataset.image_size,) * 2))
  fraction = config.dataset.get("validation_fraction", 0.0)
  if fraction:
    # Model choices are made on a split of the training data; the test
    # split is not loaded into the run.
    data = datasets.validation_split(data, fraction,
                                     config.dataset.get("validation_seed", 0))
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
                 checkpoint_every=tr.checkpoint_every_epochs)
