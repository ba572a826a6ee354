"""README's "4 levels − 8 levels (paired)" figures from the two records (run from the repo root:
python docs/results/levels-4/versus8.py): at every evaluated step, the 4-level MIRO against the
8-level MIRO of ../compare-3500 — the same prompts, noise and training seeds, so the difference
is paired image for image — with its 95 % bootstrap interval, overall and per category."""

from pathlib import Path

from miro_train.experiments.scores import Scores, estimates, read_scores, stack_seeds
from miro_train.stats import fmt

RESULTS = Path(__file__).parent.parent
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def miro_by_step(record: str) -> dict[int, dict[int, Scores]]:
    """step → training seed → the MIRO arm's scores, over every seed-N folder of a record."""
    out: dict[int, dict[int, Scores]] = {}
    for path in sorted((RESULTS / record).glob("seed-*/per_image.jsonl.gz")):
        for labels, seed, scores in read_scores(path, ("arm", "step")):
            if labels["arm"] == "miro":
                out.setdefault(labels["step"], {})[seed] = scores
    return out


four, eight = miro_by_step("levels-4"), miro_by_step("compare-3500")
seeds = sorted(set.intersection(*(set(s) for s in (*four.values(), *eight.values()))))
print(f"training seeds {', '.join(map(str, seeds))}")
print("| step | 4 − 8 levels, GenEval | " + " | ".join(CATEGORIES) + " |")
print("|---" * (2 + len(CATEGORIES)) + "|")
for step in sorted(four.keys() & eight.keys()):
    a = stack_seeds([four[step][s] for s in seeds])
    b = stack_seeds([eight[step][s] for s in seeds])
    diff = estimates(a, b)
    cells = [f"{100 * diff[f'geneval/{c}'].value:+.1f}" for c in CATEGORIES]
    sign = "+" if diff["geneval"].value > 0 else ""
    print(f"| {step:,} | {sign}{fmt(diff['geneval'], 100)} | " + " | ".join(cells) + " |")
