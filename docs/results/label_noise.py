"""Tables and verdict of label_noise.md from the noise grids' results.csv.

  PYTHONPATH=. python docs/results/label_noise.py SEEDS CSV_0.2 CSV_0.4

SEEDS (e.g. 0,1) keeps the seeds that finished for every method. A CSV
whose path holds "validation" is a grid on the noisy validation split.
Prints, per noise level: accuracy mean ± std per method and ratio, the
core-set's share of flipped labels, the total cost, and the goal check: the
best MRMC-family method (a name starting with `mrmc`, less the controls
without MRMC's score: `ra_form=uniform`, `ra_score=none`) against Random
and against every peer's mean at each ratio.
"""

import csv
import sys

import numpy as np

REFERENCE = ("random", "full")


def is_control(method):
  """A control without MRMC's score: not of the MRMC family, not a peer."""
  return "ra_form=uniform" in method or "ra_score=none" in method


def read(path, seeds):
  with open(path) as f:
    rows = [r for r in csv.DictReader(f) if int(r["seed"]) in seeds]
  for r in rows:
    for k in ("ratio", "test_accuracy", "coreset_noise", "flipped_selected",
              "cost_seconds", "cost_epochs"):
      r[k] = float(r[k]) if r.get(k) not in (None, "") else float("nan")
  return rows


def table(rows, level, what="test"):
  methods = list(dict.fromkeys(r["method"] for r in rows))
  ratios = sorted({r["ratio"] for r in rows if r["method"] != "full"},
                  reverse=True)
  acc = {}
  for r in rows:
    acc.setdefault((r["method"], r["ratio"]), []).append(r)
  out = [f"### {100 * level:.0f}% label noise"
         + (", validation split" if what == "validation" else ""), "",
         f"{what.capitalize()} accuracy (%), mean ± std over seeds (n):",
         "",
         "| method | " + " | ".join(f"{x:g}" for x in ratios) + " |",
         "|---|" + "---|" * len(ratios)]
  means = {}
  for m in methods:
    cells = []
    for x in ratios:
      got = acc.get((m, x)) or acc.get((m, 1.0)) if m == "full" else \
          acc.get((m, x))
      if not got:
        cells.append("—")
        continue
      v = 100 * np.array([g["test_accuracy"] for g in got])
      means[(m, x)] = v.mean()
      sd = v.std(ddof=1) if len(v) > 1 else 0.0
      cells.append(f"{v.mean():.2f} ± {sd:.2f} (n={len(v)})")
    out.append(f"| {m}{' (all data)' if m == 'full' else ''} | "
               + " | ".join(cells) + " |")
  out += ["", "Share of the core-set that is flipped (Random: about "
          f"{100 * level:.0f}%), mean over seeds:", "",
          "| method | " + " | ".join(f"{x:g}" for x in ratios) + " |",
          "|---|" + "---|" * len(ratios)]
  for m in methods:
    if m == "full":
      continue
    out.append(f"| {m} | " + " | ".join(
        "—" if not acc.get((m, x)) else
        f"{100 * np.mean([g['coreset_noise'] for g in acc[(m, x)]]):.1f}%"
        for x in ratios) + " |")
  out += ["", "Total cost per cell, median over seeds: seconds "
          "(full-data epochs-equivalent):", "",
          "| method | " + " | ".join(f"{x:g}" for x in ratios) + " |",
          "|---|" + "---|" * len(ratios)]
  for m in methods:
    cells = []
    for x in ratios:
      got = acc.get((m, 1.0 if m == "full" else x))
      cells.append("—" if not got else
                   f"{np.median([g['cost_seconds'] for g in got]):.0f} s "
                   f"({np.median([g['cost_epochs'] for g in got]):.1f})")
    out.append(f"| {m} | " + " | ".join(cells) + " |")
  out += ["", "Goal check (the best MRMC-family mean at each ratio against "
          "Random and against the best peer's mean):", ""]
  family = [m for m in methods if m.startswith("mrmc") and not is_control(m)]
  peers = [m for m in methods if m not in REFERENCE and m not in family
           and not is_control(m)]
  for x in ratios:
    fam = {m: means[(m, x)] for m in family if (m, x) in means}
    peer = {m: means[(m, x)] for m in peers if (m, x) in means}
    if not fam or ("random", x) not in means or not peer:
      continue
    bf = max(fam, key=fam.get)
    bp = max(peer, key=peer.get)
    rnd = means[("random", x)]
    ok = fam[bf] >= rnd and fam[bf] >= peer[bp]
    out.append(f"- ratio {x:g}: {bf} {fam[bf]:.2f} vs random {rnd:.2f} "
               f"({fam[bf] - rnd:+.2f}) and best peer {bp} {peer[bp]:.2f} "
               f"({fam[bf] - peer[bp]:+.2f}): "
               f"{'met' if ok else 'NOT met'}.")
  return "\n".join(out) + "\n"


def main(seeds, *paths):
  seeds = {int(s) for s in seeds.split(",")}
  for path in paths:
    level = 0.4 if "0.4" in path else 0.2
    what = "validation" if "validation" in path else "test"
    print(table(read(path, seeds), level, what))


if __name__ == "__main__":
  main(*sys.argv[1:])
