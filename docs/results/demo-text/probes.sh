#!/usr/bin/env bash
# The levers of this record at the demo's budget (x-prediction, alignment alone, batch 16),
# training seeds 0, 1, 2, each paired with the demo's recipe (../x-prediction's x600s runs) on
# the experiments' evaluation; then the text-reliance and shape-following measures.
# Usage: bash docs/results/demo-text/probes.sh SHARDS RUNS   (from the repo root; SHARDS: the
# demo's training shards, scripts/demo.sh stages 1–7; RUNS must hold the runs of
# ../x-prediction/demo.sh and full.sh: x600s*, v600s*, x1200s0, xfull0)
# The three probe-build arms need probe.patch applied in a separate worktree: PROBE=path/to/it.
set -euo pipefail
shards=${1:?shards folder}
runs=${2:?folder for the runs}
py=${PYTHON:-.venv/bin/python}
miro=${MIRO:-.venv/bin/miro}
export MIRO_NO_PROGRESS=1
train() {  # label steps seed extra...
  local label=$1 steps=$2 seed=$3
  shift 3
  [[ -d $runs/$label$seed/checkpoints/step_$(printf %07d "$steps") ]] ||
    $miro train "$shards" --out "$runs/$label$seed" --rewards shapes_alignment --batch-size 16 \
      --steps "$steps" --ckpt-every "$steps" --log-every 100 --seed "$seed" --prediction x "$@"
}
here=docs/results/demo-text
for seed in 0 1 2; do
  train xs3_600s 600 $seed --time-shift 3
  train xs3_1000s 1000 $seed --time-shift 3
  train xh_1000s 1000 $seed --time-shift 3 --time-shift-share 0.5
done
$py docs/results/x-prediction/arms.py $here/arms-shift.json 0,1,2 x600="$runs/x600s" \
  xs3_600="$runs/xs3_600s" xs3_1000="$runs/xs3_1000s" xh_1000="$runs/xh_1000s"
if [[ -n "${PROBE:-}" ]]; then  # a worktree with probe.patch applied, its venv beside it
  (cd "$PROBE" && export PYTHONPATH=$PROBE && for seed in 0 1 2; do
    MIRO_TEXT_LR_MULT=10 train e10_600s 600 $seed
    MIRO_TEXT_INIT_STD=1 train i1_600s 600 $seed
    MIRO_POOL_TEXT=1 train pt_600s 600 $seed
    MIRO_CFM_LAMBDA=0.05 train cfm05_600s 600 $seed
  done)
  $py docs/results/x-prediction/arms.py $here/arms-cfm.json 0,1,2 x600="$runs/x600s" \
    cfm="$runs/cfm05_600s"
  $py $here/follow.py $here/follow-cfm.json 3 cfm="$runs/cfm05_600s0,$runs/cfm05_600s1,$runs/cfm05_600s2"
  $py docs/results/x-prediction/arms.py $here/arms-text.json 0,1,2 x600="$runs/x600s" \
    e10="$runs/e10_600s" i1="$runs/i1_600s"
  (cd "$PROBE" && MIRO_POOL_TEXT=1 PYTHONPATH=$PROBE $py docs/results/x-prediction/arms.py \
    "$OLDPWD/$here/arms-pool.json" 0,1,2 x600="$runs/x600s" pt="$runs/pt_600s")
  for swap in shape colour; do
    (cd "$PROBE" && PYTHONPATH=$PROBE $miro eval text-reliance "$runs/e10_600s0" "$runs/i1_600s0" \
      --shards "$shards" --swap $swap --out "$OLDPWD/$here/text-reliance-probe-$swap.json")
    (cd "$PROBE" && PYTHONPATH=$PROBE $miro eval text-reliance "$runs/cfm05_600s0" \
      --shards "$shards" --swap $swap --out "$OLDPWD/$here/text-reliance-cfm-$swap.json")
    (cd "$PROBE" && MIRO_POOL_TEXT=1 PYTHONPATH=$PROBE $miro eval text-reliance "$runs/pt_600s0" \
      --shards "$shards" --swap $swap --out "$OLDPWD/$here/text-reliance-pool-$swap.json")
  done
fi
for swap in caption shape colour; do
  $miro eval text-reliance "$runs/x600s0" "$runs/v600s0" "$runs/xfull0" --shards "$shards" \
    --swap $swap --out $here/text-reliance-$swap.json
done
for swap in shape colour; do
  $miro eval text-reliance "$runs/xs3_600s0" "$runs/xs3_1000s0" "$runs/xh_1000s0" "$runs/x1200s0" \
    --shards "$shards" --swap $swap --out $here/text-reliance-shift-$swap.json
done
$py $here/follow.py $here/follow.json 3,8 x600="$runs/x600s0,$runs/x600s1,$runs/x600s2" \
  v600="$runs/v600s0,$runs/v600s1,$runs/v600s2" xfull="$runs/xfull0"
$py docs/results/x-prediction/sampler.py $here/sampler-x-held2.json "$runs/x600s" 0,1,2 \
  w3s2:seed=2 w8s2:guidance=8,seed=2
