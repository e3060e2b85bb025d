"""The proxy warm-up table of warmup_proxy.md from two comparison grids.

  PYTHONPATH=. python docs/results/proxy_table.py DATASET PROXY_CSV SAME_CSV

Both grids ran the same methods, ratios and seeds side by side (so under
the same load); PROXY_CSV with `selection.warmup_model=mlp_small`,
SAME_CSV with the configured model. Prints one markdown row per method and
ratio: accuracy mean ± std over seeds for each warm-up, the mean paired
difference (proxy - same, per seed) and its range, and one row with the
warm-up seconds (median over seeds, and the median of the per-seed
ratios).
"""

import csv
import sys

import numpy as np


def read(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def main(dataset, proxy_csv, same_csv):
  proxy, same = read(proxy_csv), read(same_csv)
  key = lambda r: (r["method"], float(r["ratio"]), int(r["seed"]))
  p = {key(r): r for r in proxy}
  s = {key(r): r for r in same}
  both = sorted(set(p) & set(s), key=lambda k: (k[0], -k[1], k[2]))
  seeds = sorted({k[2] for k in both})
  warm_p = {k[2]: float(p[k]["warmup_seconds"]) for k in both}
  warm_s = {k[2]: float(s[k]["warmup_seconds"]) for k in both}
  print(f"#### {dataset} (seeds {', '.join(map(str, seeds))})\n")
  print("| method | ratio | configured model | mlp_small proxy | "
        "proxy - configured (mean, min..max over seeds) |")
  print("|---|---|---|---|---|")
  for method, ratio in dict.fromkeys((k[0], k[1]) for k in both):
    ks = [k for k in both if k[:2] == (method, ratio)]
    a_s = np.array([100 * float(s[k]["test_accuracy"]) for k in ks])
    a_p = np.array([100 * float(p[k]["test_accuracy"]) for k in ks])
    d = a_p - a_s
    print(f"| {method} | {ratio:g} | {a_s.mean():.2f} ± {a_s.std():.2f} | "
          f"{a_p.mean():.2f} ± {a_p.std():.2f} | {d.mean():+.2f} "
          f"({d.min():+.2f}..{d.max():+.2f}) |")
  ws = np.array([warm_s[x] for x in seeds])
  wp = np.array([warm_p[x] for x in seeds])
  print(f"\nWarm-up seconds, median over seeds: configured model "
        f"{np.median(ws):.1f}, proxy {np.median(wp):.1f}; per-seed ratio "
        f"proxy/configured: median {np.median(wp / ws):.2f} "
        f"(min {np.min(wp / ws):.2f}, max {np.max(wp / ws):.2f}).")


if __name__ == "__main__":
  main(*sys.argv[1:])
