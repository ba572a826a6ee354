"""The s⁻ table of README "Results" from per_image.jsonl.gz (run from the repo root:
python docs/results/negatives/table.py): per setting, GenEval over the three training seeds with
its 95 % interval, and the paired difference to the default (s⁻ all 0, ω = 3)."""

from pathlib import Path

from miro_train.experiments.scores import estimates, read_scores, stack_seeds
from miro_train.stats import fmt

HERE = Path(__file__).parent
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

groups: dict[str, list] = {}
for labels, _seed, scores in read_scores(HERE / "per_image.jsonl.gz", ("setting",)):
    groups.setdefault(labels["setting"], []).append(scores)
stacked = {setting: stack_seeds(per_seed) for setting, per_seed in groups.items()}
reference = stacked["high-3"]
print("| setting | GenEval | − default (paired) | " + " | ".join(CATEGORIES) + " |")
print("|---" * (3 + len(CATEGORIES)) + "|")
for setting, scores in stacked.items():
    est, diff = estimates(scores), estimates(scores, reference)["geneval"]
    cells = [f"{100 * est[f'geneval/{c}'].value:.1f}" for c in CATEGORIES]
    sign = "+" if diff.value > 0 else ""
    print(
        f"| {setting} | {fmt(est['geneval'], 100)} | {sign}{fmt(diff, 100)} | "
        + " | ".join(cells)
        + " |"
    )
