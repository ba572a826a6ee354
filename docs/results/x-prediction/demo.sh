#!/usr/bin/env bash
# The demo's recipe (alignment alone, batch 16, 600 steps) with the backbone predicting the
# velocity (as before) or the clean image (--prediction x), training seeds 0, 1, 2; then both
# paired on the experiments' evaluation. Shards: the demo's (scripts/demo.sh stages 1–7).
# Usage: bash docs/results/x-prediction/demo.sh SHARDS RUNS   (from the repo root)
set -euo pipefail
shards=${1:?shards folder}
runs=${2:?folder for the runs}
miro=${MIRO:-.venv/bin/miro}
export MIRO_NO_PROGRESS=1
train() {  # label steps seed extra...
  local label=$1 steps=$2 seed=$3
  shift 3
  [[ -d $runs/$label$seed/checkpoints/step_$(printf %07d "$steps") ]] ||
    $miro train "$shards" --out "$runs/$label$seed" --rewards shapes_alignment --batch-size 16 \
      --steps "$steps" --ckpt-every "$steps" --log-every 100 --seed "$seed" "$@"
}
for seed in 0 1 2; do
  train v600s 600 $seed
  train x600s 600 $seed --prediction x
  train x1200s 1200 $seed --prediction x
done
${PYTHON:-.venv/bin/python} docs/results/x-prediction/arms.py docs/results/x-prediction/demo.json 0,1,2 \
  v600="$runs/v600s" x600="$runs/x600s" x1200="$runs/x1200s"
