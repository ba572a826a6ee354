"""One checkpoint against a compare record's final models of the same training seed, paired
on the same prompts and noise (run from the repo root): did a recipe change move MIRO?

Usage: python docs/results/x-prediction/versus_record.py OUT.json CHECKPOINT RECORD SEED
(RECORD: a compare folder's `per_image.jsonl.gz`, e.g. docs/results/align-only/seed-0/). The
checkpoint is evaluated as the record's models were (16 prompts × 4 images per category, 25
Euler steps, ω = 3, sampler seed 0); its per-image scores are kept in its run's `evals/`.
"""

import json
import sys
from pathlib import Path

from miro_data.common import MiroError
from miro_train.experiments.common import EvalSettings, evaluate_checkpoint, metric_rewards
from miro_train.experiments.scores import estimates, read_scores
from miro_train.stats import fmt

CATS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
SHOWN = ("geneval", *(f"geneval/{c}" for c in CATS), "reward/noise", "reward/edge_sharpness")


def main(out: Path, checkpoint: Path, record: Path, seed: int) -> None:
    settings = EvalSettings(prompts_per_category=16, images_per_prompt=4)
    _, mine = evaluate_checkpoint(checkpoint, settings, metric_rewards(settings.rewards))
    rows = read_scores(record / "per_image.jsonl.gz", ("arm", "step"))
    final = max(labels["step"] for labels, _, _ in rows)
    theirs = {lab["arm"]: s for lab, sd, s in rows if lab["step"] == final and sd == seed}
    table = {"checkpoint": str(checkpoint), "record": str(record), "step": final}
    print("| model | " + " | ".join(k.split("/")[-1] for k in SHOWN) + " |")
    print(
        f"| {checkpoint} | " + " | ".join(fmt(estimates(mine)[k], _scale(k)) for k in SHOWN) + " |"
    )
    for arm, scores in theirs.items():
        if scores.prompts != mine.prompts:
            raise MiroError(f"{record}: its {arm} was evaluated on other prompts")
        diff = estimates(mine, scores)
        table[f"− {arm}"] = {k: diff[k].to_dict() for k in diff}
        own = estimates(scores)
        print(f"| {arm} (record) | " + " | ".join(fmt(own[k], _scale(k)) for k in SHOWN) + " |")
        print(f"| … − {arm} | " + " | ".join(fmt(diff[k], _scale(k)) for k in SHOWN) + " |")
    out.write_text(json.dumps(table, indent=1))


def _scale(metric: str) -> float:
    return 100 if metric.startswith("geneval") else 1


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
