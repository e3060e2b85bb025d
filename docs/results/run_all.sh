#!/usr/bin/env bash
# The exact commands behind docs/results/ (2 CPU cores; the two data sets run
# side by side, about 1.5 hours in all).
# Data: make data-fashion-mnist && make data-mnist
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/results}
# MRMC's open choices, each changed alone from the defaults. The references
# (random, mrmc, mrmc_r at 0.3 and 0.1) come from the main grid: the same
# seeds give the same warm-up and the same training there.
ABLATION="mrmc(loss_source=eval),mrmc(skip_epochs=1),mrmc(skip_epochs=3),\
mrmc(score=observed),mrmc(epoch_offset=0),mrmc(max_initial_ratio=1e6),\
mrmc(epochs=5),mrmc(class_balanced=False),mrmc_r(score_scale=max),\
mrmc_r(gamma=5.0)"
chain() {
  local ds=$1
  $PY experiments/compare.py --config=configs/$ds.py --workdir=$OUT/$ds
  $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=$OUT/${ds}_ablation --config.compare.ratios=0.3,0.1 \
    "--config.compare.methods=$ABLATION"
}
chain fashion_mnist > $OUT-fashion_mnist.log 2>&1 &
chain mnist > $OUT-mnist.log 2>&1 &
wait
