"""Experiment `single-vs-multi`: one model per reward vs one model conditioned on all of them.

The reward-hacking table: every model is evaluated at its own "all high" target (guided), on
every metric. A single-reward model may buy its own reward with the others (variance of the
Laplacian alone rewards noise); the multi-reward model should stay close to the best single
model on every metric. With `--train-seeds` every model is trained once per seed; figures are
means over seeds with 95 % intervals, and each model's paired difference to the baseline is
reported with its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_data.checks import check_names
from miro_data.common import MiroError, save_json
from miro_data.options import NAMES, opt
from miro_data.processes import owns_output
from miro_train.data import open_shards
from miro_train.experiments.common import (
    SEEDS,
    EvalSettings,
    TrainSettings,
    check_train_seeds,
    evaluate_checkpoint,
    metric_rewards,
    seed_runs,
    train_arm,
    write_report,
)
from miro_train.experiments.compare import TRAIN_SEEDS_HELP
from miro_train.experiments.plots import radar_plot
from miro_train.experiments.scores import (
    Scores,
    difference_table,
    estimates,
    intervals_of,
    metric_table,
    result_of,
    stack_seeds,
    to_dicts,
    write_scores,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SingleVsMultiConfig:
    """Which rewards get a model of their own; optionally reuse finished runs."""

    shards: Path = field(metadata=opt())
    out: Path = field(metadata=opt())
    rewards: tuple[str, ...] | None = field(  # None: every reward in the manifest
        default=None, metadata=opt(parser=NAMES, help="Rewards (default: all in the manifest).")
    )
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    multi: Path | None = field(  # else trained here
        default=None, metadata=opt(help="Reuse this multi-reward (MIRO) run.")
    )
    baseline: Path | None = field(  # else trained here
        default=None, metadata=opt(help="Reuse this baseline run.")
    )
    train_seeds: tuple[int, ...] | None = field(  # None: one run per model, seeded by train.seed
        default=None, metadata=opt(parser=SEEDS, help=TRAIN_SEEDS_HELP)
    )

    def __post_init__(self) -> None:
        check_names("--rewards", self.rewards)
        if self.rewards is not None and len(self.rewards) < 2:
            raise MiroError("single-vs-multi needs at least two rewards")
        check_train_seeds(self.train_seeds)
        reused = [
            flag for flag, run in (("--multi", self.multi), ("--baseline", self.baseline)) if run
        ]
        if reused and self.train_seeds is not None and len(self.train_seeds) > 1:
            raise MiroError(f"{' and '.join(reused)} reuse one run: with several --train-seeds "
                            "every model is trained here, once per seed")  # fmt: skip


def _train_and_score(
    cfg: SingleVsMultiConfig, rewards: tuple[str, ...]
) -> tuple[dict[str, Scores], dict[str, int]]:
    """Train every model once per training seed (or reuse a given run), score each final
    checkpoint; the per-image scores stacked over seeds, and each model's step."""
    arms: dict[str, dict[str, Any]] = {f"only {r}": {"rewards": (r,)} for r in rewards}
    arms["miro"] = {"rewards": rewards}
    arms["baseline"] = {"baseline": True}
    reused = {"miro": cfg.multi, "baseline": cfg.baseline}
    scorers = metric_rewards(cfg.eval.rewards, also=rewards,
                             allow_download=cfg.eval.sampler.allow_download)  # fmt: skip
    scores: dict[str, Scores] = {}
    steps: dict[str, int] = {}
    for name, how in arms.items():
        folder = cfg.out / ("multi" if name == "miro" else name.replace("only ", "single-"))
        given = reused.get(name)
        runs = [(cfg.train, given)] if given else seed_runs(folder, cfg.train, cfg.train_seeds)
        per_seed = []
        for train, run in runs:
            train_arm(cfg.shards, run, train, **how)
            steps[name], per_image = evaluate_checkpoint(run, cfg.eval, scorers)
            per_seed.append(per_image)
        scores[name] = stack_seeds(per_seed)
    return scores, steps


