"""One recipe's models (several training seeds) under several sampler settings, each paired
against the first setting (run from the repo root).

Usage: python docs/results/x-prediction/sampler.py OUT.json RUNPREFIX SEEDS VARIANT ...
VARIANT is LABEL:FIELD=VALUE,… over the experiments' sampler (25 Euler steps, ω = 3, EMA
weights), e.g. `ref:` `w5:guidance=5` `e50:steps=50` `raw:weights=model` `s1:seed=1` (held-out
prompts and noise); otherwise the experiments' prompts and noise (16 prompts × 4 images per
category). Brackets are 95 % bootstrap intervals.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

from miro_train.experiments.common import (
    EXPERIMENT_SAMPLER,
    EvalSettings,
    evaluate_checkpoint,
    metric_rewards,
)
from miro_train.experiments.scores import estimates, stack_seeds
from miro_train.sampler import SamplerSettings
from miro_train.stats import fmt

CATS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
SHOWN = ("geneval", *(f"geneval/{c}" for c in CATS))
TYPES = {"steps": int, "guidance": float, "weights": str, "seed": int}


def parse(variant: str) -> tuple[str, SamplerSettings]:
    label, _, spec = variant.partition(":")
    changes = {}
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        changes[name] = TYPES[name](value)
    return label, replace(EXPERIMENT_SAMPLER, **changes)


def main(out: Path, prefix: str, seeds: str, variants: list[str]) -> None:
    stacked, table = {}, {}
    for variant in variants:
        label, sampler = parse(variant)
        settings = EvalSettings(prompts_per_category=16, images_per_prompt=4, sampler=sampler)
        rewards = metric_rewards(settings.rewards)
        runs = [Path(f"{prefix}{seed}") for seed in seeds.split(",")]
        stacked[label] = stack_seeds([evaluate_checkpoint(r, settings, rewards)[1] for r in runs])
    first = next(iter(stacked))
    print("| variant | " + " | ".join(k.removeprefix("geneval/") for k in SHOWN) + " |")
    for label, scores in stacked.items():
        own = estimates(scores)
        table[label] = {"estimates": {k: own[k].to_dict() for k in own}}
        print(f"| {label} | " + " | ".join(fmt(own[k], 100) for k in SHOWN) + " |")
        if label != first:
            diff = estimates(scores, stacked[first])
            table[label]["vs_first"] = {k: diff[k].to_dict() for k in diff}
            print(f"| … − {first} | " + " | ".join(fmt(diff[k], 100) for k in SHOWN) + " |")
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:])
