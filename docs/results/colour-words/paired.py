"""GenEval of several checkpoints on the same prompts and noise, each against the first as a
paired difference: how a recipe change moves every category (run from the repo root).

Usage: python docs/results/colour-words/paired.py OUT.json LABEL=CHECKPOINT ...

The experiments' evaluation (`miro experiment compare`'s: 16 prompts × 4 images per category,
25 Euler steps, ω = 3, s⁺ all high vs s⁻ all low, sampler seed 0); each checkpoint's per-image
scores are kept in its run's `evals/`, so a rerun only evaluates what is new. Brackets are 95 %
bootstrap intervals over prompts and images; "vs first" is the paired difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from miro_train.experiments.common import EvalSettings, evaluate_checkpoint, metric_rewards
from miro_train.experiments.scores import estimates
from miro_train.stats import fmt

SHOWN = ("geneval", *(f"geneval/{c}" for c in (
    "single_object", "two_object", "counting", "colors", "position", "color_attr")))  # fmt: skip


def main(out: Path, items: list[str]) -> None:
    settings = EvalSettings(prompts_per_category=16, images_per_prompt=4)
    rewards = metric_rewards(settings.rewards)
    runs = [item.rpartition("=")[::2] for item in items]  # labels may hold "="
    scores = {label: evaluate_checkpoint(Path(path), settings, rewards)[1] for label, path in runs}
    first = runs[0][0]
    print("| model | " + " | ".join(k.removeprefix("geneval/") for k in SHOWN) + " |")
    print("|---|" + "---|" * len(SHOWN))
    table = {}
    for label, path in runs:
        own = estimates(scores[label])
        diff = estimates(scores[label], scores[first]) if label != first else None
        table[label] = {"checkpoint": path, "estimates": {k: own[k].to_dict() for k in SHOWN}}
        print(f"| {label} | " + " | ".join(fmt(own[k], 100) for k in SHOWN) + " |")
        if diff is not None:
            table[label]["vs_first"] = {k: diff[k].to_dict() for k in SHOWN}
            print(f"| … − {first} | " + " | ".join(fmt(diff[k], 100) for k in SHOWN) + " |")
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
