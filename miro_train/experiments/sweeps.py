"""Experiments on one trained MIRO model: `sweep` (one reward's target from 0 to 1, the paper's
aesthetic-weight sweep) and `guidance` (GenEval and rewards vs the guidance scale ω).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from miro_data.checks import check_finite, check_names
from miro_data.common import MiroError, save_json
from miro_data.options import NAMES, NUMBERS, opt
from miro_data.processes import owns_output
from miro_train.experiments.common import (
    EvalSettings,
    evaluate,
    load_for,
    metric_rewards,
    metric_table,
    metrics_of,
    require_rewards,
    write_report,
)
from miro_train.experiments.plots import lines_plot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepConfig:
    """Sweep one reward's target (others at 1) at fixed guidance."""

    checkpoint: Path = field(metadata=opt(help="A MIRO checkpoint or run folder."))
    out: Path = field(metadata=opt())
    rewards: tuple[str, ...] | None = field(  # None: every reward of the checkpoint
        default=None,
        metadata=opt(parser=NAMES, help="Rewards to sweep, one at a time (default: all)."),
    )
    values: tuple[float, ...] = field(
        default=(0.0, 0.25, 0.5, 0.75, 1.0),
        metadata=opt(parser=NUMBERS, help="Targets of the swept reward."),
    )
    eval: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        check_names("--rewards", self.rewards)
        if not self.values:
            raise MiroError("--values names no target")
        for value in self.values:
            check_finite("--values", value, 0, 1)


@owns_output  # one process writes an output folder at a time
def sweep(cfg: SweepConfig) -> dict[str, Any]:
    """For each swept reward R and value v: s⁺ = all 1 except R = v, s⁻ = all 0; evaluate."""
    bundle = load_for(cfg.checkpoint, cfg.eval)
    require_rewards(bundle, "sweep")
    swept = list(cfg.rewards or bundle.rewards)
    unknown = [r for r in swept if r not in bundle.rewards]
    if unknown:
        raise MiroError(
            f"the checkpoint is not conditioned on {', '.join(unknown)}; it knows {', '.join(bundle.rewards)}"
        )
    scorers = metric_rewards(cfg.eval.rewards, also=swept,
                             allow_download=cfg.eval.sampler.allow_download)  # fmt: skip
    runs: dict[str, list[dict]] = {}
    for reward in swept:
        runs[reward] = []
        for value in cfg.values:
            # appended last, the swept value overrides any other target of this reward
            target = ",".join(filter(None, (cfg.eval.sampler.target, f"{reward}={value!r}")))
            sampler = replace(cfg.eval.sampler, target=target)
            result, _, _ = evaluate(bundle, cfg.eval, sampler=sampler, rewards=scorers)
            runs[reward].append({"value": value, **result})
            log.info(
                "sweep %s=%.2f: GenEval %.1f", reward, value, 100 * result["geneval"]["overall"]
            )
    trends = {r: _own_trend(r, runs[r]) for r in swept if f"reward/{r}" in metrics_of(runs[r][0])}
    results = {
        "config": cfg,
        "checkpoint": str(bundle.checkpoint),
        "step": bundle.step,
        "runs": runs,
        "trends": trends,
    }
    save_json(cfg.out / "results.json", results)
    series = {r: _series(runs[r]) for r in swept}
    lines_plot(
        list(cfg.values), series, "target of the swept reward (others at 1)", cfg.out / "sweep.png"
    )
    sections = [
        f"Checkpoint `{bundle.checkpoint}` (step {bundle.step}); one reward's target swept over "
        f"{list(cfg.values)}, the others at 1; s⁻ = all 0; ω = {cfg.eval.sampler.guidance}.",
        "## Does each reward's own score rise with its target?\n\n" + _trend_table(trends),
        *(
            f"## Sweep of {r}\n\n" + metric_table({f"{r}={x['value']:g}": x for x in runs[r]})
            for r in swept
        ),
        "![sweep](sweep.png)",
    ]
    write_report(cfg.out, "Reward-target sweep", sections)
    return results


def _series(runs: list[dict]) -> dict[str, list[float]]:
    flat = [metrics_of(r) for r in runs]
    keep = [k for k in flat[0] if not k.startswith("geneval/")]
    return {k: [f[k] for f in flat] for k in keep}


def _own_trend(reward: str, runs: list[dict]) -> dict[str, Any]:
    values = [r["value"] for r in runs]
    own = [metrics_of(r)[f"reward/{reward}"] for r in runs]
    rho = sps.spearmanr(values, own).statistic if len(set(own)) > 1 else float("nan")
    return {
        "first": own[0],
        "last": own[-1],
        "spearman": float(rho),
        "rises": bool(own[-1] > own[0] and rho > 0),
    }


def _trend_table(trends: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| reward | own score at target 0 | at target 1 | Spearman | rises |",
        "|---|---|---|---|---|",
    ]
    for r, t in trends.items():
        lines.append(
            f"| {r} | {t['first']:.4g} | {t['last']:.4g} | {t['spearman']:.2f} | {'yes' if t['rises'] else 'no'} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class GuidanceConfig:
    """GenEval and rewards vs ω for the default s⁺ / s⁻ contrast."""

    checkpoint: Path = field(metadata=opt(help="A MIRO checkpoint or run folder."))
    out: Path = field(metadata=opt())
    scales: tuple[float, ...] = field(
        default=(0.0, 1.0, 2.0, 3.0, 5.0, 7.0),
        metadata=opt(parser=NUMBERS, help="Guidance scales ω."),
    )
    eval: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        if not self.scales:
            raise MiroError("--scales names no guidance scale")
        for scale in self.scales:
            check_finite("--scales", scale, 0)


@owns_output  # one process writes an output folder at a time
def guidance(cfg: GuidanceConfig) -> dict[str, Any]:
    bundle = load_for(cfg.checkpoint, cfg.eval)
    require_rewards(bundle, "guidance")
    scorers = metric_rewards(cfg.eval.rewards, also=bundle.rewards,
                             allow_download=cfg.eval.sampler.allow_download)  # fmt: skip
    runs = []
    for omega in cfg.scales:
        sampler = replace(cfg.eval.sampler, guidance=omega)
        result, _, _ = evaluate(bundle, cfg.eval, sampler=sampler, rewards=scorers)
        runs.append({"guidance": omega, **result})
        log.info("ω=%.1f: GenEval %.1f", omega, 100 * result["geneval"]["overall"])
    best = int(np.argmax([r["geneval"]["overall"] for r in runs]))
    results = {"config": cfg, "checkpoint": str(bundle.checkpoint), "step": bundle.step, "runs": runs,
               "best_guidance": cfg.scales[best]}  # fmt: skip
    save_json(cfg.out / "results.json", results)
    lines_plot(
        list(cfg.scales), {"miro": _series(runs)}, "guidance scale ω", cfg.out / "guidance.png"
    )
    write_report(cfg.out, "Guidance scale", [
        f"Checkpoint `{bundle.checkpoint}` (step {bundle.step}); s⁺ = all 1, s⁻ = all 0; "
        f"{cfg.eval.sampler.steps} Euler steps. Best GenEval at ω = {cfg.scales[best]:g}.",
        metric_table({f"ω={r['guidance']:g}": r for r in runs}),
        "![guidance](guidance.png)",
    ])  # fmt: skip
    return results
