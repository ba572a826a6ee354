#!/usr/bin/env bash
# Demo budget: alignment + noise (clean images?) and alignment + edge_sharpness, batch 16, seed 0.
set -uo pipefail
export MIRO_NO_PROGRESS=1
m=/work/main/.venv/bin/miro
d=/work/runs/demo-align
train() {  # label rewards steps
  [ -d $d/$1/checkpoints/step_$(printf %07d $3) ] || /usr/bin/time -v $m train /work/runs/data/train --out $d/$1 \
    --rewards $2 --batch-size 16 --steps $3 --ckpt-every $3 --log-every 100 > $d/$1.log 2>&1
}
train alignnoise600 shapes_alignment,noise 600
train alignedge600 shapes_alignment,edge_sharpness 600
cd /work/main && .venv/bin/python docs/results/colour-words/paired.py $d/paired3.json \
  align600=$d/align600/checkpoints/step_0000600 alignnoise600=$d/alignnoise600/checkpoints/step_0000600 \
  alignedge600=$d/alignedge600/checkpoints/step_0000600 three600=$d/three600/checkpoints/step_0000600 > $d/paired3.log 2>&1
echo done
