r"""Measures the stability and symmetry of MRMC's loss-reduction attribution.

  python experiments/attribution.py --config=configs/attribution.py \
      --workdir=runs/attribution [--config.attribution.num_probes=20 ...]

Trains on full data and on core-sets of `attribution.ratios`, accumulating
the m x m attribution matrix of a probe set, and writes `matrices/`,
`heatmaps/` and `report.json` in the workdir (mrmc_jax/attribution.py).
Rerunning with the same workdir resumes; finished settings are not redone.
"""

import preamble  # pylint: disable=unused-import  # First: signals, environment.

from mrmc_jax.runner import entry  # pylint: disable=g-bad-import-order

if __name__ == "__main__":
  entry.main("mrmc_jax.runner.attribution:run_attribution",
             "Config file, e.g. configs/attribution.py.")
