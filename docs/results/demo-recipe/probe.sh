#!/usr/bin/env bash
# Demo budget: alignment-only vs three rewards, batch 16 (the demo's recipe), training seed 0.
set -uo pipefail
export MIRO_NO_PROGRESS=1
m=/work/main/.venv/bin/miro
d=/work/runs/demo-align
mkdir -p $d
train() {  # label rewards steps
  [ -d $d/$1/checkpoints/step_$(printf %07d $3) ] || /usr/bin/time -v $m train /work/runs/data/train --out $d/$1 \
    --rewards $2 --batch-size 16 --steps $3 --ckpt-every $3 --log-every 100 > $d/$1.log 2>&1
}
train three600 shapes_alignment,noise,edge_sharpness 600
train align600 shapes_alignment 600
train align1200 shapes_alignment 1200
cd /work/main && .venv/bin/python docs/results/colour-words/paired.py $d/paired.json \
  three600=$d/three600/checkpoints/step_0000600 align600=$d/align600/checkpoints/step_0000600 \
  align1200=$d/align1200/checkpoints/step_0001200 > $d/paired.log 2>&1
echo done
