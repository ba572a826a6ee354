"""Experiment `single-vs-multi`: one model per reward vs one model conditioned on all of them.

The reward-hacking table: every model is evaluated at its own "all high" target (guided), on
every metric. A single-reward model may buy its own reward with the others (variance of the
Laplacian alone rewards noise); the multi-reward model should stay close to the best single
model on every metric.
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
    EvalSettings,
    TrainSettings,
    evaluate,
    load_for,
    metric_rewards,
    metric_table,
    metrics_of,
    train_arm,
    write_report,
)
from miro_train.experiments.plots import radar_plot

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

    def __post_init__(self) -> None:
        check_names("--rewards", self.rewards)
        if self.rewards is not None and len(self.rewards) < 2:
            raise MiroError("single-vs-multi needs at least two rewards")


@owns_output  # one process writes an output folder at a time
def single_vs_multi(cfg: SingleVsMultiConfig) -> dict[str, Any]:
    rewards = cfg.rewards or tuple(open_shards(cfg.shards).rewards)
    if len(rewards) < 2:
        raise MiroError("single-vs-multi needs at least two rewards")
    runs: dict[str, Path] = {f"only {r}": cfg.out / f"single-{r}" for r in rewards}
    runs["miro"] = cfg.multi or cfg.out / "multi"
    runs["baseline"] = cfg.baseline or cfg.out / "baseline"
    for name, run in runs.items():
        if name == "miro":
            train_arm(cfg.shards, run, cfg.train, rewards=rewards)
        elif name == "baseline":
            train_arm(cfg.shards, run, cfg.train, baseline=True)
        else:
            train_arm(cfg.shards, run, cfg.train, rewards=(name.removeprefix("only "),))
    scorers = metric_rewards(cfg.eval.rewards, also=rewards,
                             allow_download=cfg.eval.sampler.allow_download)  # fmt: skip
    results = {
        name: evaluate(load_for(run, cfg.eval), cfg.eval, rewards=scorers)[0]
        for name, run in runs.items()
    }
    table = {
        name: {k: v for k, v in metrics_of(r).items() if not k.startswith("geneval/")}
        for name, r in results.items()
    }
    verdict = hacking_verdict(table, rewards)
    save_json(cfg.out / "results.json", {"config": cfg, "results": results, "verdict": verdict})
    radar_plot(table, cfg.out / "radar.png")
    write_report(cfg.out, "Single-reward models vs MIRO", [
        f"Each model trained with the same settings ({cfg.train.steps} steps, `{cfg.train.model}`) and "
        f"sampled at its own all-high target, ω = {cfg.eval.sampler.guidance}.",
        metric_table(results),
        "## Reward hacking\n\n" + "\n".join(f"- {line}" for line in verdict["lines"]),
        "![radar](radar.png)",
    ])  # fmt: skip
    return {"results": results, "verdict": verdict}


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
