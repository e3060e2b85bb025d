"""Merges a rerun into docs/results, and tabulates the validation ablation.

The rerun grids (run_all.sh, "seeded ties, DUAL, fixed D2, mrmc_ra") redo
only the methods whose core-sets changed, with the same seeds, warm-ups and
training as the earlier grid; Random's cells reproduce bitwise. This
script replaces those methods' rows of `<ds>/results.csv`, keeps the
others, and rewrites `<ds>/results.md`. It also writes `<ds>/validation.md`
from the validation-split ablation workdirs.

  python docs/results/merge_rerun.py [runs] [--validation-only]
  python docs/results/merge_rerun.py [runs] --issue20

`--issue20` merges only the DUAL and D2 reruns of issue 20 (density over
the windowed mean; D2's floor, cut over the whole set and k = 5) from
`runs/peers_rerun/<ds>` (run_all.sh, `ROUND=issue20`). `--boundary` adds
the `boundary` rows of issue 27 from `runs/boundary/<ds>` (run_all.sh,
`ROUND=issue27_boundary`), whose Random cells (seed 0) must equal the
table's. `--issue27` merges issue 27's round (`ROUND=issue27b`,
`runs/table27{,n,p}_s<seed>/<ds>`): the peers at their new defaults and the
baselines added in 0.3.0 replace or join the rows; the peers' earlier rows
are kept under their variants' names (`EARLIER`); Random's cells must
equal the table's.
"""

import csv
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = "runs"
RATIOS = (0.7, 0.5, 0.3, 0.1)
# The first validated choice of mrmc_ra (workdir final/<ds>_ra, run under
# the defaults of that time), tested before the second validation round.
FIRST_RA = "mrmc_ra(ra_shape=4.0;ra_anchor=0.0)"
ORDER = ("random", "el2n", "grand", "forgetting", "ccs", "moderate",
         "dyn_unc", "d2", "dual", "tdds", "aum", "least_confidence", "margin",
         "entropy", "kcenter", "herding", "boundary", "mrmc", "mrmc_r",
         "mrmc_ra", FIRST_RA)
# Issue 27's round (`ROUND=issue27b`): the peers at their authors'
# selection. Their rows of the earlier defaults stay, under the name of the
# variant that selects as they did (docs/results/README.md); CCS's ties then
# went by id, which no spec reproduces now.
EARLIER = {
    "el2n": "el2n(per_class=True;last_epochs=None)",
    "grand": "grand(per_class=True)",
    "forgetting": "forgetting(per_class=True)",
    "ccs": "ccs(per_class=True;drop=score;difficulty=forgetting), ties by id",
    "moderate": "moderate(per_class=True)",
    "dyn_unc": "dyn_unc(per_class=True)",
    "d2": "d2(split=proportional;cut=p_true)",
    "dual": "dual(per_class=True)",
}


