"""NumPy ports of the peers' reference selection code, to check ours with.

Each port is written from the reference code's formulas, line by line, in
NumPy (float64; the DeepCore and TDDS ports in their inputs' dtype, as
their references' float32 tensors), SciPy and scikit-learn, and calls
nothing of this library, so that
a mask-for-mask comparison with the library's peers tests the library
against the reference rather than against itself:

- `dual_reference_mask`: behaapyy/dual-pruning, `exp_cifar/
  importance_evaluation.py:dual` (the score) and `exp_cifar/data_subset.py:
  beta_sampling` (the sampling; `exp_imagenet/train_imagenet.py` is the
  same rule).
- `d2_reference_mask`: adymaharana/d2pruning, `selection_mp.py` with
  `--coreset-mode class` (the README's CIFAR recipe), `core/data/Coreset.py:
  mislabel_mask, density_sampling, bin_allocate` and `core/data/
  sampling.py:GraphDensitySampler` (`compute_graph_density`,
  `select_batch_`, graph mode `sum`, sampling mode `weighted`).
- `ccs_reference_mask`: haizhongzheng/Coverage-centric-coreset-selection
  (commit b37f166), `train.py --coreset-mode stratified` with
  `core/data/Coreset.py:mislabel_mask` and `stratified_sampling`.
- `keep_max_scores`, `data_diet_forget_scores`: mansheej/data_diet (EL2N,
  GraNd, forgetting); `dynunc_reference_scores`: dual-pruning's Dyn-Unc;
  `moderate_reference_mask`: tmllab/2023_ICLR_Moderate-DS.
- `deepcore_k_center_greedy` (`deepcore_k_center_order`),
  `deepcore_herding` (`deepcore_herding_order`), `deepcore_balanced_mask`,
  `deepcore_rank_uncertainty`, `deepcore_uncertainty_mask`:
  PatrickZH/DeepCore (commit 74ec709),
  `deepcore/methods/kcentergreedy.py`, `herding.py`, `uncertainty.py` and
  `methods_utils/euclidean.py`.
- `tdds_reference_generate`, `tdds_reference_mask`:
  zhangxin-xd/Dataset-Pruning-TDDS (commit 9c1e3bd),
  `importance_evaluation.py:generate` and `data_subset.py`.

The reference draws DUAL's sample with `np.random.choice(p=...,
replace=False)`; the library with Gumbel-top-k, the same law. To compare
masks under the same randomness, `dual_reference_mask` takes the Gumbel
noise (`gumbel`) the library draws (`np.random.default_rng(seed).gumbel(N)`,
`common.sample_by_weight`), or an `rng` for the reference's own draw.
docs/results/reference_check.py prints the Jaccard indices on a real
warm-up; docs/results/reference_check.md records them and the departures.
"""

from typing import Optional

import numpy as np
from scipy import special
from scipy import stats
from sklearn import neighbors


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
  """`|a & b| / |a | b|` of two bool masks (1.0 when both are empty)."""
  a = np.asarray(a, bool)
  b = np.asarray(b, bool)
  if a.shape != b.shape:
    raise ValueError(f"masks have shapes {a.shape} and {b.shape}; they must "
                     "be the same.")
  union = int((a | b).sum())
  return 1.0 if union == 0 else int((a & b).sum()) / union


def dual_reference_scores(target_probs: np.ndarray,
                          window_size: int = 10) -> np.ndarray:
  """The reference's `dual(preds, window_size)`: float64 `[N]`.

  `mean over i in 0 .. T - J of std_i * 10 * (1 - mean_i)`, std the
  unbiased (`torch.std`) standard deviation of window i of J epochs.

  Args:
    target_probs: float `[T, N]` true-class probabilities, epochs first (the
      reference's layout), T >= window_size.
    window_size: J >= 2.

  Returns:
    float64 `[N]`.
  """
  tp = np.asarray(target_probs, np.float64)
  t = tp.shape[0]
  if window_size < 2 or t < window_size:
    raise ValueError(f"window_size={window_size} is not allowed with T={t} "
                     "epochs: the reference needs 2 <= J <= T (it has no "
                     "window otherwise).")
  windows = []
  for i in range(t - window_size + 1):
    w = tp[i:i + window_size]
    windows.append(w.std(axis=0, ddof=1) * 10 * (1 - w.mean(axis=0)))
  return np.stack(windows).mean(axis=0)


