"""Every peer against a NumPy port of its upstream code, on a real warm-up.

Reads a comparison workdir's stored warm-up (one whose grid had methods
that need the features, the gradient norms, the uncertainty scores and
the margins, e.g. `ccs,d2,grand,margin`) and prints, per peer and ratio,
the Jaccard index of the library's default mask and the port's
(`mrmc_jax/methods/reference_check.py`), and the port's own draw-to-draw
Jaccard (for CCS's stratified draw and DUAL's weighted draw),
tie-order-to-tie-order Jaccard (for the top-k peers, whose references
leave ties to the sort) or float32-to-float64 Jaccard (for DeepCore's
greedy procedures and scores and TDDS, whose references compute in
float32): the ceiling that sampling, ties or rounding alone allow. The
uncertainty check computes the logits from the stored features and the
last layer (`head`) of the warm-up's last checkpoint. The numbers are
recorded in docs/results/reference_check.md.

  python experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/refcheck/fashion_mnist \
      --config.compare.methods=ccs,d2,grand,margin \
      --config.compare.ratios=0.1 --config.compare.seeds=0
  python docs/results/reference_check.py fashion_mnist_idx \
      runs/refcheck/fashion_mnist 0
"""

import functools
import sys
import time

import jax.numpy as jnp
import numpy as np

from mrmc_jax import selection
from mrmc_jax.data import sources
from mrmc_jax.methods import dual
from mrmc_jax.methods import options
from mrmc_jax.methods import reference_check as ref
from mrmc_jax.methods import registry
from mrmc_jax.methods import scores as scores_lib
from mrmc_jax.methods import uncertainty
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


def _mean_jaccard(masks_a, masks_b):
  return float(np.mean([ref.jaccard(a, b) for a, b in zip(masks_a, masks_b)]))


def check_dual(art, labels, num_classes, seed):
  p = np.asarray(art["p_true"])
  n, r = p.shape
  window = min(10, r)
  score = ref.dual_reference_scores(p.T, window)
  print(f"DUAL (behaapyy/dual-pruning): N={n}, R={r}, window {window} (the "
        "reference needs T >= 10: departure)")
  gumbel = np.random.default_rng(seed).gumbel(size=n)
  opts = options.SelectionOptions().replace(seed=seed)
  print("| ratio | `dual` vs port, same noise | budgets | port, own draw vs "
        "same noise (ceiling) | `dual(per_class=True)` vs port's "
        "weights in the quotas |")
  print("|---|---|---|---|---|")
  for ratio in RATIOS:
    _, ours = registry.select("dual", art, labels, ratio,
                              num_classes=num_classes, opts=opts)
    theirs = ref.dual_reference_mask(p.T, score, ratio, gumbel=gumbel,
                                     clip=1e-6)
    own = ref.dual_reference_mask(p.T, score, ratio, clip=1e-6,
                                  rng=np.random.default_rng(seed))
    _, cb = registry.select("dual(per_class=True)", art, labels,
                            ratio, num_classes=num_classes, opts=opts)
    keys = _reference_keys(p, score, ratio, 4.0, gumbel, 1e-6)
    theirs_cb = _per_class_top(keys, labels, ratio, num_classes)
    print(f"| {ratio:g} | {ref.jaccard(ours, theirs):.4f} | "
          f"{int(ours.sum())} / {int(theirs.sum())} | "
          f"{ref.jaccard(own, theirs):.4f} | "
          f"{ref.jaccard(cb, theirs_cb):.4f} |", flush=True)


