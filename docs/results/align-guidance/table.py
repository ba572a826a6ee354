"""The guidance-scale table of README "Results" from per_image.jsonl.gz (run from the repo root:
python docs/results/align-guidance/table.py): per ω, GenEval over the three training seeds of
the alignment-only MIRO with its 95 % interval and every category, and the paired difference
to ω = 3 (the default)."""

from pathlib import Path

from miro_train.experiments.scores import estimates, read_scores, stack_seeds
from miro_train.stats import fmt

HERE = Path(__file__).parent
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

groups: dict[float, list] = {}
for labels, _seed, scores in read_scores(HERE / "per_image.jsonl.gz", ("guidance",)):
    groups.setdefault(labels["guidance"], []).append(scores)
stacked = {omega: stack_seeds(per_seed) for omega, per_seed in sorted(groups.items())}
reference = stacked[3.0]
print(
    "| ω | GenEval | − ω = 3 (paired) | " + " | ".join(CATEGORIES) + " | noise | edge crispness |"
)
print("|---" * (5 + len(CATEGORIES)) + "|")
diffs = {omega: estimates(scores, reference) for omega, scores in stacked.items()}
for omega, scores in stacked.items():
    est, diff = estimates(scores), diffs[omega]
    cells = [f"{100 * est[f'geneval/{c}'].value:.1f}" for c in CATEGORIES]
    cells += [f"{est['reward/noise'].value:.2f}", f"{est['reward/edge_sharpness'].value:.3f}"]
    sign = "+" if diff["geneval"].value > 0 else ""
    print(
        f"| {omega:g} | {fmt(est['geneval'], 100)} | {sign}{fmt(diff['geneval'], 100)} | "
        + " | ".join(cells)
        + " |"
    )
print()
print("per category, − ω = 3 (paired):")
for omega, diff in diffs.items():
    print(
        f"ω = {omega:g}: " + ", ".join(f"{c} {fmt(diff[f'geneval/{c}'], 100)}" for c in CATEGORIES)
    )