def dual_reference_mask(target_probs: np.ndarray, score: np.ndarray,
                        ratio: float, c_d: float = 4.0, *,
                        gumbel: Optional[np.ndarray] = None,
                        rng: Optional[np.random.Generator] = None,
                        clip: Optional[float] = None) -> np.ndarray:
  """The reference's `beta_sampling(1 - ratio, c_d, target_probs, mask, score)`.

  `pred_mean` is the mean of `target_probs` over its epochs (the reference
  slices the first 30), `mask = argsort(score)`, the anchor the mean
  `pred_mean` of `mask[-10:]`, `y_b = 15 (1 - anchor) (1 - prune ** c_d)`,
  `y_a = 16 - y_b`, `joint = beta.pdf(pred_mean, y_a, y_b) * score`, and
  `int((1 - prune) * N)` examples drawn without replacement with
  probability `joint / joint.sum()`.

  Args:
    target_probs: float `[T, N]`, epochs first.
    score: float `[N]` >= 0, the DUAL score.
    ratio: the kept fraction (the reference's `subset_rate`).
    c_d: the Beta exponent.
    gumbel: float `[N]` standard Gumbel noise: draw by Gumbel-top-k on
      `log(joint) + gumbel` (the library's randomness).
    rng: else, draw with `rng.choice(N, p=..., replace=False)` (the
      reference's draw, another random stream).
    clip: if set, clip `pred_mean` to `[clip, 1 - clip]` first (not in the
      reference; the library's guard against an infinite density).

  Returns:
    bool `[N]`.

  Raises:
    ValueError: if the reference's weights are not finite (its sampling
      fails there too), or if neither gumbel nor rng is given.
  """
  tp = np.asarray(target_probs, np.float64)
  score = np.asarray(score, np.float64)
  data_length = tp.shape[-1]
  pred_mean = tp.mean(axis=0)
  if clip is not None:
    pred_mean = np.clip(pred_mean, clip, 1 - clip)
  prune_rate = 1 - ratio
  subset_n = int((1 - prune_rate) * data_length)
  mask = np.argsort(score, kind="stable")
  anchor_mean = pred_mean[mask[-10:]].mean()
  y_b = 15 * (1 - anchor_mean) * (1 - prune_rate ** c_d)
  y_a = 16 - y_b
  joint_p = stats.beta.pdf(pred_mean, y_a, y_b) * score
  if not np.isfinite(joint_p).all():
    raise ValueError(f"{int((~np.isfinite(joint_p)).sum())} reference "
                     "weights are not finite (pred_mean at 0 or 1 with a "
                     "Beta parameter < 1); pass clip to compare anyway.")
  p = joint_p / joint_p.sum()
  if gumbel is not None:
    with np.errstate(divide="ignore"):
      keys = np.where(p > 0, np.log(p) + np.asarray(gumbel, np.float64),
                      -np.inf)
    remain_id = np.argsort(-keys, kind="stable")[:subset_n]
  elif rng is not None:
    remain_id = rng.choice(data_length, p=p, size=subset_n, replace=False)
  else:
    raise ValueError("gumbel=None and rng=None is not allowed: pass the "
                     "noise or a generator.")
  out = np.zeros(data_length, bool)
  out[remain_id] = True
  return out


