#!/usr/bin/env bash
# Demo-budget probe 2: batch 16 with its own cosine in 600 and 1,200 steps.
set -uo pipefail
export MIRO_NO_PROGRESS=1
m=/work/main/.venv/bin/miro
d=/work/runs/demo-bs
r="--rewards shapes_alignment,noise,edge_sharpness --log-every 100 --batch-size 16"
for n in 600 1200; do
  [ -d $d/bs16c$n/checkpoints/step_$(printf %07d $n) ] || /usr/bin/time -v $m train /work/runs/d20k/train --out $d/bs16c$n $r --steps $n --ckpt-every $n > $d/bs16c$n.log 2>&1
done
cd /work/main && .venv/bin/python docs/results/colour-words/paired.py $d/paired2.json \
  bs64=$d/bs64/checkpoints/step_0000600 bs16c600=$d/bs16c600/checkpoints/step_0000600 \
  bs16c1200=$d/bs16c1200/checkpoints/step_0001200 bs16=$d/bs16/checkpoints/step_0002400 > $d/paired2.log 2>&1
echo done
