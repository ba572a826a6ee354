#!/usr/bin/env bash
# When do the words arrive? The 30-minute x-prediction run (../x-prediction/full.sh, seed 0:
# alignment alone, 3,500 steps of 64) at every checkpoint (500 steps = 32 k images): shape
# following (follow.py, 64 draws of each single-object prompt), and `miro eval geneval` on
# held-out noise (sampler seed 1): GenEval, shape and colour following, objects an image.
# Usage: bash docs/results/demo-text/curve.sh RUN OUT   (from the repo root; RUN: full.sh's
#        xfull0; OUT: a folder for the GenEval outputs)
set -euo pipefail
run=${1:?run folder}
out=${2:?folder for the GenEval outputs}
py=${PYTHON:-.venv/bin/python}
miro=${MIRO:-.venv/bin/miro}
here=docs/results/demo-text
export MIRO_NO_PROGRESS=1
steps=(0500 1000 1500 2000 2500 3000 3500)
models=()
for s in "${steps[@]}"; do models+=("s$((10#$s))=$run/checkpoints/step_000$s"); done
$py $here/follow.py $here/follow-curve.json 3 "${models[@]}"
for s in "${steps[@]}"; do
  [[ -f $out/s$s/results.json ]] ||
    $miro eval geneval "$run/checkpoints/step_000$s" --out "$out/s$s" --prompts-per-category 16 \
      --images-per-prompt 4 --guidance 3 --steps 25 --seed 1
done
# one row per checkpoint: images seen, training minutes, GenEval and the following figures
$py - "$run" "$out" > $here/curve-geneval.json <<'PY'
import json, sys
from pathlib import Path
run, out = map(Path, sys.argv[1:])
rows = {}
for folder in sorted(out.glob("s*")):
    r = json.loads((folder / "results.json").read_text())
    meta = json.loads((run / "checkpoints" / f"step_000{folder.name[1:]}" / "checkpoint.json").read_text())
    keep = ("overall", "interval", "categories", "intervals", "single_object_following",
            "single_object_objects", "colors_following", "colors_objects")
    rows[folder.name] = {"images": meta["step"] * meta["config"]["batch_size"],
                         "train_minutes": meta["train_seconds"] / 60} | {k: r[k] for k in keep}
print(json.dumps(rows, indent=1))
PY