def check_ccs(art, labels, num_classes, seed, draws=3):
  opts = options.SelectionOptions().replace(seed=seed)
  acc = np.asarray(art["p_margin"], np.float64).sum(axis=1)
  n = acc.shape[0]
  mis = opts.ccs_beta
  print(f"CCS (haizhongzheng/Coverage-centric-coreset-selection, stratified, "
        f"key and drop key the accumulated margin, mis_ratio {mis:g}): "
        f"{n - np.unique(acc).size} margins tied with another")
  print("| ratio | `ccs` vs port (mean of draws) | port vs port, other draws "
        "(ceiling) | same drop set | stratum counts, sum of abs diff | "
        "`ccs(per_class=True;drop=score;difficulty=forgetting)` "
        "vs port |")
  print("|---|---|---|---|---|---|")
  lowest = np.argsort(acc, kind="stable")[:int(mis * n)]
  for ratio in RATIOS:
    ours = [registry.select("ccs", art, labels, ratio,
                            num_classes=num_classes,
                            opts=opts.replace(seed=seed + d))[1]
            for d in range(draws)]
    theirs = [ref.ccs_reference_mask(acc, acc, ratio, mis,
                                     np.random.default_rng(100 + d))
              for d in range(draws)]
    others = theirs[1:] + theirs[:1]
    kept = np.setdiff1d(np.arange(n), lowest)
    stratum = np.full(n, -1)
    stratum[kept] = ref.ccs_reference_strata(acc[kept], 0)[0]
    diff = int(np.abs(np.bincount(stratum[ours[0]] + 1, minlength=51) -
                      np.bincount(stratum[theirs[0]] + 1, minlength=51)
                      ).sum())
    same_drop = not ours[0][lowest].any()
    _, before = registry.select(
        "ccs(per_class=True;drop=score;difficulty=forgetting)",
        art, labels, ratio, num_classes=num_classes, opts=opts)
    print(f"| {ratio:g} | {_mean_jaccard(ours, theirs):.4f} | "
          f"{_mean_jaccard(others, theirs):.4f} | {same_drop} | {diff} | "
          f"{ref.jaccard(before, theirs[0]):.4f} |", flush=True)


def check_top(art, labels, num_classes, seed, draws=3, only_top=()):
  """EL2N, GraNd, forgetting (data_diet), Dyn-Unc (dual-pruning), AUM."""
  opts = options.SelectionOptions().replace(seed=seed)
  p = np.asarray(art["p_true"], np.float64)
  refs = {
      "el2n": np.asarray(art["el2n"], np.float64)[:, -1],
      "forgetting": ref.data_diet_forget_scores(art["correct"]),
      "dyn_unc": ref.dynunc_reference_scores(
          p.T, min(opts.dyn_unc_window, p.shape[1])),
  }
  if "grad_norms" in art:
    refs["grand"] = np.asarray(art["grad_norms"], np.float64)
  if "margin" in art:  # CCS's monotonic selection, ascending: the lowest.
    refs["aum"] = -np.asarray(art["margin"], np.float64).mean(axis=1)
  if only_top:
    refs = {k: v for k, v in refs.items() if k in only_top}
  print("EL2N, GraNd, forgetting (mansheej/data_diet keep_max_scores), "
        "Dyn-Unc (behaapyy/dual-pruning dynunc, window min(10, R)) and AUM "
        "(CCS's score_monotonic_selection, lowest first); the ports' ties "
        "in random orders")
  print("| method | ratio | ours vs port (mean of tie orders) | port vs "
        "port, other tie orders (ceiling) | tied at the port's cut | "
        "`<method>.per_class=True` vs port |")
  print("|---|---|---|---|---|---|")
  for name, score in refs.items():
    for ratio in RATIOS:
      _, ours = registry.select(name, art, labels, ratio,
                                num_classes=num_classes, opts=opts)
      theirs = [ref.keep_max_scores(score, ratio, np.random.default_rng(d))
                for d in range(draws)]
      others = theirs[1:] + theirs[:1]
      cut = np.sort(score)[score.size - int(ratio * score.size)]
      _, cb = registry.select(f"{name}({name}_class_balanced=True)", art,
                              labels, ratio, num_classes=num_classes,
                              opts=opts)
      print(f"| {name} | {ratio:g} | {_mean_jaccard([ours] * draws, theirs):.4f}"
            f" | {_mean_jaccard(others, theirs):.4f} | "
            f"{int((score == cut).sum())} | "
            f"{ref.jaccard(cb, theirs[0]):.4f} |", flush=True)


def check_moderate(art, labels, num_classes, seed):
  opts = options.SelectionOptions().replace(seed=seed)
  print("Moderate (tmllab/2023_ICLR_Moderate-DS get_prune_idx)")
  print("| ratio | `moderate` vs port | budgets | "
        "`moderate(per_class=True)` vs port |")
  print("|---|---|---|---|")
  for ratio in RATIOS:
    _, ours = registry.select("moderate", art, labels, ratio,
                              num_classes=num_classes, opts=opts)
    _, cb = registry.select("moderate(per_class=True)", art,
                            labels, ratio, num_classes=num_classes, opts=opts)
    theirs = ref.moderate_reference_mask(art["features"], labels, ratio)
    print(f"| {ratio:g} | {ref.jaccard(ours, theirs):.4f} | "
          f"{int(ours.sum())} / {int(theirs.sum())} | "
          f"{ref.jaccard(cb, theirs):.4f} |", flush=True)


