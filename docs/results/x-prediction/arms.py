"""Several recipes, each trained with several seeds, paired against the first: GenEval and the
image-quality rewards of each, stacked over the seeds, and each one's paired difference to the
first (run from the repo root).

Usage: python docs/results/x-prediction/arms.py OUT.json SEEDS LABEL=RUNPREFIX ...
(SEEDS "0,1,2": run folders RUNPREFIX0, RUNPREFIX1, …). The experiments' evaluation (16 prompts
× 4 images per category, 25 Euler steps, ω = 3, sampler seed 0: the same prompts and noise for
every model); each checkpoint's per-image scores are kept in its run's `evals/`. Brackets are
95 % bootstrap intervals (training seeds, prompts and images resampled).
"""

import json
import sys
from pathlib import Path

from miro_train.experiments.common import EvalSettings, evaluate_checkpoint, metric_rewards
from miro_train.experiments.scores import estimates, stack_seeds
from miro_train.stats import fmt

CATS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
SHOWN = ("geneval", *(f"geneval/{c}" for c in CATS), "reward/noise", "reward/edge_sharpness")


def scale(metric: str) -> float:
    return 100 if metric.startswith("geneval") else 1


def main(out: Path, seeds: str, arms: list[str]) -> None:
    settings = EvalSettings(prompts_per_category=16, images_per_prompt=4)
    rewards = metric_rewards(settings.rewards)
    stacked = {}
    for arm in arms:
        label, _, prefix = arm.partition("=")
        runs = [Path(f"{prefix}{seed}") for seed in seeds.split(",")]
        stacked[label] = stack_seeds([evaluate_checkpoint(r, settings, rewards)[1] for r in runs])
    first = next(iter(stacked))
    table = {}
    print("| arm | " + " | ".join(k.split("/")[-1] for k in SHOWN) + " |")
    for label, sc in stacked.items():
        own = estimates(sc)
        table[label] = {"estimates": {k: own[k].to_dict() for k in own}}
        print(f"| {label} | " + " | ".join(fmt(own[k], scale(k)) for k in SHOWN) + " |")
        if label != first:
            d = estimates(sc, stacked[first])
            table[label]["vs_first"] = {k: d[k].to_dict() for k in d}
            print(f"| … − {first} | " + " | ".join(fmt(d[k], scale(k)) for k in SHOWN) + " |")
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