def _bin_allocate_uniform(num: int, bins: np.ndarray) -> np.ndarray:
  """The reference's `bin_allocate(num, bins, mode='uniform')`."""
  sorted_index = np.argsort(bins, kind="stable")
  sort_bins = bins[sorted_index]
  num_bin = bins.shape[0]
  rest_exp_num = num
  budgets = []
  for i in range(num_bin):
    if sort_bins[i] == 0:
      budgets.append(0)
      continue
    rest_bins = np.count_nonzero(sort_bins[i:])
    avg = rest_exp_num // rest_bins
    cur_num = min(int(sort_bins[i]), int(avg))
    rest_exp_num -= cur_num
    budgets.append(cur_num)
  budgets = np.array(budgets)
  if budgets.sum() < num:
    delta = num - budgets.sum()
    i = 1
    while delta and i <= num_bin:
      if budgets[-i] < sort_bins[-i]:
        budgets[-i] += 1
        delta -= 1
      i += 1
  rst = np.zeros(num_bin, np.int64)
  rst[sorted_index] = budgets
  return rst


def _graph_density_select(x: np.ndarray, score: np.ndarray, budget: int,
                          n_neighbor: int, gamma: float,
                          epsilon: float) -> list[int]:
  """`GraphDensitySampler(X, importance_scores=score).select_batch_(budget)`.

  Graph mode `sum`, sampling mode `weighted`: for each kNN edge (i, j) of
  `kneighbors_graph(X, n_neighbor)`, `connect[i, j] = exp(-d) max(s_j, eps)`
  and `connect[j, i] = exp(-d) max(s_i, eps)`; `density_i = sum_j
  connect[i, j] + s_i`; then `budget` times: `i = argmax(density)`, its
  neighbours (`connect[i] > 0`) lose `exp(-gamma d) density_i`, and the
  picked are set below the minimum.
  """
  n = x.shape[0]
  dist, nbr = neighbors.NearestNeighbors(n_neighbors=n_neighbor).fit(
      x).kneighbors()
  rows = np.repeat(np.arange(n), n_neighbor)
  cols = nbr.ravel()
  d = dist.ravel().astype(np.float64)
  # The edges in both directions; a pair found from both ends keeps one
  # distance (the reference reads both from one symmetric matrix).
  src = np.concatenate([rows, cols])
  dst = np.concatenate([cols, rows])
  dd = np.concatenate([d, d])
  _, first = np.unique(src * n + dst, return_index=True)
  src, dst, dd = src[first], dst[first], dd[first]
  s = np.asarray(score, np.float64)
  connect = np.exp(-dd) * np.maximum(s[dst], epsilon)
  density = np.bincount(src, weights=connect, minlength=n) + s
  order = np.argsort(src, kind="stable")
  src, dst, dd = src[order], dst[order], dd[order]
  starts = np.searchsorted(src, np.arange(n + 1))
  picked = np.zeros(n, bool)
  batch = []
  while len(batch) < budget:
    selected = int(np.argmax(density))
    lo, hi = starts[selected], starts[selected + 1]
    nb = dst[lo:hi]
    density[nb] = density[nb] - np.exp(-dd[lo:hi] * gamma) * density[selected]
    batch.append(selected)
    picked[selected] = True
    density[picked] = density.min() - 1
  return batch


