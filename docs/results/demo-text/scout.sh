#!/usr/bin/env bash
# The scout: x-prediction, alignment alone, --time-shift 3, batch 32 × 1,200 steps (38 k
# images), training seed 0, against the demo's seed-0 model; GenEval, shape following and the
# loss rise when the shape / colour words change.
# Usage: bash docs/results/demo-text/scout.sh SHARDS RUNS   (from the repo root; RUNS holds x600s0)
set -euo pipefail
shards=${1:?shards folder}
runs=${2:?folder for the runs}
py=${PYTHON:-.venv/bin/python}
miro=${MIRO:-.venv/bin/miro}
here=docs/results/demo-text
export MIRO_NO_PROGRESS=1
run=$runs/xs3b32_1200s0
[[ -d $run/checkpoints/step_0001200 ]] ||
  $miro train "$shards" --out "$run" --rewards shapes_alignment --batch-size 32 --steps 1200 \
    --ckpt-every 1200 --log-every 100 --seed 0 --prediction x --time-shift 3
$py docs/results/x-prediction/arms.py $here/arms-scout.json 0 x600="$runs/x600s" \
  xs3b32="$runs/xs3b32_1200s"
$py $here/follow.py $here/follow-scout.json 3 xs3b32="$run"
for swap in shape colour; do
  $miro eval text-reliance "$run" --shards "$shards" --swap $swap \
    --out $here/text-reliance-scout-$swap.json
done
