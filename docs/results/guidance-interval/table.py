"""The guidance-interval table of README "Results" from per_image.jsonl.gz (run from the repo root:
python docs/results/guidance-interval/table.py): per interval and ω, GenEval over the three
training seeds with its 95 % interval, and the paired difference to guidance everywhere at ω = 3."""

from pathlib import Path

from miro_train.experiments.scores import estimates, read_scores, stack_seeds
from miro_train.stats import fmt

HERE = Path(__file__).parent
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

groups: dict[tuple[str, float], list] = {}
for labels, _seed, scores in read_scores(HERE / "per_image.jsonl.gz", ("interval", "guidance")):
    groups.setdefault((labels["interval"], labels["guidance"]), []).append(scores)
stacked = {key: stack_seeds(per_seed) for key, per_seed in groups.items()}
reference = stacked[("0,1", 3.0)]
print(
    "| t where ω applies | ω | GenEval | − everywhere, ω = 3 (paired) | "
    + " | ".join(CATEGORIES)
    + " | noise | edge crispness |"
)
print("|---" * (6 + len(CATEGORIES)) + "|")
for (interval, omega), scores in stacked.items():
    est, diff = estimates(scores), estimates(scores, reference)
    cells = [f"{100 * est[f'geneval/{c}'].value:.1f}" for c in CATEGORIES]
    cells += [f"{est['reward/noise'].value:.2f}", f"{est['reward/edge_sharpness'].value:.3f}"]
    sign = "+" if diff["geneval"].value > 0 else ""
    print(
        f"| {interval} | {omega:g} | {fmt(est['geneval'], 100)} | "
        f"{sign}{fmt(diff['geneval'], 100)} | " + " | ".join(cells) + " |"
    )
