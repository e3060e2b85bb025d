"""DUAL and D2 against NumPy ports of their reference code, on a real warm-up.

Reads a comparison workdir's stored warm-up (one whose grid had a method
that needs the features, e.g. `d2`) and prints, per ratio, the Jaccard
index of the library's mask and the reference port's
(`mrmc_jax/methods/reference_check.py`) under the same randomness, plus the
statistics behind the departures. The numbers are recorded in
docs/results/reference_check.md.

  python experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/refcheck/fashion_mnist --config.compare.methods=d2 \
      --config.compare.ratios=0.1 --config.compare.seeds=0
  python docs/results/reference_check.py fashion_mnist_idx \
      runs/refcheck/fashion_mnist 0
"""

import sys

import numpy as np

from mrmc_jax import selection
from mrmc_jax.data import sources
from mrmc_jax.methods import dual
from mrmc_jax.methods import options
from mrmc_jax.methods import reference_check as ref
from mrmc_jax.methods import registry
from mrmc_jax.methods import scores as scores_lib
from mrmc_jax.runner import workdir as wd

RATIOS = (0.7, 0.5, 0.3, 0.1)


def _reference_keys(p_true, score, ratio, c_d, gumbel, clip):
  """The reference's sampling keys log(joint_p) + Gumbel (float64)."""
  tp = np.asarray(p_true, np.float64).T
  pred_mean = np.clip(tp.mean(axis=0), clip, 1 - clip)
  prune = 1 - ratio
  anchor = pred_mean[np.argsort(score, kind="stable")[-10:]].mean()
  y_b = 15 * (1 - anchor) * (1 - prune ** c_d)
  from scipy import stats  # pylint: disable=g-import-not-at-top
  joint = stats.beta.pdf(pred_mean, 16 - y_b, y_b) * score
  with np.errstate(divide="ignore"):
    return np.where(joint > 0, np.log(joint / joint.sum()) + gumbel, -np.inf)


def _per_class_top(keys, labels, ratio, num_classes):
  """The reference's weights drawn within the library's class quotas."""
  quotas = selection.class_quotas(labels, num_classes, ratio)
  out = np.zeros(keys.shape[0], bool)
  for c in range(num_classes):
    idx = np.flatnonzero(labels == c)
    out[idx[np.argsort(-keys[idx], kind="stable")[:quotas[c]]]] = True
  return out


def check_dual(art, labels, num_classes, seed):
  p = np.asarray(art["p_true"])
  n, r = p.shape
  window = min(10, r)
  score = ref.dual_reference_scores(p.T, window)
  ours_score = np.asarray(dual.dual_scores(p, window=window), np.float64)
  order_same = np.array_equal(np.argsort(score, kind="stable")[-10:],
                              np.argsort(ours_score, kind="stable")[-10:])
  m = p.astype(np.float64).mean(axis=1)
  at_edge = int(((m < 1e-6) | (m > 1 - 1e-6)).sum())
  print(f"DUAL: N={n}, R={r}, window {window} (the reference needs T >= 10: "
        f"departure); same top-10 anchor set as ours: {order_same}; "
        f"windowed mean at 0 or 1 (clipped): {at_edge}")
  gumbel = np.random.default_rng(seed).gumbel(size=n)
  opts = options.SelectionOptions().replace(seed=seed)
  print("| ratio | global: ours vs reference, same noise | budgets | "
        "class quotas: ours vs reference weights | first-epoch (before) vs "
        "reference weights | reference, own draw vs same noise |")
  print("|---|---|---|---|---|---|")
  for ratio in RATIOS:
    glob = dual.dual_select(ours_score, m, labels, ratio,
                            num_classes=num_classes, class_balanced=False,
                            seed=seed)
    try:
      theirs = ref.dual_reference_mask(p.T, score, ratio, gumbel=gumbel)
      clip_note = ""
    except ValueError:
      theirs = ref.dual_reference_mask(p.T, score, ratio, gumbel=gumbel,
                                       clip=1e-6)
      clip_note = " (clipped)"
    _, cb = registry.select("dual", art, labels, ratio,
                            num_classes=num_classes, opts=opts)
    keys = _reference_keys(p, score, ratio, 4.0, gumbel, 1e-6)
    theirs_cb = _per_class_top(keys, labels, ratio, num_classes)
    before = dual.dual_select(ours_score, p[:, 0], labels, ratio,
                              num_classes=num_classes, seed=seed)
    own = ref.dual_reference_mask(p.T, score, ratio, clip=1e-6,
                                  rng=np.random.default_rng(seed))
    print(f"| {ratio:g} | {ref.jaccard(glob, theirs):.4f}{clip_note} | "
          f"{int(glob.sum())} / {int(theirs.sum())} | "
          f"{ref.jaccard(cb, theirs_cb):.4f} | "
          f"{ref.jaccard(before, theirs_cb):.4f} | "
          f"{ref.jaccard(own, theirs):.4f} |", flush=True)


def check_d2(art, labels, num_classes, seed):
  opts = options.SelectionOptions().replace(seed=seed)
  forgetting = np.asarray(scores_lib.forgetting_scores(
      art["correct"], never_learned_first=False))
  margin = np.asarray(art["p_true"], np.float64).mean(axis=1)
  zero = forgetting == 0
  print(f"D2: forgetting score 0 for {int(zero.sum())} of {zero.size}; "
        f"k={opts.d2_k}, mis_ratio={opts.d2_mis_ratio}")
  print("| ratio | ours vs reference | ours (per-class cut) vs reference | "
        "picks with score 0 | classes whose score-0 picks are their "
        "lowest ids |")
  print("|---|---|---|---|---|")
  for ratio in RATIOS:
    _, ours = registry.select("d2", art, labels, ratio,
                              num_classes=num_classes, opts=opts)
    per_class = opts.replace(d2_mis_per_class=True)
    _, ours_pc = registry.select("d2", art, labels, ratio,
                                 num_classes=num_classes, opts=per_class)
    theirs = ref.d2_reference_mask(art["features"], forgetting, margin,
                                   labels, ratio, mis_ratio=opts.d2_mis_ratio,
                                   n_neighbor=opts.d2_k,
                                   gamma=opts.d2_gamma_reverse)
    lowest = 0
    for c in range(num_classes):
      cz = np.flatnonzero((labels == c) & zero)
      picked = np.flatnonzero(ours[cz])
      if picked.size and picked.size < cz.size:
        lowest += int(np.array_equal(picked, np.arange(picked.size)))
    print(f"| {ratio:g} | {ref.jaccard(ours, theirs):.4f} | "
          f"{ref.jaccard(ours_pc, theirs):.4f} | "
          f"{(ours & zero).sum() / ours.sum():.3f} | {lowest} of "
          f"{num_classes} |", flush=True)


def main(dataset: str, workdir: str, seed: str) -> None:
  seed = int(seed)
  labels = np.asarray(sources.load_dataset(dataset, None).train.labels)
  num_classes = int(labels.max()) + 1
  art = wd.read_npz(f"{workdir}/warmup/seed_{seed}/warmup/artefacts.npz")
  check_dual(art, labels, num_classes, seed)
  if "features" in art:
    check_d2(art, labels, num_classes, seed)
  else:
    print("D2: not checked (the warm-up stored no features)")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "0")
