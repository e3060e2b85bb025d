r"""mrmc_jax inside a plain Flax + optax loop of your own.

Your model (Dropout + BatchNorm), your flax `TrainState`, your loss (label
smoothing), your arrays: mrmc_jax feeds them with its tf.data pipeline (the
runner's: shuffled by (seed, epoch), padded and masked, each row carrying its
global id), adds per-example statistics to the train step, records them by
id, scores, selects a core-set and restricts the pipeline to its ids. Runs on the UCI digits set that ships with
scikit-learn, in well under a minute on 2 CPU cores:

  python examples/flax_loop.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import flax.linen as nn  # pylint: disable=g-import-not-at-top
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets as sk_datasets
import tensorflow as tf

import mrmc_jax as mj
from mrmc_jax import data
from mrmc_jax.data import pipeline

NUM_CLASSES = 10
BATCH_SIZE = 64
WARMUP_EPOCHS = 8      # R: epochs on all data whose losses MRMC fits
TRAIN_EPOCHS = 15      # epochs on the core-set
RATIO = 0.3


class Net(nn.Module):
  """The user's model: an MLP with BatchNorm and Dropout."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(128)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = nn.Dropout(0.2, deterministic=not train)(x)
    return nn.Dense(NUM_CLASSES)(x)


class State(train_state.TrainState):
  """flax's TrainState plus BatchNorm statistics."""
  batch_stats: dict


def smoothed_cross_entropy(logits, labels):
  """The user's per-example loss, optax style: `[B, C], [B] -> [B]`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, NUM_CLASSES), 0.1)
  return optax.softmax_cross_entropy(logits, targets)


def load_digits():
  """UCI digits as uint8 `[N, 8, 8, 1]` images; a seeded train/test split."""
  d = sk_datasets.load_digits()
  images = (d.images * 15.9375).astype(np.uint8)[..., None]  # 0..16 -> 0..255
  order = np.random.default_rng(0).permutation(len(images))
  test, train = order[:360], order[360:]
  return (images[train], d.target[train]), (images[test], d.target[test])


def as_split(images, labels):
  """Your arrays as a split: row i is the example with global id i."""
  return data.ArraySplit(images, labels)


def batches(split, epoch, ids=None, shuffle=True):
  """Padded, masked batches of `ids` (default all): every example is scored.

  Training batches are shuffled by (seed, epoch); evaluation batches come in
  id order. A core-set passes its ids: its epoch never reads the rest.
  """
  if shuffle:
    ds = pipeline.train_dataset(split, batch_size=BATCH_SIZE, seed=0,
                                epoch=epoch, augment=False, mean=0.5, std=0.5,
                                ids=ids)
  else:
    ds = pipeline.eval_dataset(split, batch_size=BATCH_SIZE, mean=0.5,
                               std=0.5, ids=ids)
  return ds.as_numpy_iterator()


def new_state(model, tx, seed):
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)),
                         train=False)
  return State.create(apply_fn=model.apply, params=variables["params"],
                      batch_stats=variables["batch_stats"], tx=tx)


def accuracy(apply_fn, state, split) -> float:
  eval_step = jax.jit(mj.make_eval_step(apply_fn))
  correct = count = 0
  for batch in batches(split, 0, shuffle=False):
    stats = eval_step({"params": state.params,
                       "batch_stats": state.batch_stats}, batch)
    correct += int(np.sum(stats["correct"] & stats["mask"]))
    count += int(np.sum(stats["mask"]))
  return correct / count


def main() -> dict:
  (x_train, y_train), (x_test, y_test) = load_digits()
  n = len(y_train)
  model = Net()
  train = as_split(x_train, y_train)
  rng = jax.random.key(1)

  # --- README: Library use (start) ---
  apply_fn = mj.module_apply_fn(model)          # Dropout gets its rng, BN its stats
  state = new_state(model, optax.sgd(0.05, momentum=0.9), seed=0)
  step = mj.make_train_step(apply_fn, loss_fn=smoothed_cross_entropy)  # tx: state.tx
  warm_step = jax.jit(mj.make_recording_step(step), donate_argnums=(0, 1))
  traj = mj.init_trajectory(n, WARMUP_EPOCHS)   # [N, R] per field, filled by id
  for epoch in range(WARMUP_EPOCHS):
    for batch in batches(train, epoch):
      state, traj, _ = warm_step(state, traj, batch, epoch, rng)
  mj.check_visits(np.asarray(traj["visits"]))   # every id once per epoch
  scores = mj.mrmc_scores(traj["loss"])         # [N], bounded fit
  mask = mj.select_mask(scores, y_train, RATIO, num_classes=NUM_CLASSES)
  coreset = np.flatnonzero(np.asarray(mask))    # train_dataset(ids=coreset)
  # --- README: Library use (end) ---

  state = new_state(model, optax.sgd(0.05, momentum=0.9), seed=2)
  plain = jax.jit(mj.make_train_step(apply_fn, loss_fn=smoothed_cross_entropy,
                                     with_stats=False), donate_argnums=0)
  for epoch in range(TRAIN_EPOCHS):
    for batch in batches(train, epoch, coreset):
      state, _ = plain(state, batch, rng)
  result = {"mask": np.asarray(mask), "num_selected": int(np.sum(mask)),
            "num_examples": n,
            "test_accuracy": accuracy(apply_fn, state,
                                      as_split(x_test, y_test))}
  return result


if __name__ == "__main__":
  tf.config.set_visible_devices([], "GPU")
  out = main()
  print(f"core-set {out['num_selected']} / {out['num_examples']}, "
        f"test accuracy {100 * out['test_accuracy']:.2f}%")
