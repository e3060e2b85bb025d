"""Symmetric label noise: a seeded fraction of a split's labels flipped.

The protocol of the label-noise papers (DUAL, Moderate, CCS, D2): exactly
`round(fraction * N)` examples, drawn without replacement, each get a label
drawn uniformly from the OTHER classes (a flipped label always differs
from the original). Test splits are never touched; the runner applies this
to the training split and, when a validation split is carved from it, to
that split too (a held-out part of a noisy training set carries the same
noise), each with its own stream of the one seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mrmc_jax import validation
from mrmc_jax.data import splits


def check_fraction(fraction: float) -> float:
  """The noise fraction as a float in [0, 1), or a one-line ValueError."""
  try:
    f = float(fraction)
  except (TypeError, ValueError):
    raise ValueError(f"label_noise={fraction!r} is not allowed: it must be a "
                     "number in [0, 1).") from None
  if not 0.0 <= f < 1.0:
    raise ValueError(f"label_noise={fraction!r} is not allowed: it must lie "
                     "in [0, 1).")
  return f


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Flips exactly `round(fraction * N)` labels to another class.

  Args:
    labels: int [N], values in [0, num_classes).
    fraction: in [0, 1).
    num_classes: C >= 2.
    rng: the generator drawing the rows, then their new labels.

  Returns:
    (noisy int32 [N], flipped rows int64 [K] sorted), K = round(fraction*N).
  """
  fraction = check_fraction(fraction)
  if num_classes < 2:
    raise ValueError(f"num_classes={num_classes} is not allowed with label "
                     "noise: a flipped label needs another class.")
  labels = np.asarray(labels)
  n = len(labels)
  k = int(round(fraction * n))
  rows = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
  noisy = labels.astype(np.int32, copy=True)
  # An offset in [1, C) modulo C: uniform over the C - 1 other classes.
  noisy[rows] = (noisy[rows] + rng.integers(1, num_classes, size=k)
                 ) % num_classes
  return noisy, rows


def add_label_noise(data: splits.Dataset, fraction: float, seed: int, *,
                    noisy_test: bool = False
                    ) -> tuple[splits.Dataset, np.ndarray,
                               np.ndarray | None]:
  """The data set with symmetric noise in its training labels.

  Args:
    data: a data set held in memory (`ArraySplit`s).
    fraction: share of training labels flipped, in [0, 1).
    seed: int >= 0; the training split draws from the first child of
      `np.random.SeedSequence(seed)`, the `test` split (only with
      `noisy_test`) from the second.
    noisy_test: also flip `data.test` (set it when `test` is a validation
      split carved from the training split; a real test split stays clean).

  Returns:
    (data with noisy labels, flipped training ids int64 [K], flipped test
    ids int64 [K'] or None). Images, statistics and ids are unchanged.
  """
  fraction = check_fraction(fraction)
  validation.check_seed(seed, "label_noise_seed")
  if not isinstance(data.train, splits.ArraySplit):
    raise ValueError("label_noise needs dataset.input=memory: streamed "
                     "splits are read by id and cannot be relabelled.")
  train_rng, test_rng = (np.random.default_rng(s) for s in
                         np.random.SeedSequence(int(seed)).spawn(2))

  def noisy(split, rng):
    labels, rows = flip_labels(split.labels, fraction, data.num_classes, rng)
    return (splits.ArraySplit(split.images, labels, split.id_offset),
            split.ids[rows])

  train, flipped = noisy(data.train, train_rng)
  test, flipped_test = data.test, None
  if noisy_test and data.test is not None:
    test, flipped_test = noisy(data.test, test_rng)
  return dataclasses.replace(data, train=train, test=test), flipped, \
      flipped_test
