"""Two records' MIRO arms against each other, paired (run from the repo root:
python docs/results/versus.py A B, e.g. levels-4 compare-3500): at every step both evaluated,
A's MIRO − B's MIRO over the training seeds both hold — the same prompts and noise, so the
difference is paired image for image — with its 95 % bootstrap interval, overall and per
category. README's "4 levels − 8 levels" and "alignment only − three rewards" rows."""

import sys
from pathlib import Path

from miro_train.experiments.scores import Scores, estimates, read_scores, stack_seeds
from miro_train.stats import fmt

RESULTS = Path(__file__).parent
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def miro_by_step(record: str) -> dict[int, dict[int, Scores]]:
    """step → training seed → the MIRO arm's scores, over every seed-N folder of a record."""
    out: dict[int, dict[int, Scores]] = {}
    for path in sorted((RESULTS / record).glob("seed-*/per_image.jsonl.gz")):
        for labels, seed, scores in read_scores(path, ("arm", "step")):
            if labels["arm"] == "miro":
                out.setdefault(labels["step"], {})[seed] = scores
    return out


a_name, b_name = sys.argv[1:3]
a, b = miro_by_step(a_name), miro_by_step(b_name)
seeds = sorted(set.intersection(*(set(s) for s in (*a.values(), *b.values()))))
print(f"{a_name} − {b_name}, training seeds {', '.join(map(str, seeds))}")
print("| step | GenEval | " + " | ".join(CATEGORIES) + " |")
print("|---" * (2 + len(CATEGORIES)) + "|")
for step in sorted(a.keys() & b.keys()):
    diff = estimates(stack_seeds([a[step][s] for s in seeds]),
                     stack_seeds([b[step][s] for s in seeds]))  # fmt: skip
    cells = [f"{100 * diff[f'geneval/{c}'].value:+.1f}" for c in CATEGORIES]
    sign = "+" if diff["geneval"].value > 0 else ""
    print(f"| {step:,} | {sign}{fmt(diff['geneval'], 100)} | " + " | ".join(cells) + " |")
