"""Label noise: a seeded share of a split's labels flipped to another class.

Two protocols, chosen by `kind` (`parse_kind`):
- "symmetric" (the label-noise papers: DUAL, Moderate, CCS, D2): exactly
  `round(fraction * N)` examples of the split, drawn without replacement,
  each get a label drawn uniformly from the OTHER classes.
- class-conditional, given by a target matrix `T` (`C x C`, zero diagonal,
  each row summing to 1, or all zero for a class that is never flipped):
  in every class i with a nonzero row exactly `round(fraction * n_i)` of
  its examples are flipped, each to a class j drawn with probability
  `T[i, j]`. Real label noise confuses look-alike classes; the forms are
  "pairs:<map>" (a named look-alike map, `LOOKALIKE_MAPS`),
  "pairs:<a-b,c>d,...>" (a pair list: `a-b` flips a to b and b to a, `c>d`
  flips c to d only; a class in several pairs flips uniformly to its
  partners; `;` also separates pairs, for config strings that split on
  commas) and "matrix:<path>" (the `C x C` matrix, `.npy` or text, read
  by the caller and checked by `check_targets`).
A flipped label always differs from the original. Test splits are never
touched; the runner applies the noise to the training split and, when a
validation split is carved from it, to that split too (a held-out part of
a noisy training set carries the same noise), each with its own stream of
the one seed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import numpy as np

from mrmc_jax import validation
from mrmc_jax.data import splits

SYMMETRIC = "symmetric"
KINDS = (SYMMETRIC, "pairs:<map name>", "pairs:<a-b,c>d,...>",
         "matrix:<path>")
# A target matrix's rows must sum to 1 within this tolerance (or be zero).
_ROW_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class LookalikeMap:
  """A named set of look-alike class pairs of one label set.

  Attributes:
    pairs: `(a, b)` class ids; each pair flips both ways.
    num_classes: C of the label set.
    datasets: the `dataset.name`s whose class ids the pairs refer to (a
      tfds name also as `tfds:<name>`, with or without a version).
    doc: the pairs in words.
  """
  pairs: tuple[tuple[int, int], ...]
  num_classes: int
  datasets: tuple[str, ...]
  doc: str


LOOKALIKE_MAPS: dict[str, LookalikeMap] = {
    # Class ids are the digits themselves.
    "mnist": LookalikeMap(
        ((1, 7), (3, 8), (4, 9), (5, 6)), 10,
        ("digits", "mnist5k", "mnist_idx", "mnist"),
        "1<->7, 3<->8, 4<->9, 5<->6 (0 and 2 are never flipped)"),
    # 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal,
    # 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
    "fashion_mnist": LookalikeMap(
        ((0, 6), (2, 4), (7, 9)), 10,
        ("fashion_mnist_idx", "fashion_mnist"),
        "T-shirt/top<->Shirt, Pullover<->Coat, Sneaker<->Ankle boot "
        "(Trouser, Dress, Sandal and Bag are never flipped)"),
}


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


def parse_kind(kind: str) -> tuple[str, str]:
  """Splits a noise kind into its form and argument.

  Args:
    kind: one of `KINDS`.

  Returns:
    `("symmetric", "")`, `("pairs", map name or pair list)` or
    `("matrix", path)`.

  Raises:
    ValueError: one line naming the bad kind and the allowed forms (an
      unknown map name or a malformed pair list included).
  """
  allowed = ", ".join(KINDS)
  if not isinstance(kind, str):
    raise ValueError(f"label_noise_kind={kind!r} is not allowed: use one of "
                     f"{allowed}.")
  if kind == SYMMETRIC:
    return SYMMETRIC, ""
  form, sep, arg = kind.partition(":")
  arg = arg.strip()
  if not sep or form not in ("pairs", "matrix") or not arg:
    raise ValueError(f"label_noise_kind={kind!r} is not allowed: use one of "
                     f"{allowed}.")
  if form == "pairs" and arg not in LOOKALIKE_MAPS:
    if not re.fullmatch(r"\d+[->]\d+([,;]\d+[->]\d+)*",
                        arg.replace(" ", "")):
      raise ValueError(
          f"label_noise_kind={kind!r} is not allowed: after 'pairs:' name a "
          f"look-alike map ({', '.join(LOOKALIKE_MAPS)}) or list class "
          "pairs, e.g. 'pairs:1-7,3>8' (a-b both ways, c>d one way).")
  return form, arg


def pair_targets(spec: str, num_classes: int,
                 dataset: Optional[str] = None) -> np.ndarray:
  """The target matrix of a named look-alike map or a pair list.

  Args:
    spec: a `LOOKALIKE_MAPS` name, or pairs `a-b` (both ways) and `c>d`
      (one way), comma-separated.
    num_classes: C of the data set.
    dataset: its `dataset.name`; a named map is refused for a data set it
      was not written for (its class ids would mean other classes). None
      skips that check.

  Returns:
    float64 `[C, C]`: row i uniform over class i's partners, zero for a
    class without partners.

  Raises:
    ValueError: a map for another data set or label count, a class id
      outside [0, C), a class paired with itself, or a malformed list.
  """
  validation.check_int(num_classes, "num_classes", minimum=2)
  if spec in LOOKALIKE_MAPS:
    m = LOOKALIKE_MAPS[spec]
    if m.num_classes != num_classes or (
        dataset is not None and _tfds_base(dataset) not in m.datasets):
      raise ValueError(
          f"label_noise_kind='pairs:{spec}' is not allowed for dataset "
          f"{dataset!r} with {num_classes} classes: the map is written for "
          f"{', '.join(m.datasets)} ({m.num_classes} classes); list the "
          "pairs instead, e.g. 'pairs:1-7,3-8'.")
    edges = [e for a, b in m.pairs for e in ((a, b), (b, a))]
  else:
    parse_kind(f"pairs:{spec}")  # The syntax, with its one-line refusal.
    edges = []
    for item in re.split(r"[,;]", spec.replace(" ", "")):
      both = "-" in item
      a, b = (int(x) for x in re.split(r"[->]", item))
      if not (0 <= a < num_classes and 0 <= b < num_classes) or a == b:
        raise ValueError(
            f"label_noise_kind pair {item!r} is not allowed: both classes "
            f"must differ and lie in [0, {num_classes}).")
      edges += [(a, b), (b, a)] if both else [(a, b)]
  adjacency = np.zeros((num_classes, num_classes))
  for a, b in edges:
    adjacency[a, b] = 1.0
  rows = adjacency.sum(axis=1, keepdims=True)
  return np.divide(adjacency, rows, out=np.zeros_like(adjacency),
                   where=rows > 0)


def _tfds_base(name: str) -> str:
  """`tfds:mnist:3.0.1` and `mnist:3.0.1` as `mnist`; other names as is."""
  return name.removeprefix("tfds:").split(":")[0]


def check_targets(matrix: np.ndarray, num_classes: int,
                  name: str = "the target matrix") -> np.ndarray:
  """Checks a class-conditional target matrix; returns it as float64.

  Args:
    matrix: `[C, C]`, entry `[i, j]` the probability that a flipped label
      of class i becomes j: entries in [0, 1], zero diagonal, each row
      summing to 1 (within 1e-6) or all zero (class i is never flipped),
      at least one nonzero row.
    num_classes: C.
    name: how the one-line errors name the matrix (e.g. its file).

  Returns:
    float64 `[C, C]`, each nonzero row renormalised to sum exactly to 1.

  Raises:
    ValueError: one line naming the first violation.
  """
  m = np.asarray(matrix, dtype=np.float64)
  c = int(num_classes)
  if m.shape != (c, c):
    raise ValueError(f"{name} has shape {m.shape}; the data set has {c} "
                     f"classes, so it must be {c} x {c}.")
  if not np.isfinite(m).all() or (m < 0).any() or (m > 1).any():
    raise ValueError(f"{name} holds entries outside [0, 1] (or NaN); each "
                     "entry is a probability.")
  if np.diagonal(m).any():
    i = int(np.flatnonzero(np.diagonal(m))[0])
    raise ValueError(f"{name} has {m[i, i]:g} on the diagonal (class {i}); "
                     "it must be 0: a flipped label goes to another class "
                     "(label_noise sets how many flip).")
  sums = m.sum(axis=1)
  bad = np.flatnonzero((sums != 0) & (np.abs(sums - 1.0) > _ROW_TOL))
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"{name} row {i} sums to {sums[i]:.6g}; each row must "
                     "sum to 1 (or be all zero: a class that is never "
                     "flipped).")
  if not sums.any():
    raise ValueError(f"{name} is all zero: no class would be flipped.")
  return np.divide(m, sums[:, None], out=np.zeros_like(m),
                   where=sums[:, None] > 0)


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int,
                rng: np.random.Generator,
                targets: Optional[np.ndarray] = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """Flips a seeded share of the labels to another class.

  Args:
    labels: int [N], values in [0, num_classes).
    fraction: in [0, 1).
    num_classes: C >= 2.
    rng: the generator drawing the rows, then their new labels.
    targets: None for symmetric noise (exactly `round(fraction * N)` rows,
      uniform over the other classes); else a checked float `[C, C]`
      target matrix (`check_targets`): exactly `round(fraction * n_i)`
      rows of each class i with a nonzero row, class by class in
      ascending order, each flipped to j with probability `targets[i, j]`.

  Returns:
    (noisy int32 [N], flipped rows int64 [K] sorted).
  """
  fraction = check_fraction(fraction)
  if num_classes < 2:
    raise ValueError(f"num_classes={num_classes} is not allowed with label "
                     "noise: a flipped label needs another class.")
  labels = np.asarray(labels)
  noisy = labels.astype(np.int32, copy=True)
  if targets is None:
    n = len(labels)
    k = int(round(fraction * n))
    rows = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    # An offset in [1, C) modulo C: uniform over the C - 1 other classes.
    noisy[rows] = (noisy[rows] + rng.integers(1, num_classes, size=k)
                   ) % num_classes
    return noisy, rows
  targets = check_targets(targets, num_classes)
  picked = []
  for c in np.flatnonzero(targets.sum(axis=1)):
    members = np.flatnonzero(labels == c)
    k = int(round(fraction * members.size))
    rows = rng.choice(members, size=k, replace=False)
    noisy[rows] = rng.choice(num_classes, size=k, p=targets[c])
    picked.append(rows)
  rows = np.sort(np.concatenate(picked)).astype(np.int64)
  return noisy, rows


def add_label_noise(data: splits.Dataset, fraction: float, seed: int, *,
                    targets: Optional[np.ndarray] = None,
                    noisy_test: bool = False
                    ) -> tuple[splits.Dataset, np.ndarray,
                               np.ndarray | None]:
  """The data set with noise in its training labels.

  Args:
    data: a data set held in memory (`ArraySplit`s).
    fraction: share of training labels flipped, in [0, 1) (of every class
      with a nonzero `targets` row, with `targets`).
    seed: int >= 0; the training split draws from the first child of
      `np.random.SeedSequence(seed)`, the `test` split (only with
      `noisy_test`) from the second.
    targets: None (symmetric noise) or a `[C, C]` target matrix
      (`check_targets`; `pair_targets` builds one from look-alike pairs).
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
  if targets is not None:
    targets = check_targets(targets, data.num_classes)
  train_rng, test_rng = (np.random.default_rng(s) for s in
                         np.random.SeedSequence(int(seed)).spawn(2))

  def noisy(split, rng):
    labels, rows = flip_labels(split.labels, fraction, data.num_classes, rng,
                               targets)
    return (splits.ArraySplit(split.images, labels, split.id_offset),
            split.ids[rows])

  train, flipped = noisy(data.train, train_rng)
  test, flipped_test = data.test, None
  if noisy_test and data.test is not None:
    test, flipped_test = noisy(data.test, test_rng)
  return dataclasses.replace(data, train=train, test=test), flipped, \
      flipped_test


def flipped_share_by_class(mask: np.ndarray, flipped: np.ndarray,
                           labels: np.ndarray, num_classes: int
                           ) -> np.ndarray:
  """Per class, the share of a core-set's examples whose label was flipped.

  Args:
    mask: bool `[N]`, the core-set.
    flipped: int `[F]` rows (training ids) whose labels were flipped.
    labels: int `[N]`, the (noisy) training labels the core-set carries.
    num_classes: C.

  Returns:
    float64 `[C]`: among the kept examples labelled c, the flipped
    fraction; NaN for a class with no kept example.
  """
  mask = np.asarray(mask, bool)
  labels = np.asarray(labels, np.int64)
  is_flipped = np.zeros(mask.shape[0], bool)
  is_flipped[np.asarray(flipped, np.int64)] = True
  kept = np.bincount(labels[mask], minlength=num_classes)
  bad = np.bincount(labels[mask & is_flipped], minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(kept > 0, bad / np.maximum(kept, 1), np.nan)
