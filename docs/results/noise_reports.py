"""Rewrites a noise grid's reports from its finished cells of given seeds.

  PYTHONPATH=. python docs/results/noise_reports.py WORKDIR SEEDS OUT

Reads `cells/*/ratio_*/seed_<s>/summary.json` of WORKDIR for the seeds in
SEEDS (e.g. 0,1: the seeds every method finished) and writes results.csv,
results.md, accuracy.png and cost.png to OUT with `runner.compare`'s report
functions (the grid's methods and ratios, 15 training epochs).
"""

import glob
import json
import os
import sys

from mrmc_jax.runner import compare

SPECS = ["random", "mrmc", "mrmc_ra", "dual", "el2n", "ccs", "moderate",
         "full"]
RATIOS = [0.5, 0.3, 0.1]


def main(workdir, seeds, out):
  seeds = [int(s) for s in seeds.split(",")]
  rows = []
  for seed in seeds:
    for spec in SPECS:
      for ratio in ([1.0] if spec == "full" else RATIOS):
        path = os.path.join(workdir, "cells", compare.slug(spec),
                            f"ratio_{ratio:g}", f"seed_{seed}",
                            "summary.json")
        if os.path.exists(path):
          with open(path) as f:
            rows.append(json.load(f))
  os.makedirs(out, exist_ok=True)
  compare.write_reports(out, rows, SPECS, RATIOS, full_epochs=15.0)
  print(f"{len(rows)} cells -> {out}")


if __name__ == "__main__":
  main(*sys.argv[1:])