def rows(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return list(csv.DictReader(f))


def stats(rs):
  acc = np.array([float(r["test_accuracy"]) for r in rs]) * 100
  sd = acc.std(ddof=1) if acc.size > 1 else 0.0
  return acc.mean(), sd, acc.size


def table(rs, specs, ratios, mean_col=True, expect_n=3):
  """Mean +- std per spec and ratio; the best of each ratio in bold."""
  means = {}
  for spec in specs:
    for ratio in ratios:
      got = [r for r in rs if r["method"] == spec
             and float(r["ratio"]) == ratio]
      if got:
        means[spec, ratio] = stats(got)
  best = {ratio: max((m[0] for (s, q), m in means.items() if q == ratio),
                     default=None) for ratio in ratios}
  head = "| method | " + " | ".join(f"{q:g}" for q in ratios)
  head += " | mean |" if mean_col else " |"
  lines = [head, "|---|" + "---|" * (len(ratios) + int(mean_col))]
  for spec in specs:
    cells = []
    for ratio in ratios:
      if (spec, ratio) not in means:
        cells.append("—")
        continue
      m, s, n = means[spec, ratio]
      txt = f"{m:.2f} ± {s:.2f}" + ("" if n == expect_n else f" (n={n})")
      cells.append(f"**{txt}**" if m == best[ratio] else txt)
    if mean_col:
      ok = all((spec, q) in means for q in ratios)
      cells.append(f"{np.mean([means[spec, q][0] for q in ratios]):.2f}"
                   if ok else "—")
    lines.append(f"| {spec} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


ISSUE12_NOTE = ("Rerun in this round (seeded ties, new or fixed methods): "
                "{rerun}; the other rows are the earlier grid's, whose "
                "core-sets the tie change left identical.")
ISSUE20_NOTE = ("Rerun in issue 20 (DUAL's density over the windowed mean, "
                "D2 as its reference: floor, cut over the whole set, k = 5): "
                "{rerun}. forgetting, mrmc_ra and its first choice are issue "
                "12's reruns; the other rows are the earlier grid's.")

BOUNDARY_NOTE = ("Added in issue 27: {rerun} (Yang et al. 2024 as a "
                 "third-party reproduction runs it: methods/boundary.py). "
                 "d2 and dual are issue 20's reruns; forgetting, mrmc_ra "
                 "and its first choice issue 12's; the other rows are the "
                 "earlier grid's.")


ISSUE27_NOTE = ("Rerun in issue 27 at the peers' new defaults (their "
                "authors' selection, reference_check.md), and the baselines "
                "added then: {rerun}. The peers' rows of the earlier defaults "
                "are in the second table; boundary, d2's and dual's earlier "
                "rows are issue 27's and 20's; forgetting's earlier row, "
                "mrmc_ra and its first choice issue 12's; the other rows the "
                "first grid's.")


def merge(ds, issue20=False, boundary=False, issue27=False):
  out = os.path.join(HERE, ds)
  old = rows(os.path.join(out, "results.csv"))
  new = []
  if issue27:
    # One workdir per seed; on MNIST the new baselines (`table27n`) and the
    # peers (`table27p`) ran apart.
    for seed in (0, 1, 2):
      for part in ("table27", "table27n", "table27p"):
        new += rows(os.path.join(RUNS, f"{part}_s{seed}", ds, "results.csv"))
    # Finished cells only: a seed stopped part-way keeps its finished rows.
    new = [r for r in new if r.get("test_accuracy")]
  elif boundary:
    # The grid's rows, and Random's seed-0 cells (run_all.sh) as the check.
    grid = os.path.join(RUNS, "boundary", ds)
    new = rows(os.path.join(grid, "results.csv")) + [
        r for r in rows(os.path.join(grid, "random_check.csv"))
        if r["method"] == "random"]
  elif issue20:
    new = rows(os.path.join(RUNS, "peers_rerun", ds, "results.csv"))
  else:
    for sub in ("", "_ra", "_ra2"):
      for r in rows(os.path.join(RUNS, "final", ds + sub, "results.csv")):
        new.append(dict(r, method=FIRST_RA) if sub == "_ra" else r)
  if not new:
    return
  rerun = {r["method"] for r in new} - {"random"}
  # Random was rerun as a check only: its rows must equal the earlier ones.
  for r in new:
    if r["method"] == "random":
      was = [o for o in old if o["method"] == "random"
             and o["ratio"] == r["ratio"] and o["seed"] == r["seed"]]
      if was and was[0]["test_accuracy"] != r["test_accuracy"]:
        raise SystemExit(f"{ds}: random {r['ratio']} seed {r['seed']} "
                         f"{r['test_accuracy']} != {was[0]['test_accuracy']}")
  if issue27:
    # The earlier defaults' rows, renamed to their variants.
    old = [dict(o, method=EARLIER[o["method"]])
           if o["method"] in EARLIER and o["method"] in rerun else o
           for o in old]
  merged = [o for o in old if o["method"] not in rerun]
  merged += [r for r in new if r["method"] != "random"]
  with open(os.path.join(out, "results.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(old[0]), extrasaction="ignore")
    w.writeheader()
    w.writerows(merged)
  full = [r for r in merged if r["method"] == "full"]
  m, s, n = stats(full)
  specs = [x for x in ORDER if any(r["method"] == x for r in merged)]
  note = (ISSUE27_NOTE if issue27 else BOUNDARY_NOTE if boundary
          else ISSUE20_NOTE if issue20 else ISSUE12_NOTE).format(
      rerun=", ".join(sorted(rerun)))
  text = (f"Test accuracy (%), mean ± std over seeds 0-2; full data "
          f"{m:.2f} ± {s:.2f}. {note}\n\n" + table(merged, specs, RATIOS))
  earlier = [v for v in EARLIER.values() if any(r["method"] == v
                                                for r in merged)]
  if earlier:
    text += ("\nThe peers' earlier defaults (0.2.x), as the variants that "
             "select as they did:\n\n" + table(merged, earlier, RATIOS))
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  # The plot of the merged grid (the runner's own plot function).
  from mrmc_jax.runner import compare  # pylint: disable=g-import-not-at-top
  plot_rows = [dict(r, ratio=float(r["ratio"]),
                    test_accuracy=float(r["test_accuracy"])) for r in merged]
  compare.plot(plot_rows, ["full"] + specs, list(RATIOS),
               os.path.join(out, "accuracy.png"))
  print(ds)
  print(text)


def round1_name(spec):
  """Round 1 ran under the first defaults (beta form, cut 0.2, shape 2)."""
  if not spec.startswith("mrmc_ra"):
    return spec
  knobs = {"ra_form": "beta", "ra_cut": "0.2", "ra_shape": "2.0"}
  inner = spec[len("mrmc_ra("):-1] if "(" in spec else ""
  for item in filter(None, inner.split(";")):
    k, _, v = item.partition("=")
    knobs[k] = v
  return ("mrmc_ra(" + ";".join(f"{k}={knobs[k]}" for k in
                                ("ra_form", "ra_cut", "ra_shape")) + ")")


def validation(ds):
  rs = []
  for part in ("val", "val2", "val3", "val4"):
    for r in rows(os.path.join(RUNS, part, ds, "results.csv")):
      if part == "val":
        r = dict(r, method=round1_name(r["method"]))
      # Random, mrmc and dual ran in rounds 1 and 2 on bitwise the same
      # warm-up (same values where both finished); keep the first.
      if not any(q["method"] == r["method"] and q["ratio"] == r["ratio"]
                 and q["seed"] == r["seed"] for q in rs):
        rs.append(r)
  if not rs:
    return
  specs = list(dict.fromkeys(r["method"] for r in rs))
  text = ("Validation accuracy (%) on a stratified 10% of the training "
          "split (`dataset.validation_fraction=0.1`), mean ± std over the "
          "seeds run (n = 2 unless marked).\n\n"
          + table(rs, specs, (0.5, 0.3, 0.1), expect_n=2))
  with open(os.path.join(HERE, ds, "validation.md"), "w") as f:
    f.write(text)
  with open(os.path.join(HERE, ds, "validation.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rs[0]))
    w.writeheader()
    w.writerows(rs)
  print(ds, "validation")
  print(text)


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if not a.startswith("--")]
  RUNS = args[0] if args else RUNS
  for name in ("fashion_mnist", "mnist"):
    if {"--issue20", "--boundary", "--issue27"} & set(sys.argv):
      merge(name, issue20="--issue20" in sys.argv,
            boundary="--boundary" in sys.argv,
            issue27="--issue27" in sys.argv)
      continue
    validation(name)
    if "--validation-only" not in sys.argv:
      merge(name)
