"""Which warm-up signal finds the flipped labels? AUROC per statistic.

  PYTHONPATH=. python docs/results/noise_signals.py runs/noise_0.2/fashion_mnist 0

Reads a label-noise comparison workdir (`noise/flipped.npy`, the warm-up
artefacts of seed S, and the stored scores of the cells at ratio 0.3) and
prints, for each statistic, the AUROC of "this example is flipped" when
ranked by it (1.0: every flipped example above every clean one; 0.5:
chance). Statistics from MRMC's fit use the package defaults (epochs
skipped, bound, offset), as `mrmc` does.
"""

import glob
import json
import os
import sys

import numpy as np

from mrmc_jax import methods
from mrmc_jax.methods import mrmc
from mrmc_jax import scoring


def auroc(score, positive):
  """AUROC of `score` (float [N]) for bool [N] `positive`, ties averaged."""
  order = np.argsort(score, kind="stable")
  ranks = np.empty(len(score))
  s = score[order]
  # Average ranks of tied values.
  _, first, counts = np.unique(s, return_index=True, return_counts=True)
  avg = first + (counts - 1) / 2.0
  ranks[order] = np.repeat(avg, counts) + 1
  p = positive.sum()
  n = len(score) - p
  return (ranks[positive].sum() - p * (p + 1) / 2) / (p * n)


def main(workdir, seed):
  flipped = np.load(os.path.join(workdir, "noise", "flipped.npy"))
  art = dict(np.load(os.path.join(workdir, "warmup", f"seed_{seed}",
                                  "warmup", "artefacts.npz")))
  n = art["loss"].shape[0]
  pos = np.zeros(n, bool)
  pos[flipped] = True
  opts = methods.SelectionOptions()
  loss, q, w, epochs = mrmc.fit_from_artefacts(art, opts)
  fit = np.asarray(scoring.fitted_curve(q, w, epochs))
  stats = {
      "last-epoch loss": art["loss"][:, -1],
      "mean loss": art["loss"].mean(1),
      "1 - mean true-class probability": 1 - art["p_true"].mean(1),
      "MRMC fit: rms residual": np.sqrt(((loss - fit) ** 2).mean(1)),
      "MRMC fit: relative rms residual": np.sqrt(((loss - fit) ** 2).mean(1))
                                          / (loss.mean(1) + 1e-6),
      "MRMC fit: 1 / decay rate (log w)": -np.log(np.asarray(w)),
      "late rise (last - min loss)": art["loss"][:, -1] - art["loss"].min(1),
      "MRMC fit: fitted loss at the last epoch (fit_filter's statistic)":
          mrmc.fitted_last_loss(art, opts),
  }
  for path in sorted(glob.glob(os.path.join(
      workdir, "cells", "*", "ratio_0.3", f"seed_{seed}", "coreset",
      "scores.npy"))):
    name = path.split(os.sep)[-5]
    if name != "random":
      stats[f"{name} score (ratio 0.3)"] = np.load(path)
  print(f"{workdir}, seed {seed}: {pos.sum()} of {n} flipped\n")
  print("| statistic | AUROC for flipped |\n|---|---|")
  for k, v in stats.items():
    print(f"| {k} | {auroc(np.asarray(v, np.float64), pos):.3f} |")
  # fit_filter's cut: what it leaves out, and how many flipped it keeps.
  last = mrmc.fitted_last_loss(art, opts)
  with open(os.path.join(workdir, "data.json")) as f:
    num_classes = int(json.load(f)["num_classes"])
  print("\n| fit_filter | left out | of them flipped | flipped kept |"
        "\n|---|---|---|---|")
  for level in (0.5, 0.75, 1.0, 1.5):
    out = last > level * np.log(num_classes)
    print(f"| {level:g} | {out.mean():.1%} | {pos[out].mean():.1%} | "
          f"{(pos & ~out).sum() / pos.sum():.1%} |")


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
