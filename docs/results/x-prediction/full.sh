#!/usr/bin/env bash
# The 30-minute recipe (alignment alone, 3,500 steps of 64), MIRO only, with the backbone
# predicting the clean image; paired with the align-only record's MIRO and baseline of the same
# training seed (velocity prediction), final checkpoints.
# Usage: bash docs/results/x-prediction/full.sh SHARDS RUNS [SEED]   (from the repo root)
set -euo pipefail
shards=${1:?shards folder}
runs=${2:?folder for the runs}
seed=${3:-0}
miro=${MIRO:-.venv/bin/miro}
export MIRO_NO_PROGRESS=1
[[ -d $runs/xfull$seed/checkpoints/step_0003500 ]] ||
  $miro train "$shards" --out "$runs/xfull$seed" --rewards shapes_alignment --steps 3500 \
    --batch-size 64 --ckpt-every 500 --log-every 100 --seed "$seed" --prediction x
${PYTHON:-.venv/bin/python} docs/results/x-prediction/versus_record.py "docs/results/x-prediction/full-$seed.json" \
  "$runs/xfull$seed" "docs/results/align-only/seed-$seed" "$seed"
