#!/usr/bin/env bash
# One more training seed of this record, on any machine: MIRO conditioned on shapes_alignment
# alone and the baseline, then all/ again. Where ../compare-3500/seed-N has recorded the
# baseline of seed N, it is borrowed (--baseline-from checks the shards' digest, recipe and
# evaluation against that record) and only MIRO trains. Usage (repo root, the CPU otherwise idle,
# ≈ 30 min on 2 cores with a recorded baseline, ≈ 1 h without):
#   bash docs/results/align-only/seed.sh N [RUNS]   (RUNS: scratch folder, default runs/)
set -euo pipefail
n=${1:?training seed}; runs=${2:-runs}
miro=${MIRO:-.venv/bin/miro}
docs=docs/results
d=$runs/data
if [[ ! -f $d/train/manifest.json ]]; then
  DATA_ONLY=1 MIRO=$miro bash scripts/demo.sh "$d"  # stages 1–7: the records' shards
fi
borrow=()
if [[ -f $docs/compare-3500/seed-$n/results.json ]]; then
  borrow=(--baseline-from "$docs/compare-3500/seed-$n")
fi
$miro experiment compare "$d/train" "$runs/align/s$n" --rewards shapes_alignment --steps 3500 \
  --eval-every 500 --prompts-per-category 16 --images-per-prompt 4 --guidance 3 \
  --train-seeds "$n" ${borrow[@]+"${borrow[@]}"}
mkdir -p "$docs/align-only/seed-$n" "$docs/align-only/all"
cp "$runs/align/s$n/results.json" "$runs/align/s$n/report.md" "$docs/align-only/seed-$n/"
gzip -n -9 -c "$runs/align/s$n/per_image.jsonl" > "$docs/align-only/seed-$n/per_image.jsonl.gz"
$miro experiment combine "$docs/align-only"/seed-* --out "$runs/all-align-only"
cp "$runs/all-align-only"/{results.json,report.md,convergence.png} "$docs/align-only/all/"
