#!/usr/bin/env bash
# The main job on the embedded Shapes World corpus, one real CLI command per stage.
# Usage: scripts/demo.sh OUT_DIR   (QUICK=1: 2,000 images and 150 steps, a quicker look;
#                                   DATA_ONLY=1: stop after the data stages 1–7)
set -euo pipefail
out=${1:-demo}
miro=${MIRO:-.venv/bin/miro}
if [[ -n "${QUICK:-}" ]]; then n=2000; shard=500; steps=150; else n=20000; shard=2000; steps=600; fi
# Batch 16, not the default 64: at this budget GenEval is the same within the noise (README,
# "The demo's batch size") and training takes a third of the time.
batch=16
conditioning=shapes_alignment  # see README, "Which rewards MIRO conditions on here"
# The backbone predicts the clean image, not the velocity: at this budget that clears the grain
# off the grounds and draws more single objects (README, "The demo's recipe: x-prediction").
prediction=x
export MIRO_NO_PROGRESS=${MIRO_NO_PROGRESS:-}
rm -rf "$out"
mkdir -p "$out"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "1. synth: $n Shapes World images with captions and the corpus's defects"
$miro data synth "$out/corpus" --n "$n" --size 32 --seed 0

step "2. download: serve them on 127.0.0.1 and fetch them with img2dataset"
$miro data download "$out/corpus/urls.parquet" "$out/shards" \
  --image-size 32 --resize-mode no --encode-format png --shard-size "$shard" --processes 2 --threads 16

step "3. annotate: six weight-free rewards into DuckDB (2 workers)"
$miro data annotate "$out/shards" "$out/corpus.duckdb" \
  --rewards sharpness,edge_sharpness,noise,colorfulness,contrast,shapes_alignment --workers 2

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
         round(avg(edge_sharpness), 3) AS edge_sharpness, round(avg(contrast), 1) AS contrast
  FROM d, (VALUES ('none'), ('blur'), ('noise'), ('contrast'), ('jpeg'), ('caption')) t(defect)
  WHERE (defect = 'none' AND deg = '[]') OR deg LIKE '%\"' || defect || '\"%'
  GROUP BY defect ORDER BY n DESC"

step "7. reshard: shuffled training shards carrying scores, bins and bin values"
$miro data reshard "$out/shards" "$out/corpus.duckdb" "$out/train" --shard-size "$shard"

[[ -z "${DATA_ONLY:-}" ]] || exit 0  # experiments reuse the data stages (docs/results)

step "8. train: a tiny MIRO model ($steps steps of $batch images) conditioned on $conditioning"
$miro train "$out/train" --out "$out/run" --rewards "$conditioning" --steps "$steps" \
  --batch-size "$batch" --prediction "$prediction" --ckpt-every "$steps" --log-every 50

step "9. sample: multi-reward guidance, s+ = all high vs s- = all low"
$miro sample "$out/run" --out "$out/samples" --n 6 --guidance 3 --steps 25 \
  -p "a photo of a red circle" -p "a photo of a blue square and a yellow triangle" \
  -p "a photo of three triangles" -p "a photo of a green circle left of a purple square"

step "10. GenEval on Shapes World (the detector checks every image; the experiments' 384 images)"
$miro eval geneval "$out/run" --out "$out/geneval" --prompts-per-category 16 --images-per-prompt 4 \
  --guidance 3 --steps 25

step "11. report"
$miro report "$out/report.html" --title "miro demo: MIRO on Shapes World" \
  --data "$out" --run "$out/run" --samples "$out/samples" --geneval "$out/geneval" \
  --note "$n Shapes World samples, $steps training steps of unet-tiny on this machine's CPU."

step "12. explore it in a browser (Overview, Bins, Query, Sample, Generate)"
echo "$miro serve $out/corpus.duckdb --shards $out/shards --run $out/run"
