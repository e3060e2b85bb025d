"""Which methods' core-sets the seeded tie-break changed, on stored warm-ups.

For each method and ratio, selects from a comparison workdir's warm-up
artefacts twice: with the seeded random tie order (the selector today) and
with ties to the lower id (the earlier rule, `tie_seed=None`), and prints
how many selected examples differ. A method whose core-sets are identical
trains bitwise the same model, so its earlier numbers stand.

  python docs/results/tie_check.py fashion_mnist_idx \
      runs/final/fashion_mnist 0,1,2

Methods whose artefacts the warm-up did not store (GraNd's gradient norms
when no method of that grid needed them) are reported as not checked.
"""

import sys

import numpy as np

from mrmc_jax import selection
from mrmc_jax.data import sources
from mrmc_jax.methods import options
from mrmc_jax.methods import registry
from mrmc_jax.runner import workdir as wd

METHODS = ("random", "el2n", "grand", "forgetting", "ccs", "moderate",
           "dyn_unc", "mrmc", "mrmc_r")
RATIOS = (0.7, 0.5, 0.3, 0.1)


def main(dataset: str, workdir: str, seeds: str) -> None:
  labels = np.asarray(sources.load_dataset(dataset, None).train.labels)
  num_classes = int(labels.max()) + 1
  original = selection.select_mask_host

  def lowest_id(*args, **kwargs):
    kwargs["tie_seed"] = None
    return original(*args, **kwargs)

  print("| method | seed | ratio | examples that differ (of the core-set) |")
  print("|---|---|---|---|")
  for seed in (int(s) for s in seeds.split(",")):
    art = wd.read_npz(f"{workdir}/warmup/seed_{seed}/warmup/artefacts.npz")
    opts = options.SelectionOptions(seed=seed)
    for name in METHODS:
      if not registry.get_method(name).needs <= (
          {"trajectory"} | (set(art) & {"features", "grad_norms"})):
        print(f"| {name} | {seed} | - | not checked (artefact not stored) |")
        continue
      for ratio in RATIOS:
        _, new = registry.select(name, art, labels, ratio,
                                 num_classes=num_classes, opts=opts)
        selection.select_mask_host = lowest_id
        try:
          _, old = registry.select(name, art, labels, ratio,
                                   num_classes=num_classes, opts=opts)
        finally:
          selection.select_mask_host = original
        diff = int((new & ~old).sum())
        print(f"| {name} | {seed} | {ratio:g} | {diff} of {int(new.sum())} |",
              flush=True)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "0,1,2")