def check_d2(art, labels, num_classes, seed):
  opts = options.SelectionOptions().replace(seed=seed)
  forgetting = np.asarray(scores_lib.forgetting_scores(
      art["correct"], never_learned_first=False))
  margin = np.asarray(art["p_margin"], np.float64).mean(axis=1)
  print(f"D2 (adymaharana/d2pruning, class mode, graph sampling): k="
        f"{opts.d2_k}, mis_ratio={opts.d2_mis_ratio}, cut by the "
        "accumulated margin, equal split")
  print("| ratio | `d2` vs port | budgets | "
        "`d2(split=proportional;cut=p_true)` vs port |")
  print("|---|---|---|---|")
  cache = {}
  for ratio in RATIOS:
    _, ours = registry.select("d2", art, labels, ratio,
                              num_classes=num_classes, opts=opts, cache=cache)
    _, before = registry.select("d2(split=proportional;cut=p_true)",
                                art, labels, ratio, num_classes=num_classes,
                                opts=opts, cache=cache)
    theirs = ref.d2_reference_mask(art["features"], forgetting, margin,
                                   labels, ratio, mis_ratio=opts.d2_mis_ratio,
                                   n_neighbor=opts.d2_k,
                                   gamma=opts.d2_gamma_reverse)
    print(f"| {ratio:g} | {ref.jaccard(ours, theirs):.4f} | "
          f"{int(ours.sum())} / {int(theirs.sum())} | "
          f"{ref.jaccard(before, theirs):.4f} |", flush=True)


def _jd(a, b):
  """The Jaccard index and, in brackets, the examples in `a` not in `b`."""
  return f"{ref.jaccard(a, b):.4f} ({int((a & ~b).sum())})"


def _mean_jd(masks_a, masks_b):
  """`_jd` averaged over pairs (the count rounded)."""
  d = np.mean([(a & ~b).sum() for a, b in zip(masks_a, masks_b)])
  return f"{_mean_jaccard(masks_a, masks_b):.4f} ({d:.0f})"


def _class_orders(order_fn, features, labels, num_classes, budget_of):
  """Per class, the port's picks in order for the largest budget."""
  out = []
  for c in range(num_classes):
    idx = np.flatnonzero(labels == c)
    out.append(idx[order_fn(features[idx], budget_of(idx.shape[0]))])
  return out


def _prefix_mask(orders, ratio, n):
  """The balanced mask of `ratio` from the orders (DeepCore's per-class
  budget `round(ratio n_c)`; a greedy's picks for a smaller budget are the
  first ones of a larger)."""
  out = np.zeros(n, bool)
  for order, size in orders:
    out[order[:round(ratio * size)]] = True
  return out


def check_geometry(art, labels, num_classes, seed):
  """k-center greedy and herding (DeepCore, balance=True)."""
  opts = options.SelectionOptions().replace(seed=seed)
  n = labels.shape[0]
  sizes = np.bincount(labels, minlength=num_classes)
  top = max(RATIOS)
  print("k-center greedy and herding (PatrickZH/DeepCore kcentergreedy.py, "
        "herding.py, balance=True): the port in float32 (the reference's "
        "torch tensors) and in float64; first centre RandomState(seed)")
  print("| method | ratio | ours vs port float32 | ours vs port float64 | "
        "port float32 vs float64 (ceiling) | budgets (ours / port) | "
        "first picks in the same order, min over classes (ours vs port "
        "float32 / port float32 vs float64) |")
  print("|---|---|---|---|---|---|---|")
  rows = {
      "kcenter": lambda x, b: ref.deepcore_k_center_order(x, b, seed),
      "herding": ref.deepcore_herding_order,
  }
  for name, order_fn in rows.items():
    port = {}
    for dtype in (np.float32, np.float64):
      t0 = time.perf_counter()
      orders = _class_orders(order_fn, np.asarray(art["features"], dtype),
                             labels, num_classes,
                             lambda size: round(top * size))
      port[dtype] = list(zip(orders, sizes))
      print(f"  ({name}, port in {np.dtype(dtype).name}: "
            f"{time.perf_counter() - t0:.0f} s)", flush=True)
    for ratio in RATIOS:
      scores, ours = registry.select(name, art, labels, ratio,
                                     num_classes=num_classes, opts=opts)
      m32 = _prefix_mask(port[np.float32], ratio, n)
      m64 = _prefix_mask(port[np.float64], ratio, n)
      # Our picks in order: the scores are quota - step.
      ours_orders = []
      for c in range(num_classes):
        idx = np.flatnonzero(ours & (labels == c))
        ours_orders.append(idx[np.argsort(-scores[idx], kind="stable")])
      same = _common_prefix(ours_orders, [o for o, _ in port[np.float32]])
      same_port = _common_prefix(
          [o[:round(ratio * size)] for o, size in port[np.float32]],
          [o for o, _ in port[np.float64]])
      print(f"| {name} | {ratio:g} | {_jd(ours, m32)} | "
            f"{_jd(ours, m64)} | {_jd(m32, m64)} | "
            f"{int(ours.sum())} / {int(m32.sum())} | {same} / {same_port} "
            f"of {round(ratio * sizes.min())} |", flush=True)


