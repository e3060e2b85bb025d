"""Copies the comparison outputs into docs/results and builds the ablation
tables (the cells of both ablation rounds plus the random/mrmc/mrmc_r
references of the R = 10 grid, which share seeds, warm-ups and training with
them).

  python docs/results/collect.py [runs/results]
"""

import csv
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = sys.argv[1] if len(sys.argv) > 1 else "runs/results"
REFS = ("random", "mrmc", "mrmc_r")


def rows(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return list(csv.DictReader(f))


def cell(rs):
  acc = np.array([float(r["test_accuracy"]) for r in rs]) * 100
  if not acc.size:
    return "—"
  sd = acc.std(ddof=1) if acc.size > 1 else 0.0
  return f"{acc.mean():.2f} ± {sd:.2f} (n={acc.size})"


for ds in ("fashion_mnist", "mnist"):
  out = os.path.join(HERE, ds)
  os.makedirs(out, exist_ok=True)
  # The comparison at the defaults (R = 5), and with R = 10 in r10/.
  for run, dst in ((ds, out), (f"{ds}_r10", os.path.join(out, "r10"))):
    os.makedirs(dst, exist_ok=True)
    for f in ("results.csv", "results.md", "accuracy.png"):
      src = os.path.join(RUNS, run, f)
      if os.path.exists(src):
        shutil.copy(src, dst)
  main = rows(os.path.join(RUNS, f"{ds}_r10", "results.csv"))
  abl = []
  for part in ("ablation", "ablation2"):
    abl += rows(os.path.join(RUNS, f"{ds}_{part}", "results.csv"))
  if not abl:
    continue
  specs = list(REFS) + list(dict.fromkeys(r["method"] for r in abl))
  lines = ["| method | 0.3 | 0.1 |", "|---|---|---|"]
  for spec in specs:
    src = main if spec in REFS else abl
    lines.append(f"| {spec} | " + " | ".join(
        cell([r for r in src if r["method"] == spec
              and float(r["ratio"]) == ratio]) for ratio in (0.3, 0.1)) + " |")
  with open(os.path.join(out, "ablation.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(out, "ablation.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(abl[0]))
    w.writeheader()
    w.writerows(abl)
  print(ds)
  print("\n".join(lines))
