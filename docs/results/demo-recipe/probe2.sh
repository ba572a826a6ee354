#!/usr/bin/env bash
# Demo budget, alignment-only: time shift variants (batch 16, training seed 0), paired against align600.
set -uo pipefail
export MIRO_NO_PROGRESS=1
m=/work/main/.venv/bin/miro
d=/work/runs/demo-align
train() {  # label steps extra...
  local label=$1 steps=$2; shift 2
  [ -d $d/$label/checkpoints/step_$(printf %07d $steps) ] || /usr/bin/time -v $m train /work/runs/data/train --out $d/$label \
    --rewards shapes_alignment --batch-size 16 --steps $steps --ckpt-every $steps --log-every 100 "$@" > $d/$label.log 2>&1
}
train align600s3 600 --time-shift 3
train align600half 600 --time-shift 3 --time-shift-share 0.5
train align1200s3 1200 --time-shift 3
cd /work/main && .venv/bin/python docs/results/colour-words/paired.py $d/paired2.json \
  align600=$d/align600/checkpoints/step_0000600 align600s3=$d/align600s3/checkpoints/step_0000600 \
  align600half=$d/align600half/checkpoints/step_0000600 align1200s3=$d/align1200s3/checkpoints/step_0001200 \
  three600=$d/three600/checkpoints/step_0000600 > $d/paired2.log 2>&1
echo done
