"""Tabulates the ablation behind mrmc_ra's name (docs/results/mrmc_ra_ablation.md).

Reads the comparison workdirs of

  for ds in fashion_mnist mnist; do
    python experiments/compare.py --config=configs/$ds.py \
      --workdir=runs/ra_ablation/$ds --config.compare.ratios=0.3,0.1 \
      --config.compare.seeds=0,1,2 "--config.compare.methods=\
  mrmc_ra(ra_score=shuffled),mrmc_ra,random,mrmc_ra(ra_score=shuffled_rank),\
  mrmc_ra(ra_score=shuffled_anchor)"
    python experiments/compare.py --config=configs/$ds.py \
      --workdir=runs/ra_none/$ds --config.compare.ratios=0.3,0.1 \
      --config.compare.seeds=0,1,2 "--config.compare.methods=\
  mrmc_ra(ra_score=none)"
  done

(the control `ra_score=none` ran later, in its own workdir, on bitwise the
same warm-ups), writes both `results.csv` to `<ds>/ra_ablation.csv` and
prints, per data set
and ratio, test accuracy (mean ± std over seeds) and the paired difference
to `mrmc_ra` (same seed, same warm-up and initialisation; mean ± std of the
per-seed differences).

  python docs/results/ra_ablation.py [runs]
"""

import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = "mrmc_ra"
ORDER = (BASE, "mrmc_ra(ra_score=shuffled)",
         "mrmc_ra(ra_score=shuffled_anchor)",
         "mrmc_ra(ra_score=shuffled_rank)", "mrmc_ra(ra_score=none)",
         "random")
RATIOS = (0.3, 0.1)


def table(rows: list[dict[str, str]]) -> str:
  acc = {}
  for r in rows:
    acc[(r["method"], float(r["ratio"]), int(r["seed"]))] = (
        100 * float(r["test_accuracy"]))
  lines = ["| method | " + " | ".join(
      f"{x:g}: accuracy | {x:g}: minus mrmc_ra (paired)" for x in RATIOS)
           + " |", "|---" * (1 + 2 * len(RATIOS)) + "|"]
  for m in ORDER:
    cells = []
    for ratio in RATIOS:
      seeds = sorted(s for (mm, rr, s) in acc if mm == m and rr == ratio)
      a = np.array([acc[(m, ratio, s)] for s in seeds])
      if not a.size:
        cells += ["-", "-"]
        continue
      cells.append(f"{a.mean():.2f} ± {a.std(ddof=1) if a.size > 1 else 0:.2f}"
                   f" (n={a.size})")
      if m == BASE:
        cells.append("")
        continue
      d = np.array([acc[(m, ratio, s)] - acc[(BASE, ratio, s)] for s in seeds
                    if (BASE, ratio, s) in acc])
      cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) if d.size > 1 else 0:.2f}"
                   f" ({' / '.join(f'{x:+.2f}' for x in d)})")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(runs: str) -> None:
  for ds in ("fashion_mnist", "mnist"):
    rows = []
    for grid in ("ra_ablation", "ra_none"):
      src = os.path.join(runs, grid, ds, "results.csv")
      if os.path.exists(src):
        with open(src) as f:
          rows += list(csv.DictReader(f))
    if not rows:
      print(f"{ds}: no results under {runs}")
      continue
    with open(os.path.join(HERE, ds, "ra_ablation.csv"), "w",
              newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(rows[0]))
      w.writeheader()
      w.writerows(rows)
    print(f"### {ds}\n\n{table(rows)}\n")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "runs")