def d2_reference_mask(features: np.ndarray, score: np.ndarray,
                      margin: np.ndarray, labels: np.ndarray, ratio: float,
                      *, mis_ratio: float, n_neighbor: int = 5,
                      gamma: float = 0.1,
                      epsilon: float = 1e-7) -> np.ndarray:
  """The reference's D2 recipe (`--coreset-mode class --sampling-mode graph`).

  `mislabel_mask`: sort `margin` ascending (AUM: lowest = hardest) and drop
  the first `int(mis_ratio * N)`; per class of the rest (in that order), the
  uniform budget of `int(ratio * N)` (`bin_allocate`) picked by
  `_graph_density_select`.

  Args:
    features: float `[N, D]`.
    score: float `[N]`, the importance (forgetting) score.
    margin: float `[N]`, the pre-step's key, lowest = hardest (the
      reference's AUM; pass the stand-in the library uses).
    labels: int `[N]`.
    ratio: the kept fraction (`--coreset-ratio`).
    mis_ratio: `--mis-ratio`.
    n_neighbor: `--n-neighbor` (the recipe: 5).
    gamma: `--gamma` of the reverse pass (the recipe: 0.1).
    epsilon: the floor on neighbour scores (the reference: 1e-7).

  Returns:
    bool `[N]`.
  """
  labels = np.asarray(labels)
  total_num = labels.shape[0]
  mis_num = int(mis_ratio * total_num)
  score_index = np.argsort(np.asarray(margin, np.float64),
                           kind="stable")[mis_num:]
  s = np.asarray(score, np.float64)[score_index]
  targets = labels[score_index]
  x = np.asarray(features)[score_index]
  coreset_num = int(ratio * total_num)
  classes = np.unique(targets)
  budgets = _bin_allocate_uniform(
      coreset_num, np.array([(targets == c).sum() for c in classes]))
  selected = []
  for c, budget in zip(classes, budgets):
    idx = np.flatnonzero(targets == c)
    if budget >= idx.shape[0] or idx.shape[0] <= n_neighbor:
      picks = list(range(idx.shape[0]))[:budget]
    else:
      picks = _graph_density_select(x[idx], s[idx], int(budget), n_neighbor,
                                    gamma, epsilon)
    selected.extend(idx[picks].tolist())
  out = np.zeros(total_num, bool)
  out[score_index[np.asarray(selected, np.int64)]] = True
  return out


def _ccs_bin_allocate(num: int, bins: np.ndarray) -> np.ndarray:
  """CCS's `stratified_sampling.bin_allocate(num, bins)`: from the smallest
  stratum up, each takes `min(size, rest // strata left)`."""
  sorted_index = np.argsort(bins, kind="stable")
  sort_bins = bins[sorted_index]
  num_bin = bins.shape[0]
  rest_exp_num = num
  budgets = []
  for i in range(num_bin):
    rest_bins = num_bin - i
    avg = rest_exp_num // rest_bins
    cur_num = min(int(sort_bins[i]), int(avg))
    budgets.append(cur_num)
    rest_exp_num -= cur_num
  rst = np.zeros(num_bin, np.int64)
  rst[sorted_index] = budgets
  return rst


def ccs_reference_strata(key: np.ndarray, coreset_num: int,
                         stratas: int = 50
                         ) -> tuple[np.ndarray, np.ndarray]:
  """CCS's strata and their budgets: `(stratum int64 [M], budgets [K])`.

  `stratified_sampling`: K = 50 strata `[min + k step, min + (k + 1) step)`
  with `step = (1.0001 max - min) / K`; an example in none (possible only
  when max <= 0, as in the reference) gets -1.
  """
  score = np.asarray(key, np.float64)
  min_score = score.min()
  max_score = score.max() * 1.0001
  step = (max_score - min_score) / stratas
  stratum = np.full(score.shape[0], -1, np.int64)
  sizes = []
  for k in range(stratas):
    start, end = min_score + k * step, min_score + (k + 1) * step
    inside = (score >= start) & (score < end)
    stratum[inside] = k
    sizes.append(int(inside.sum()))
  return stratum, _ccs_bin_allocate(coreset_num, np.array(sizes))


def ccs_reference_mask(key: np.ndarray, margin: np.ndarray, ratio: float,
                       mis_ratio: float, rng: np.random.Generator,
                       stratas: int = 50) -> np.ndarray:
  """CCS's `train.py --coreset-mode stratified` selection.

  `mislabel_mask`: sort the accumulated margin ascending and drop the first
  `int(mis_ratio * N)` (the lowest margins); `stratified_sampling` on the
  coreset key of the rest with budget `int(ratio * N)`
  (`ccs_reference_strata`), each stratum's budget drawn by a random
  permutation (`torch.randperm`; here `rng.permutation`).

  Args:
    key: float `[N]`, the coreset key (the README's CCS: the accumulated
      margin itself).
    margin: float `[N]`, the accumulated margin (the drop key, lowest
      dropped first).
    ratio: `--coreset-ratio`.
    mis_ratio: `--mis-ratio`.
    rng: the draw's generator.
    stratas: the reference's 50.

  Returns:
    bool `[N]`.
  """
  n = np.shape(key)[0]
  mis_num = int(mis_ratio * n)
  easy_index = np.argsort(np.asarray(margin, np.float64),
                          kind="stable")[mis_num:]
  k = np.asarray(key, np.float64)[easy_index]
  stratum, budgets = ccs_reference_strata(k, int(ratio * n), stratas)
  selected = []
  for i in range(stratas):
    pool = np.flatnonzero(stratum == i)
    selected.extend(pool[rng.permutation(pool.shape[0])][:budgets[i]])
  out = np.zeros(n, bool)
  out[easy_index[np.asarray(selected, np.int64)]] = True
  return out