def _common_prefix(orders_a, orders_b):
  """The fewest first picks two per-class pick orders share, over classes
  (the length of `orders_a`'s where all agree)."""
  same = []
  for a, b in zip(orders_a, orders_b):
    k = min(a.shape[0], b.shape[0])
    diff = np.flatnonzero(a[:k] != b[:k])
    same.append(int(diff[0]) if diff.size else k)
  return min(same)


def _head_logits(art, workdir, seed):
  """Eval-mode logits `[N, C]` from the stored features and the warm-up
  checkpoint's last layer (`head`), float64; None if not available."""
  import glob  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  steps = glob.glob(f"{workdir}/warmup/seed_{seed}/checkpoints/warmup/*/"
                    "default")
  if not steps:
    return None
  last = max(steps, key=lambda p: int(p.split("/")[-2]))
  params = ocp.PyTreeCheckpointer().restore(last)["state"]["params"]
  if "head" not in params:
    return None
  head = params["head"]
  return (np.asarray(art["features"], np.float64)
          @ np.asarray(head["kernel"], np.float64)
          + np.asarray(head["bias"], np.float64))


def check_uncertainty(art, labels, num_classes, seed, workdir, draws=3):
  """Least confidence, margin, entropy (DeepCore, balance=True)."""
  opts = options.SelectionOptions().replace(seed=seed)
  logits = _head_logits(art, workdir, seed)
  if logits is None:
    print("Uncertainty: not checked (no warm-up checkpoint with a `head` "
          "layer to compute the logits from the features)")
    return
  cols = np.asarray(uncertainty.uncertainty_columns(
      jnp.asarray(logits, jnp.float32)), np.float64)
  print("Least confidence, margin, entropy (PatrickZH/DeepCore "
        "uncertainty.py, balance=True) on the eval-mode logits `features "
        "@ head.kernel + head.bias` of the warm-up's last checkpoint; max "
        "abs. difference of their columns to the stored `uncertainty`: "
        f"{np.abs(cols - np.asarray(art['uncertainty'])).max():.2e}")
  print("| method | ratio | ours vs port float64 (mean of tie orders) | "
        "ours vs port float32 | port vs port, other tie orders (ceiling) | "
        "port float32 vs float64 (ceiling) | tied at the port's cuts "
        "(float64 / float32) |")
  print("|---|---|---|---|---|---|---|")
  for name, method in (("least_confidence", "LeastConfidence"),
                       ("margin", "Margin"), ("entropy", "Entropy")):
    for ratio in RATIOS:
      _, ours = registry.select(name, art, labels, ratio,
                                num_classes=num_classes, opts=opts)
      theirs = [ref.deepcore_uncertainty_mask(
          logits, labels, ratio, method, num_classes,
          rng=np.random.default_rng(d)) for d in range(draws)]
      others = theirs[1:] + theirs[:1]
      m32, m64 = (ref.deepcore_uncertainty_mask(logits.astype(dtype),
                                                labels, ratio, method,
                                                num_classes)
                  for dtype in (np.float32, np.float64))
      tied = [_tied_at_cuts(ref.deepcore_rank_uncertainty(
          logits.astype(dtype), method), labels, ratio, num_classes)
              for dtype in (np.float64, np.float32)]
      print(f"| {name} | {ratio:g} | {_mean_jd([ours] * draws, theirs)}"
            f" | {_jd(ours, m32)} | "
            f"{_mean_jd(others, theirs)} | "
            f"{_jd(m32, m64)} | {tied[0]} / {tied[1]} |",
            flush=True)


