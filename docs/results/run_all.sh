#!/usr/bin/env bash
# The exact commands behind docs/results/ (2 CPU cores; about 1.5 hours).
# Data: make data-fashion-mnist && make data-mnist
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/results}
ABLATION="random,mrmc,mrmc(loss_source=eval),mrmc(skip_epochs=1),\
mrmc(skip_epochs=3),mrmc(score=observed),mrmc(epoch_offset=0),\
mrmc(max_initial_ratio=1e6),mrmc(epochs=5),mrmc(class_balanced=False),\
mrmc_r,mrmc_r(score_scale=max),mrmc_r(rho=0.5),mrmc_r(gamma=5.0),\
mrmc_r(score_scale=max;gamma=1.0)"
for ds in fashion_mnist mnist; do
  $PY experiments/compare.py --config=configs/$ds.py --workdir=$OUT/$ds
done
for ds in fashion_mnist mnist; do
  $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=$OUT/${ds}_ablation --config.compare.ratios=0.3,0.1 \
    "--config.compare.methods=$ABLATION"
done
