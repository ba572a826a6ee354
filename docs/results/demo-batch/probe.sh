#!/usr/bin/env bash
# Demo-budget probe: batch 16 × 2,400 steps vs the demo's batch 64 × 600 (same samples seen).
set -uo pipefail
export MIRO_NO_PROGRESS=1
m=/work/main/.venv/bin/miro
d=/work/runs/demo-bs
r="--rewards shapes_alignment,noise,edge_sharpness --log-every 100"
[ -d $d/bs16/checkpoints/step_0002400 ] || { /usr/bin/time -v $m train /work/runs/d20k/train --out $d/bs16 $r --batch-size 16 --steps 2400 --ckpt-every 600 > $d/bs16.log 2>&1; }
[ -d $d/bs64/checkpoints/step_0000600 ] || { /usr/bin/time -v $m train /work/runs/d20k/train --out $d/bs64 $r --steps 600 --ckpt-every 600 > $d/bs64.log 2>&1; }
cd /work/main && .venv/bin/python docs/results/colour-words/paired.py $d/paired.json \
  bs64=$d/bs64/checkpoints/step_0000600 bs16=$d/bs16/checkpoints/step_0002400 \
  bs16-600=$d/bs16/checkpoints/step_0000600 > $d/paired.log 2>&1
echo done
