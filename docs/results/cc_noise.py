"""Tables and per-cell verdicts of a class-conditional noise grid.

  PYTHONPATH=. python docs/results/cc_noise.py WORKDIRS SEEDS METHOD CONTROL \
      [OUT]

Reads every finished `cells/*/ratio_*/seed_<s>/summary.json` of WORKDIRS
(comma-separated: one workdir per seed) for
the seeds in SEEDS (e.g. 0,1,2) and prints markdown: accuracy (mean ± std
over the seeds, n) per method and ratio, the core-set's flipped share, and
per ratio the verdict for METHOD: at or above Random's mean, the best mean
of all methods, ahead of CONTROL (the same filter without MRMC's score),
with the paired per-seed differences. A cell counts only where every
reported method has the same seeds. With OUT, also writes results.csv,
results.md, accuracy.png and cost.png there (`runner.compare`'s reports).
"""

import glob
import json
import os
import sys

import numpy as np

from mrmc_jax.runner import compare


def read_cells(workdirs, seeds):
  """{(method, ratio, seed): summary} of the finished cells."""
  cells = {}
  paths = []
  for workdir in workdirs.split(","):
    paths += glob.glob(os.path.join(workdir, "cells", "*", "ratio_*",
                                    "seed_*", "summary.json"))
  for path in paths:
    with open(path) as f:
      s = json.load(f)
    if int(s["seed"]) in seeds:
      cells[(s["method"], float(s["ratio"]), int(s["seed"]))] = s
  return cells


def main(workdirs, seeds, method, control, out=None):
  seeds = [int(s) for s in seeds.split(",")]
  cells = read_cells(workdirs, seeds)
  methods = list(dict.fromkeys(m for m, _, _ in sorted(
      cells, key=lambda k: cells[k].get("sha256", ""))))
  methods = sorted(methods, key=lambda m: (m != "random", m != method,
                                           m != control, m))
  ratios = sorted({r for _, r, _ in cells if r < 1.0}, reverse=True)

  def acc(m, r):
    return np.array([100 * cells[(m, r, s)]["test_accuracy"] for s in seeds
                     if (m, r, s) in cells])

  def noise(m, r):
    return np.mean([cells[(m, r, s)]["coreset_noise"] for s in seeds
                    if (m, r, s) in cells])

  head = "| method | " + " | ".join(f"{r:g}" for r in ratios) + " |"
  rule = "|---" * (len(ratios) + 1) + "|"
  print("Accuracy (%), mean ± std over seeds (n):\n")
  print(head + "\n" + rule)
  for m in methods:
    row = []
    for r in ratios:
      a = acc(m, r)
      row.append("" if not a.size else
                 f"{a.mean():.2f} ± {a.std(ddof=1) if a.size > 1 else 0:.2f}"
                 f" (n={a.size})")
    print(f"| {m} | " + " | ".join(row) + " |")
  print("\nShare of the core-set that is flipped, mean over seeds:\n")
  print(head + "\n" + rule)
  for m in methods:
    print(f"| {m} | " + " | ".join(
        "" if not acc(m, r).size else f"{100 * noise(m, r):.1f}%"
        for r in ratios) + " |")
  print(f"\nVerdict for {method} (control: {control}):\n")
  for r in ratios:
    full = [m for m in methods if acc(m, r).size == len(seeds)]
    if method not in full or "random" not in full:
      print(f"- ratio {r:g}: not all seeds finished; no verdict.")
      continue
    mine = acc(method, r).mean()
    rnd = acc("random", r).mean()
    best = max((m for m in full if m != method), key=lambda m: acc(m, r).mean())
    parts = [f"{mine:.2f} vs Random {rnd:.2f} ({mine - rnd:+.2f}, "
             f"{'at or above' if mine >= rnd else 'BELOW'})",
             f"best other {best} {acc(best, r).mean():.2f} "
             f"({mine - acc(best, r).mean():+.2f}, "
             f"{'best mean' if mine >= acc(best, r).mean() else 'NOT best'})"]
    if control in full:
      d = acc(method, r) - acc(control, r)
      parts.append(f"control {acc(control, r).mean():.2f} ({d.mean():+.2f}; "
                   f"per seed {', '.join(f'{x:+.2f}' for x in d)})")
    ok = mine >= rnd and mine >= acc(best, r).mean()
    print(f"- ratio {r:g}: " + "; ".join(parts) +
          f": {'met' if ok else 'NOT met'}.")
  if out:
    rows = [cells[k] for k in sorted(
        cells, key=lambda k: (k[2], methods.index(k[0]), -k[1]))]
    os.makedirs(out, exist_ok=True)
    compare.write_reports(out, rows, methods, ratios, full_epochs=15.0)


if __name__ == "__main__":
  main(*sys.argv[1:])