@owns_output  # one process writes an output folder at a time
def single_vs_multi(cfg: SingleVsMultiConfig) -> dict[str, Any]:
    rewards = cfg.rewards or tuple(open_shards(cfg.shards).rewards)
    if len(rewards) < 2:
        raise MiroError("single-vs-multi needs at least two rewards")
    scores, steps = _train_and_score(cfg, rewards)
    results = {name: result_of(s, step=steps[name]) for name, s in scores.items()}
    differences = {f"{name} − baseline": estimates(s, scores["baseline"])
                   for name, s in scores.items() if name != "baseline"}  # fmt: skip
    bands = {name: {k: e for k, e in intervals_of(r).items() if not k.startswith("geneval/")}
             for name, r in results.items()}  # fmt: skip
    verdict = hacking_verdict(
        {n: {k: e.value for k, e in b.items()} for n, b in bands.items()}, rewards
    )
    write_scores(cfg.out / "per_image.jsonl", [({"model": n}, s) for n, s in scores.items()],
                 cfg.train_seeds or (cfg.train.seed,))  # fmt: skip
    save_json(cfg.out / "results.json", {"config": cfg, "results": results, "verdict": verdict,
              "differences": {k: to_dicts(d) for k, d in differences.items()}})  # fmt: skip
    radar_plot(bands, cfg.out / "radar.png")
    seeds = ", ".join(map(str, cfg.train_seeds or (cfg.train.seed,)))
    write_report(cfg.out, "Single-reward models vs MIRO", [
        f"Each model trained with the same settings ({cfg.train.steps} steps, `{cfg.train.model}`, "
        f"training seed(s) {seeds}) and sampled at its own all-high target, ω = {cfg.eval.sampler.guidance}. "
        "Means over seeds with 95 % bootstrap intervals in brackets.",
        metric_table(results),
        "## Paired differences to the baseline (✓: interval above zero)\n\n" + difference_table(differences),
        "## Reward hacking\n\n" + "\n".join(f"- {line}" for line in verdict["lines"]),
        "![radar](radar.png)",
    ])  # fmt: skip
    return {"results": results, "verdict": verdict, "differences": differences}


def hacking_verdict(table: dict[str, dict[str, float]], rewards: tuple[str, ...]) -> dict[str, Any]:
    """Which single-reward models trade other rewards for their own, and MIRO's gap to the best.

    Changes are relative to the baseline and expressed as a fraction of each metric's spread
    across all models, so rewards on different scales compare.
    """
    metrics = list(table["baseline"])
    spread = {
        m: (max(t[m] for t in table.values()) - min(t[m] for t in table.values())) or 1.0
        for m in metrics
    }
    lines, hackers = [], []
    for r in rewards:
        single = table[f"only {r}"]
        own = f"reward/{r}"
        gain = (single[own] - table["baseline"][own]) / spread[own]
        losses = {m: (single[m] - table["baseline"][m]) / spread[m] for m in metrics if m != own}
        worst = min(losses, key=losses.get)  # type: ignore[arg-type]
        if gain > 0 and losses[worst] < 0:
            hackers.append(r)
        lines.append(
            f"only {r}: own reward {gain:+.2f} of the spread vs baseline; worst other metric {worst} {losses[worst]:+.2f}"
        )
    gaps = {
        m: (max(table[f"only {r}"][m] for r in rewards) - table["miro"][m]) / spread[m]
        for m in metrics
    }
    lines.append("MIRO's gap to the best single-reward model, per metric (fraction of the spread; ≤ 0 means MIRO is as good or better): "
                 + ", ".join(f"{m} {g:+.2f}" for m, g in gaps.items()))  # fmt: skip
    return {"hackers": hackers, "miro_gap": gaps, "lines": lines}
