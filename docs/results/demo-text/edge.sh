#!/usr/bin/env bash
# The edge of the demo's minutes at batch 64: 900 steps of 64 (58 k images, ≈ 7 minutes of
# training here; the demo's other stages take ≈ 3), alignment alone, `--time-shift 3` (what
# brought the colour words soonest, ../colour-words), velocity and x-prediction, training seed
# 0; `miro eval geneval` (shape and colour following beside it) on held-out noise (sampler seed
# 1), and follow.py's 64 draws of each single-object prompt.
# Usage: bash docs/results/demo-text/edge.sh SHARDS RUNS   (from the repo root)
set -euo pipefail
shards=${1:?shards folder}
runs=${2:?folder for the runs}
py=${PYTHON:-.venv/bin/python}
miro=${MIRO:-.venv/bin/miro}
here=docs/results/demo-text
export MIRO_NO_PROGRESS=1
for prediction in v x; do
  run=$runs/edge_$prediction
  [[ -d $run/checkpoints/step_0000900 ]] ||
    $miro train "$shards" --out "$run" --rewards shapes_alignment --batch-size 64 --steps 900 \
      --ckpt-every 900 --log-every 100 --seed 0 --prediction $prediction --time-shift 3
  [[ -f $run/geneval-held/results.json ]] ||
    $miro eval geneval "$run" --out "$run/geneval-held" --prompts-per-category 16 \
      --images-per-prompt 4 --guidance 3 --steps 25 --seed 1
  cp "$run/geneval-held/results.json" "$here/edge-$prediction.json"
done
$py $here/follow.py $here/follow-edge.json 3 velocity="$runs/edge_v" x="$runs/edge_x"
