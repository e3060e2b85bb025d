"""What a comparison cell costs: warm-up + selection + core-set training.

Two units. Epochs-equivalent counts full-data epochs: the warm-up's R
epochs on all data (only for a method that reads a warm-up; Random and
full data read none) plus the core-set training's steps divided by the
steps of one full-data epoch (`epochs * ratio` under `train.budget=epochs`).
Seconds are the measured ones in each cell's summary: the warm-up's (shared
by the methods of a seed, and counted whole for each of them, since a user
running one method pays all of it), the selection's (JAX compilation
excluded) and the training's.

Reuses to pay off: a core-set is selected once and may train many models.
With W the one-off cost (warm-up + selection), C one core-set training and
F one full-data training, k reuses cost W + k C against k F, so selection
pays for itself from the smallest integer k >= W / (F - C) (never when
C >= F).
"""

import math
from typing import Any, Optional


def cell_cost(row: dict[str, Any]) -> dict[str, float]:
  """One cell's cost from its summary.

  Args:
    row: a cell summary with `warmup_epochs` (R if the method reads the
      warm-up, else 0), `warmup_seconds`, `selection_seconds`,
      `train_seconds`, `train_steps` and `full_steps_per_epoch`.

  Returns:
    `cost_epochs`, `cost_seconds`, `oneoff_epochs`, `oneoff_seconds`,
    `train_epochs_equivalent` (the training's full-data epochs).
  """
  uses_warmup = row["warmup_epochs"] > 0
  warm_s = float(row["warmup_seconds"]) if uses_warmup else 0.0
  train_eq = row["train_steps"] / row["full_steps_per_epoch"]
  oneoff_epochs = float(row["warmup_epochs"])
  oneoff_seconds = warm_s + float(row["selection_seconds"])
  return {"cost_epochs": oneoff_epochs + train_eq,
          "cost_seconds": oneoff_seconds + float(row["train_seconds"]),
          "oneoff_epochs": oneoff_epochs, "oneoff_seconds": oneoff_seconds,
          "train_epochs_equivalent": train_eq}


def reuses_to_pay_off(oneoff: float, coreset: float,
                      full: float) -> Optional[int]:
  """Smallest k >= 1 with oneoff + k * coreset <= k * full; None if never.

  Args:
    oneoff: the warm-up and selection's cost (>= 0).
    coreset: one training on the core-set.
    full: one training on all data (same unit).
  """
  if full <= coreset:
    return None
  return max(1, math.ceil(oneoff / (full - coreset) - 1e-12))
