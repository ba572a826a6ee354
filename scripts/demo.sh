#!/usr/bin/env bash
# The main job on the embedded Shapes World corpus, one real CLI command per stage.
# Usage: scripts/demo.sh OUT_DIR   (QUICK=1 for a one-minute look on a smaller corpus)
set -euo pipefail
out=${1:-demo}
miro=${MIRO:-.venv/bin/miro}
if [[ -n "${QUICK:-}" ]]; then n=2000; shard=500; else n=20000; shard=2000; fi
export MIRO_NO_PROGRESS=${MIRO_NO_PROGRESS:-}
rm -rf "$out"
mkdir -p "$out"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "1. synth: $n Shapes World images with captions and the corpus's defects"
$miro data synth "$out/corpus" --n "$n" --size 32 --seed 0

step "2. download: serve them on 127.0.0.1 and fetch them with img2dataset"
$miro data download "$out/corpus/urls.parquet" "$out/shards" \
  --image-size 32 --resize-mode no --encode-format png --shard-size "$shard" --processes 2 --threads 16

step "3. annotate: five weight-free rewards into DuckDB (2 workers)"
$miro data annotate "$out/shards" "$out/corpus.duckdb" \
  --rewards sharpness,noise,colorfulness,contrast,shapes_alignment --workers 2

step "4. bins: 8 quantile levels per reward (ties get a level each)"
$miro data bins "$out/corpus.duckdb" --n-bins 8 --export "$out/edges.json"

step "5. stats: distributions, bin edges and reward correlations"
$miro data stats "$out/corpus.duckdb" --plot "$out/stats.png"

step "6. query: which corruption moves which reward? (SQL over the wide view)"
$miro data query "$out/corpus.duckdb" "
  WITH d AS (SELECT w.*, json_extract_string(s.meta, '\$.degradations') AS deg
             FROM scores_wide w JOIN samples s USING (shard, key))
  SELECT defect, count(*) AS n, round(avg(shapes_alignment), 3) AS alignment,
         round(avg(sharpness)) AS sharpness, round(avg(noise), 2) AS noise,
         round(avg(contrast), 1) AS contrast, round(avg(colorfulness), 1) AS colorfulness
  FROM d, (VALUES ('none'), ('blur'), ('noise'), ('contrast'), ('jpeg'), ('caption')) t(defect)
  WHERE (defect = 'none' AND deg = '[]') OR deg LIKE '%\"' || defect || '\"%'
  GROUP BY defect ORDER BY n DESC"

step "7. reshard: shuffled training shards carrying scores, bins and bin values"
$miro data reshard "$out/shards" "$out/corpus.duckdb" "$out/train" --shard-size "$shard"

printf '\n\033[1mdone:\033[0m training shards in %s/train, plots in %s/stats.png\n' "$out" "$out"
