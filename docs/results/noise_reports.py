"""Rewrites a noise grid's reports from its finished cells of given seeds.

  PYTHONPATH=. python docs/results/noise_reports.py WORKDIRS SEEDS OUT \
      [PRIOR_CSV | --all]

Reads `cells/*/ratio_*/seed_<s>/summary.json` of each workdir in WORKDIRS
(comma-separated: a grid's seeds may have run in separate workdirs) for
the seeds in SEEDS (e.g. 0,1,2), adds the rows of PRIOR_CSV (an earlier
report's results.csv, for cells whose workdir is gone) that no workdir
holds, and writes results.csv, results.md, accuracy.png and cost.png to
OUT with `runner.compare`'s report functions (the methods in SPECS, in
that order, the grid's ratios, 15 training epochs). With `--all`, every
method with a finished cell in the workdirs is reported, in the order of
their first finished cell (a grid extended by several rounds, as the
validation grids, whose own results.csv holds the last round only).
"""

import csv
import glob
import json
import os
import sys

from mrmc_jax.runner import compare

SPECS = ["random", "mrmc", "mrmc_ra", "mrmc(fit_filter=0.75)",
         "mrmc_ra(fit_filter=0.75;ra_form=uniform)", "dual", "el2n", "ccs",
         "moderate", "full"]
RATIOS = [0.5, 0.3, 0.1]
_INTS = ("seed", "num_selected", "num_examples", "warmup_epochs",
         "train_steps", "full_steps_per_epoch", "num_flipped",
         "num_flipped_selected")


def read_csv(path, seeds):
  """The rows of a results.csv, typed as the cells' summary.json."""
  rows = []
  with open(path) as f:
    for r in csv.DictReader(f):
      if int(r["seed"]) not in seeds:
        continue
      row = {}
      for k, v in r.items():
        if k == "method" or v == "":
          row[k] = v if k == "method" else None
        elif k in _INTS:
          row[k] = int(float(v))
        else:
          row[k] = float(v)
      rows.append(row)
  return rows


def main(workdirs, seeds, out, prior=None):
  seeds = [int(s) for s in seeds.split(",")]
  specs = SPECS
  if prior == "--all":
    prior, found = None, []
    for workdir in workdirs.split(","):
      paths = glob.glob(os.path.join(workdir, "cells", "*", "ratio_*",
                                     "seed_*", "summary.json"))
      for path in sorted(paths, key=os.path.getmtime):
        with open(path) as f:
          found.append(json.load(f)["method"])
    specs = list(dict.fromkeys(found))
  rows = []
  for workdir in workdirs.split(","):
    for seed in seeds:
      for spec in specs:
        for ratio in ([1.0] if spec == "full" else RATIOS):
          path = os.path.join(workdir, "cells", compare.slug(spec),
                              f"ratio_{ratio:g}", f"seed_{seed}",
                              "summary.json")
          if os.path.exists(path):
            with open(path) as f:
              rows.append(json.load(f))
  # A cell in several workdirs (a check rerun): the first workdir's.
  key = lambda r: (r["method"], float(r["ratio"]), int(r["seed"]))
  rows = list({key(r): r for r in reversed(rows)}.values())[::-1]
  have = {key(r) for r in rows}
  if prior:
    rows += [r for r in read_csv(prior, seeds)
             if (r["method"], r["ratio"], r["seed"]) not in have
             and r["method"] in specs]
  rows.sort(key=lambda r: (r["seed"], specs.index(r["method"]),
                           -float(r["ratio"])))
  os.makedirs(out, exist_ok=True)
  compare.write_reports(out, rows, specs, RATIOS, full_epochs=15.0)
  print(f"{len(rows)} cells -> {out}")


if __name__ == "__main__":
  main(*sys.argv[1:])
