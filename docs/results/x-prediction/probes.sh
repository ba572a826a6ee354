#!/usr/bin/env bash
# The demo's recipe (alignment alone, batch 16, 600 steps, velocity prediction), training seeds
# 0, 1, 2, against the levers tried before x-prediction: the sampler (ω, Euler steps, EMA or
# trained weights: no training), lr 2e-3, and training more at low noise (--time-shift < 1).
# Usage: bash docs/results/x-prediction/probes.sh SHARDS RUNS   (from the repo root)
set -euo pipefail
shards=${1:?shards folder}
runs=${2:?folder for the runs}
miro=${MIRO:-.venv/bin/miro}
python=${PYTHON:-.venv/bin/python}
export MIRO_NO_PROGRESS=1
train() {  # label seed extra...
  local label=$1 seed=$2
  shift 2
  [[ -d $runs/$label$seed/checkpoints/step_0000600 ]] ||
    $miro train "$shards" --out "$runs/$label$seed" --rewards shapes_alignment --batch-size 16 \
      --steps 600 --ckpt-every 600 --log-every 100 --seed "$seed" "$@"
}
for seed in 0 1 2; do
  train v600s $seed
  train lr2s $seed --lr 2e-3
  train ts05s $seed --time-shift 0.5
  train ts033s $seed --time-shift 0.333
done
here=docs/results/x-prediction
$python $here/sampler.py $here/sampler.json "$runs/v600s" 0,1,2 \
  ref: w5:guidance=5 w8:guidance=8 e50:steps=50 raw:weights=model
$python $here/arms.py $here/recipe-v.json 0,1,2 v600="$runs/v600s" lr2="$runs/lr2s" \
  ts05="$runs/ts05s" ts033="$runs/ts033s"