def _tied_at_cuts(score, labels, ratio, num_classes):
  """Examples tied with the last one kept in a class, where the cut (the
  lowest `round(ratio n_c)`) splits the tie."""
  tied = 0
  for c in range(num_classes):
    sc = np.sort(score[labels == c])
    k = round(ratio * sc.shape[0])
    if 0 < k < sc.shape[0] and sc[k - 1] == sc[k]:
      tied += int((sc == sc[k]).sum())
  return tied


def check_tdds(art, labels, num_classes, seed, draws=3):
  """TDDS's port on the two-outcome output of the stored p_true."""
  opts = options.SelectionOptions().replace(seed=seed)
  p = np.asarray(art["p_true"])
  n, r = p.shape
  window = min(opts.tdds_window, r)
  print(f"TDDS (zhangxin-xd/Dataset-Pruning-TDDS generate, data_subset.py) "
        f"on the two-outcome output (p_true, 1 - p_true) as logits, ids in "
        f"order, window {window}, decay {opts.tdds_decay:g}")
  print("| ratio | ours vs port float32 (mean of tie orders) | port vs port, "
        "other tie orders (ceiling) | port float32 vs float64 (ceiling) | "
        "tied at the port's cut | budgets (ours / port) |")
  print("|---|---|---|---|---|---|")
  index = np.tile(np.arange(n), (r, 1))
  scores = {}
  for dtype in (np.float32, np.float64):
    q = np.asarray(p, dtype)
    with np.errstate(divide="ignore"):
      logits = np.log(np.stack([q, 1 - q], axis=-1)).transpose(1, 0, 2)
    scores[dtype] = ref.tdds_reference_generate(logits, index, window,
                                                opts.tdds_decay)[0]
  s32 = scores[np.float32]
  for ratio in RATIOS:
    _, ours = registry.select("tdds", art, labels, ratio,
                              num_classes=num_classes, opts=opts)
    theirs = []
    for d in range(draws):  # Ties in a random order (numpy's quicksort).
      perm = np.random.default_rng(d).permutation(n)
      theirs.append(ref.tdds_reference_mask(
          perm[np.argsort(s32[perm], kind="stable")], ratio))
    others = theirs[1:] + theirs[:1]
    m64 = ref.tdds_reference_mask(np.argsort(scores[np.float64],
                                             kind="stable"), ratio)
    cut = np.sort(s32)[int((1 - ratio) * n)]
    print(f"| {ratio:g} | {_mean_jd([ours] * draws, theirs)} | "
          f"{_mean_jd(others, theirs)} | "
          f"{_jd(theirs[0], m64)} | {int((s32 == cut).sum())} | "
          f"{int(ours.sum())} / {int(theirs[0].sum())} |", flush=True)


def main(dataset: str, workdir: str, seed: str, only: str = "") -> None:
  seed = int(seed)
  labels = np.asarray(sources.load_dataset(dataset, None).train.labels)
  num_classes = int(labels.max()) + 1
  art = wd.read_npz(f"{workdir}/warmup/seed_{seed}/warmup/artefacts.npz")
  checks = {"dual": check_dual, "ccs": check_ccs, "top": check_top,
            "moderate": check_moderate, "d2": check_d2,
            "uncertainty": functools.partial(check_uncertainty,
                                             workdir=workdir),
            "tdds": check_tdds, "geometry": check_geometry}
  for name, check in checks.items():
    if only and name not in only.split(","):
      continue
    if (name in ("moderate", "geometry", "uncertainty")
        and "features" not in art):
      print(f"{name}: not checked (the warm-up stored no features)")
      continue
    if name == "uncertainty" and "uncertainty" not in art:
      print("uncertainty: not checked (the warm-up stored no uncertainty "
            "scores)")
      continue
    if name == "ccs" and "p_margin" not in art:
      print("CCS: not checked (the warm-up stored no margins)")
    elif name == "d2" and not {"features", "p_margin"} <= set(art):
      print("D2: not checked (the warm-up stored no features or margins)")
    else:
      check(art, labels, num_classes, seed)


if __name__ == "__main__":
  main(*sys.argv[1:])