def keep_max_scores(scores: np.ndarray, ratio: float,
                    rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """data_diet's `subset_train_idxs_by_scores(keep_max_scores)`.

  mansheej/data_diet (commit aee462e), `data_diet/data.py`:
  `scores.argsort()[-subset_size:]` over all N, with `subset_size =
  int(ratio N)`; dual-pruning's `dynunc` mode keeps `mask[-n:]` of the same
  ascending sort. NumPy's default sort orders ties arbitrarily; `rng`
  shuffles the ids first so that each draw is one such order (None: the
  stable order, ties to the higher id).

  Returns:
    bool `[N]`.
  """
  s = np.asarray(scores, np.float64)
  n = s.shape[0]
  perm = (np.arange(n) if rng is None else rng.permutation(n))
  idx = perm[np.argsort(s[perm], kind="stable")[n - int(ratio * n):]]
  out = np.zeros(n, bool)
  out[idx] = True
  return out


def data_diet_forget_scores(correct: np.ndarray) -> np.ndarray:
  """data_diet's forgetting scores from per-epoch correctness `[N, R]`.

  `data_diet/forgetting.py`: `prev_accs` starts at 0; each presentation
  adds a forget where `prev_accs > accs`; an example never correct gets
  `inf` (`save_forget_scores`). One presentation per recorded epoch.

  Returns:
    float64 `[N]`.
  """
  c = np.asarray(correct).astype(np.int32)
  n, r = c.shape
  prev = np.zeros(n, np.int32)
  num_forgets = np.zeros(n, float)
  never_correct = np.ones(n, bool)
  for e in range(r):
    num_forgets[prev > c[:, e]] += 1
    prev = c[:, e]
    never_correct &= ~c[:, e].astype(bool)
  out = num_forgets.copy()
  out[never_correct] = np.inf
  return out


def dynunc_reference_scores(target_probs: np.ndarray,
                            window_size: int = 10) -> np.ndarray:
  """dual-pruning's `dynunc(preds, window_size)`: float64 `[N]`.

  behaapyy/dual-pruning (commit 4ab525d), `exp_cifar/importance_evaluation.
  py:dynunc`: the mean over the `T - J + 1` windows of `10 std` (unbiased,
  `torch.std`) of the true-class probability.

  Args:
    target_probs: float `[T, N]`, epochs first, T >= window_size >= 2.
    window_size: J.
  """
  tp = np.asarray(target_probs, np.float64)
  t = tp.shape[0]
  if window_size < 2 or t < window_size:
    raise ValueError(f"window_size={window_size} is not allowed with T={t} "
                     "epochs: the reference needs 2 <= J <= T.")
  return np.stack([tp[i:i + window_size].std(axis=0, ddof=1) * 10
                   for i in range(t - window_size + 1)]).mean(axis=0)


def moderate_reference_mask(features: np.ndarray, labels: np.ndarray,
                            rate: float) -> np.ndarray:
  """Moderate-DS's selection (tmllab/2023_ICLR_Moderate-DS, commit 7f64d31).

  `selection.py`: `get_median` (per class, `np.median` of each feature
  column), `get_distance` (each example's L2 distance to its class's
  median), `get_prune_idx`: sort the distances over all N and prune below
  `round(N (0.5 - rate / 2))` and from `round(N (0.5 + rate / 2))` on; the
  rest is kept.

  Returns:
    bool `[N]`.
  """
  x = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  prot = np.zeros((int(labels.max()) + 1, x.shape[1]))
  for c in np.unique(labels):
    prot[c] = np.median(x[labels == c], axis=0)
  distance = np.linalg.norm(x - prot[labels], axis=1)
  n = distance.shape[0]
  sorted_idx = distance.argsort(kind="stable")
  low_idx = round(n * (0.5 - rate / 2))
  high_idx = round(n * (0.5 + rate / 2))
  out = np.zeros(n, bool)
  out[sorted_idx[low_idx:high_idx]] = True
  return out


# DeepCore (PatrickZH/DeepCore, commit 74ec709; the files below unchanged
# since 7436c0a): k-center greedy, herding and the uncertainty baselines.


def _deepcore_dist_to_rows(c: np.ndarray, matrix: np.ndarray,
                           yy: np.ndarray) -> np.ndarray:
  """DeepCore's `euclidean_dist(c[None], matrix)[0]`: float `[n]`.

  `deepcore/methods/methods_utils/euclidean.py`: `sqrt(max(|c|^2 + |y|^2
  - 2 c.y, 1e-12))` in the inputs' dtype, the rows' squared norms `yy [n]`
  given (the same values, computed once).
  """
  xx = np.sum(c * c)
  return np.sqrt(np.clip(xx + yy - 2.0 * (matrix @ c), 1e-12, None))


def deepcore_k_center_order(matrix: np.ndarray, budget: int,
                            random_seed: int) -> np.ndarray:
  """DeepCore's `k_center_greedy`, nothing selected yet: the picks in order.

  `deepcore/methods/kcentergreedy.py`: `np.random.seed(random_seed)`, the
  first centre `np.random.randint(0, n)` (here the same draw of
  `RandomState(random_seed)`), then `budget - 1` times the row with the
  largest distance to its nearest centre (`torch.argmax`: the first
  maximum) joins the centres; the picked rows' distances are -1. The
  reference stores every centre's distance row (`dis_matrix`, `[budget,
  n]`) and takes each new row over the unpicked rows only; the port keeps
  the running minimum and computes the new row over all rows, setting the
  picked ones to -1: the same values. The budget only stops the loop, so
  the picks of a smaller budget are the first ones of a larger.

  Args:
    matrix: float `[n, D]`, one group's features (its dtype is the
      arithmetic's: the reference's torch tensors are float32).
    budget: 1 <= budget <= n.
    random_seed: the run's seed.

  Returns:
    int `[budget]`: the picked rows, first centre first.
  """
  sample_num = matrix.shape[0]
  rs = np.random.RandomState(random_seed)
  select_result = np.zeros(sample_num, dtype=bool)
  yy = np.sum(matrix * matrix, axis=1)
  order = [rs.randint(0, sample_num)]
  select_result[order] = True
  mins = np.where(select_result, -1,
                  _deepcore_dist_to_rows(matrix[order[0]], matrix, yy))
  for i in range(budget - 1):
    p = int(np.argmax(mins))
    select_result[p] = True
    order.append(p)
    if i == budget - 2:
      break
    mins[p] = -1
    mins = np.minimum(mins, np.where(
        select_result, -1, _deepcore_dist_to_rows(matrix[p], matrix, yy)))
  return np.asarray(order, np.int64)


def deepcore_k_center_greedy(matrix: np.ndarray, budget: int,
                             random_seed: int,
                             index: np.ndarray) -> np.ndarray:
  """DeepCore's `k_center_greedy(matrix, budget, metric, device,
  random_seed, index)`: `index[select_result]`, int `[budget]` in row order
  (`deepcore_k_center_order`'s picks)."""
  select_result = np.zeros(matrix.shape[0], dtype=bool)
  select_result[deepcore_k_center_order(matrix, budget, random_seed)] = True
  return index[select_result]


def deepcore_herding_order(matrix: np.ndarray, budget: int,
                           closest: bool = False) -> np.ndarray:
  """DeepCore's `Herding.herding`: the picks in order.

  `deepcore/methods/herding.py`: `mu` the rows' mean; step `i` picks among
  the unpicked rows the one at the largest `euclidean_dist` to `(i + 1) mu
  - sum(picked rows)` (`torch.argmax`: the first maximum; `closest=True`:
  the smallest, herding as its paper describes it). The reference re-sums
  the picked rows at every step; the port keeps their running sum (the
  same value up to rounding) and computes the distances over all rows,
  the picked ones masked. The budget only stops the loop.

  Args:
    matrix: float `[n, D]` (its dtype is the arithmetic's).
    budget: 0 <= budget <= n.
    closest: pick the smallest distance instead of the largest.

  Returns:
    int `[budget]`: the picked rows in pick order.
  """
  sample_num = matrix.shape[0]
  mu = np.mean(matrix, axis=0)
  yy = np.sum(matrix * matrix, axis=1)
  select_result = np.zeros(sample_num, dtype=bool)
  total = np.zeros_like(mu)
  order = []
  for i in range(budget):
    dist = _deepcore_dist_to_rows((i + 1) * mu - total, matrix, yy)
    if closest:
      p = int(np.argmin(np.where(select_result, np.inf, dist)))
    else:
      p = int(np.argmax(np.where(select_result, -np.inf, dist)))
    select_result[p] = True
    order.append(p)
    total = total + matrix[p]
  return np.asarray(order, np.int64)


def deepcore_herding(matrix: np.ndarray, budget: int, index: np.ndarray,
                     closest: bool = False) -> np.ndarray:
  """DeepCore's `Herding.herding(matrix, budget, index)`:
  `index[select_result]`, int `[budget]` in row order
  (`deepcore_herding_order`'s picks)."""
  select_result = np.zeros(matrix.shape[0], dtype=bool)
  select_result[deepcore_herding_order(matrix, budget, closest)] = True
  return index[select_result]


def deepcore_balanced_mask(fn, features: np.ndarray, labels: np.ndarray,
                           fraction: float, num_classes: int) -> np.ndarray:
  """DeepCore's `balance=True` branch (its `main.py` default).

  Each class `c` runs `fn(features[class_index], round(fraction * n_c),
  class_index)` on its own rows (`kcentergreedy.py:select`,
  `herding.py:finish_run`).

  Returns:
    bool `[N]`.
  """
  labels = np.asarray(labels)
  out = []
  for c in range(num_classes):
    class_index = np.arange(labels.shape[0])[labels == c]
    out.append(fn(features[class_index], round(fraction * len(class_index)),
                  class_index))
  mask = np.zeros(labels.shape[0], bool)
  mask[np.concatenate(out)] = True
  return mask


def _softmax(z: np.ndarray) -> np.ndarray:
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def deepcore_rank_uncertainty(logits: np.ndarray, method: str) -> np.ndarray:
  """DeepCore's `Uncertainty.rank_uncertainty`: `[N]`, low = uncertain.

  `deepcore/methods/uncertainty.py`: "LeastConfidence" the largest logit,
  "Entropy" `sum_k p_k log(p_k + 1e-6)`, "Margin" the largest softmax
  probability minus the second (the first maximum masked to -1), in the
  dtype of `logits`.
  """
  if method == "LeastConfidence":
    return logits.max(axis=1)
  preds = _softmax(logits)
  if method == "Entropy":
    return (np.log(preds + 1e-6) * preds).sum(axis=1)
  if method != "Margin":
    raise ValueError(f"method={method!r} is not allowed: use "
                     "LeastConfidence, Entropy or Margin.")
  rows = np.arange(preds.shape[0])
  preds_argmax = np.argmax(preds, axis=1)
  max_preds = preds[rows, preds_argmax].copy()
  preds[rows, preds_argmax] = -1.0
  preds_sub_argmax = np.argmax(preds, axis=1)
  return max_preds - preds[rows, preds_sub_argmax]


def deepcore_uncertainty_mask(logits: np.ndarray, labels: np.ndarray,
                              fraction: float, method: str,
                              num_classes: int,
                              rng: Optional[np.random.Generator] = None
                              ) -> np.ndarray:
  """DeepCore's `Uncertainty.finish_run` with `balance=True`.

  Per class, `class_index[np.argsort(scores)[:round(n_c * fraction)]]`:
  the lowest scores. NumPy's default sort orders ties arbitrarily; `rng`
  shuffles each class's rows first so that each draw is one such order
  (None: the stable order, ties to the lower id).

  Args:
    logits: float `[N, C]`, the model's eval-mode outputs.
    labels: int `[N]`.
    fraction: the kept fraction.
    method: "LeastConfidence", "Margin" or "Entropy".
    num_classes: C.
    rng: the tie order's generator, or None.

  Returns:
    bool `[N]`.
  """
  def lowest(class_logits, budget, class_index):
    perm = (np.arange(class_index.shape[0]) if rng is None
            else rng.permutation(class_index.shape[0]))
    scores = deepcore_rank_uncertainty(class_logits[perm], method)
    return class_index[perm][np.argsort(scores, kind="stable")[:budget]]

  return deepcore_balanced_mask(lowest, logits, labels, fraction,
                                num_classes)


def tdds_reference_generate(logits: np.ndarray, indexes: np.ndarray,
                            window: int, decay: float
                            ) -> tuple[np.ndarray, np.ndarray]:
  """TDDS's `generate(probs, losses, indexes)`: `(scores [N], data_mask)`.

  zhangxin-xd/Dataset-Pruning-TDDS (commit 9c1e3bd),
  `importance_evaluation.py:generate` with `trajectory_len = T`: per
  window k = 0 .. T - J of J epochs, the softmax outputs scattered into id
  order (its torch `index_add` into zeros), the steps `kd_j = sum_c
  |p_{j+1} (log(p_{j+1} + 1e-8) - log(p_j + 1e-8))|`, the norm of their
  deviations from the window's mean, weighted by `decay (1 - decay)**(T -
  J - k)`, summed; `data_mask` is the ascending argsort of the scores.
  In the dtype of `logits` (upstream's saved outputs: float32).

  Args:
    logits: float `[T, N, C]`, each epoch's outputs in its shuffled order.
    indexes: int `[T, N]`, each epoch's ids in that order.
    window: J, 2 <= J <= T (upstream yields no window for J > T).
    decay: the moving average's factor.

  Returns:
    `(float64 scores [N] in id order, int data_mask [N])`.
  """
  t_len = logits.shape[0]
  moving = []
  k = 0
  while k < t_len - window + 1:
    probs = special.softmax(logits[k:k + window], axis=2)
    rere = []
    for i in range(window):
      re = np.zeros_like(probs[0])
      np.add.at(re, indexes[k + i], probs[i])
      rere.append(re)
    kd = []
    for j in range(window - 1):
      log = np.log(rere[j + 1] + 1e-8) - np.log(rere[j] + 1e-8)
      kd.append(np.abs(rere[j + 1] * log).sum(axis=1))
    kd = np.array(kd)
    avg = kd.sum(0) / (window - 1)
    diff = np.array([kd[ii] - avg for ii in range(window - 1)])
    norm = np.linalg.norm(diff, axis=0)
    moving.append(norm * decay * (1 - decay) ** (t_len - window - k))
    k += 1
  score = np.squeeze(sum(np.array(moving), 0))
  return score, score.argsort()


def tdds_reference_mask(data_mask: np.ndarray, ratio: float) -> np.ndarray:
  """TDDS's `data_subset.py`: keeps `data_mask[int(subset_rate * N):]`.

  `subset_rate` is the pruned fraction, `1 - ratio`.

  Returns:
    bool `[N]`.
  """
  n = data_mask.shape[0]
  out = np.zeros(n, bool)
  out[data_mask[int((1 - ratio) * n):]] = True
  return out
