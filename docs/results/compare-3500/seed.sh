#!/usr/bin/env bash
# One more training seed for two records at once, on any machine: this folder's compare (8
# levels, both arms) and ../levels-4's (MIRO on 4-level shards; its baseline arm is this
# compare's, linked, since a baseline never reads the bins). Then both records' all/ again.
# Usage (repo root, the CPU otherwise idle, ≈ 2 h on 2 cores):
#   bash docs/results/compare-3500/seed.sh N [RUNS]   (RUNS: scratch folder, default runs/)
# The data stages are the demo's (scripts/demo.sh 1–7, called) and rebuild the same samples on
# any machine: the shards' digests must be the records' (checked below), else `combine` would
# refuse the new seed anyway.
set -euo pipefail
n=${1:?training seed}; runs=${2:-runs}
miro=${MIRO:-.venv/bin/miro}
docs=docs/results
recipe=(--rewards shapes_alignment,noise,edge_sharpness --steps 3500 --eval-every 500
        --prompts-per-category 16 --images-per-prompt 4 --guidance 3 --train-seeds "$n")

digest() { .venv/bin/python -c "import sys; from miro_train.data import open_shards
print(open_shards(sys.argv[1]).manifest.digest())" "$1"; }
expect() {  # the digest this record's results.json holds
  .venv/bin/python -c "import json, sys
print(json.load(open(sys.argv[1]))['config']['shards_digest'])" "$docs/$1/seed-0/results.json"
}

d=$runs/data
if [[ ! -f $d/train/manifest.json ]]; then
  DATA_ONLY=1 MIRO=$miro bash scripts/demo.sh "$d"  # stages 1–7: corpus.duckdb and train/
  # 4 levels as edge version 2 of a copy, as levels-4 was made: the version is in the digest
  mkdir -p "$d/bins4"
  cp "$d/corpus.duckdb" "$d/bins4/corpus.duckdb"
  $miro data bins "$d/bins4/corpus.duckdb" --n-bins 4
  $miro data reshard "$d/shards" "$d/bins4/corpus.duckdb" "$d/bins4/train" --shard-size 2000
fi
for pair in "compare-3500 $d/train" "levels-4 $d/bins4/train"; do
  set -- $pair
  if [[ $(digest "$2") != $(expect "$1") ]]; then
    echo "$2 is not the data of $docs/$1 (shards digest $(digest "$2") ≠ $(expect "$1"))" >&2
    exit 2
  fi
done

$miro experiment compare "$d/train" "$runs/exp3/s$n" "${recipe[@]}"
mkdir -p "$runs/bins4/s$n/baseline"
ln -sfn "$(realpath "$runs/exp3/s$n/baseline/seed-$n")" "$runs/bins4/s$n/baseline/seed-$n"
$miro experiment compare "$d/bins4/train" "$runs/bins4/s$n" "${recipe[@]}"

for pair in "compare-3500 $runs/exp3/s$n" "levels-4 $runs/bins4/s$n"; do
  set -- $pair
  mkdir -p "$docs/$1/seed-$n"
  cp "$2/results.json" "$2/report.md" "$docs/$1/seed-$n/"
  gzip -n -9 -c "$2/per_image.jsonl" > "$docs/$1/seed-$n/per_image.jsonl.gz"
  $miro experiment combine "$docs/$1"/seed-* --out "$runs/all-$1"
  cp "$runs/all-$1"/{results.json,report.md,convergence.png} "$docs/$1/all/"
done
