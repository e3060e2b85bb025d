r"""mrmc_jax inside a Flax NNX loop of your own.

The NNX twin of `flax_loop.py`: your `nnx.Module` (Dropout + BatchNorm), your
`nnx.Optimizer`, your loss (label smoothing), your tf.data pipeline. The
warm-up is an `nnx.jit` step that updates the model in place and records
each example's statistics by global id; MRMC scores them and selects a
core-set; the core-set run uses the pure form of the same step
(`nnx.split` once, `jax.jit` with the state donated). Runs on the UCI digits
set that ships with scikit-learn, in well under a minute on 2 CPU cores:

  python examples/nnx_loop.py
"""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flax import nnx  # pylint: disable=g-import-not-at-top
import flax_loop  # the data, loss and constants of the Linen example
import jax
import numpy as np
import optax
import tensorflow as tf

import mrmc_jax as mj

NUM_CLASSES = flax_loop.NUM_CLASSES
WARMUP_EPOCHS = flax_loop.WARMUP_EPOCHS
TRAIN_EPOCHS = flax_loop.TRAIN_EPOCHS
RATIO = flax_loop.RATIO


class Net(nnx.Module):
  """The user's model: an MLP with BatchNorm and Dropout, NNX style."""

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(64, 128, rngs=rngs)
    self.bn = nnx.BatchNorm(128, momentum=0.9, rngs=rngs)
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    self.out = nnx.Linear(128, NUM_CLASSES, rngs=rngs)

  def __call__(self, x, *, mask=None):
    """`mask [B]` keeps padding rows out of BatchNorm's batch statistics."""
    x = self.hidden(x.reshape(x.shape[0], -1))
    x = self.bn(x, mask=None if mask is None else mask[:, None])
    return self.out(self.drop(nnx.relu(x)))


def new_model(seed):
  model = Net(nnx.Rngs(seed, dropout=seed + 100))
  return model, nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9),
                              wrt=nnx.Param)


@functools.partial(nnx.jit, donate_argnums=2)
def warm_step(model, optimizer, traj, batch, epoch):
  """Trains in place on one batch and records its per-example statistics."""
  stats = mj.nnx_train_step(model, optimizer, batch,
                            loss_fn=flax_loop.smoothed_cross_entropy)
  return mj.record(traj, stats, epoch)


def accuracy(graphdef, state, ds) -> float:
  eval_step = jax.jit(mj.make_nnx_eval_step(graphdef))
  correct = count = 0
  for batch in flax_loop.batches(ds, 0, shuffle=False):
    stats = eval_step(state, batch)
    correct += int(np.sum(stats["correct"] & stats["mask"]))
    count += int(np.sum(stats["mask"]))
  return correct / count


def main() -> dict:
  (x_train, y_train), (x_test, y_test) = flax_loop.load_digits()
  n = len(y_train)
  train_ds = flax_loop.as_split(x_train, y_train)
  batches = flax_loop.batches

  # --- README: NNX (start) ---
  model, optimizer = new_model(seed=0)          # nnx.Module + nnx.Optimizer
  traj = mj.init_trajectory(n, WARMUP_EPOCHS)   # [N, R] per field, filled by id
  for epoch in range(WARMUP_EPOCHS):
    for batch in batches(train_ds, epoch):
      traj = warm_step(model, optimizer, traj, batch, epoch)  # updates in place
  mj.check_visits(np.asarray(traj["visits"]))   # every id once per epoch
  scores = mj.mrmc_scores(traj["loss"])         # [N], bounded fit
  mask = mj.select_mask(scores, y_train, RATIO, num_classes=NUM_CLASSES)
  coreset = np.flatnonzero(np.asarray(mask))    # the core-set's ids

  # The pure form of the same step, for jax.jit, make_recording_step, meshes:
  graphdef, state = nnx.split(new_model(seed=2))
  step = jax.jit(mj.make_nnx_train_step(
      graphdef, loss_fn=flax_loop.smoothed_cross_entropy, with_stats=False),
                 donate_argnums=0)
  for epoch in range(TRAIN_EPOCHS):
    for batch in batches(train_ds, epoch, ids=coreset):
      state, _ = step(state, batch)
  # --- README: NNX (end) ---

  return {"mask": np.asarray(mask), "num_selected": int(np.sum(mask)),
          "num_examples": n,
          "warmup_steps": int(optimizer.step[...]),
          "test_accuracy": accuracy(graphdef, state,
                                    flax_loop.as_split(x_test, y_test))}


if __name__ == "__main__":
  tf.config.set_visible_devices([], "GPU")
  out = main()
  print(f"core-set {out['num_selected']} / {out['num_examples']}, "
        f"test accuracy {100 * out['test_accuracy']:.2f}%")
