#!/usr/bin/env bash
# The speed checks of benchmarks/ at paper and ImageNet scale, for a machine
# with an accelerator. They need only jax, flax, optax and numpy (no
# TensorFlow), so they also run on an image that lacks the data stack.
# Usage: bash benchmarks/accelerator.sh [OUTDIR]   (one .txt per check)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, jax.devices())" | tee "$OUT/env.txt"
# Selection at ImageNet size: the fit on [1.28M, 20] and the top-k selector.
$PY benchmarks/selection_speed.py | tee "$OUT/selection.txt"
# Per-example statistics on top of a training step (paper scale).
for dt in float32 bfloat16; do
  $PY benchmarks/runner_costs.py --model resnet18_cifar --image_shape 32,32,3 \
    --n 50000 --batch_size 128 --steps 50 --repeats 5 --epochs 0 --dtype $dt
done | tee "$OUT/resnet18_cifar.txt"
$PY benchmarks/runner_costs.py --model resnet50 --image_shape 224,224,3 \
  --classes 1000 --n 1281167 --batch_size 256 --steps 20 --repeats 5 \
  --epochs 0 --dtype bfloat16 | tee "$OUT/resnet50_imagenet.txt"
$PY benchmarks/runner_costs.py --model mlp --n 60000 --batch_size 256 \
  --steps 50 --repeats 5 --epochs 0 | tee "$OUT/mlp.txt"
