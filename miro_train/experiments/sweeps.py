"""Experiments on one trained MIRO model: `sweep` (one reward's target from 0 to 1, the paper's
aesthetic-weight sweep) and `guidance` (GenEval and rewards vs the guidance scale ω).

Every setting draws the same prompts with the same noise, so settings compare as paired
differences (each against the first setting), with 95 % bootstrap intervals.
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
    require_rewards,
    write_report,
)
from miro_train.experiments.plots import lines_plot
from miro_train.experiments.scores import (
    Scores,
    difference_table,
    estimates,
    intervals_of,
    metric_table,
    metrics_of,
    to_dicts,
    write_scores,
)
from miro_train.stats import Estimate, fmt

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
    scores: dict[str, list[Scores]] = {}
    for reward in swept:
        runs[reward], scores[reward] = [], []
        for value in cfg.values:
            # appended last, the swept value overrides any other target of this reward
            target = ",".join(filter(None, (cfg.eval.sampler.target, f"{reward}={value!r}")))
            sampler = replace(cfg.eval.sampler, target=target)
            result, per_image = evaluate(bundle, cfg.eval, sampler=sampler, rewards=scorers)
            runs[reward].append({"value": value, **result})
            scores[reward].append(per_image)
            log.info(
                "sweep %s=%.2f: GenEval %.1f", reward, value, 100 * result["geneval"]["overall"]
            )
    diffs = {r: _against_first(scores[r]) for r in swept}
    for r in swept:
        for run, d in zip(runs[r], diffs[r], strict=True):
            run["difference_to_first"] = to_dicts(d)
    trends = {r: _own_trend(r, runs[r], diffs[r][-1]) for r in swept
              if f"reward/{r}" in metrics_of(runs[r][0])}  # fmt: skip
    write_scores(cfg.out / "per_image.jsonl", [({"reward": r, "value": v}, s)
                 for r in swept for v, s in zip(cfg.values, scores[r], strict=True)])  # fmt: skip
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
        f"{list(cfg.values)}, the others at 1; s⁻ = all 0; ω = {cfg.eval.sampler.guidance}. "
        "95 % bootstrap intervals in brackets; differences are paired (same prompts and noise).",
        "## Does each reward's own score rise with its target?\n\n" + _trend_table(trends),
        *(_sweep_section(r, cfg.values, runs[r], diffs[r]) for r in swept),
        "![sweep](sweep.png)",
    ]
    write_report(cfg.out, "Reward-target sweep", sections)
    return results


def _sweep_section(reward: str, values: tuple[float, ...], runs: list[dict],
                   diffs: list[dict[str, Estimate]]) -> str:  # fmt: skip
    """One swept reward: figures per target, and each target paired with the first."""
    rows = {f"{reward}={v:g}": d for v, d in zip(values[1:], diffs[1:], strict=True)}
    return (
        f"## Sweep of {reward}\n\n"
        + metric_table({f"{reward}={x['value']:g}": x for x in runs})
        + f"\n\nDifference to {reward}={values[0]:g} (✓: interval above zero):\n\n"
        + difference_table(rows or {"—": diffs[0]})
    )


def _against_first(scores: list[Scores]) -> list[dict[str, Estimate]]:
    """Each setting's paired difference to the first setting (the first's own is zero)."""
    return [estimates(s, scores[0]) for s in scores]


def _series(runs: list[dict]) -> dict[str, list[Estimate]]:
    flat = [intervals_of(r) for r in runs]
    keep = [k for k in flat[0] if not k.startswith("geneval/")]
    return {k: [f[k] for f in flat] for k in keep}


def _own_trend(reward: str, runs: list[dict], last_vs_first: dict[str, Estimate]) -> dict[str, Any]:
    """Does the reward's own score rise with its target: Spearman over the settings, and the
    paired difference of the last target to the first, which must lie above zero."""
    values = [r["value"] for r in runs]
    own = [metrics_of(r)[f"reward/{reward}"] for r in runs]
    rho = sps.spearmanr(values, own).statistic if len(set(own)) > 1 else float("nan")
    diff = last_vs_first[f"reward/{reward}"]
    return {
        "first": own[0],
        "last": own[-1],
        "spearman": float(rho),
        "difference": diff.to_dict(),
        "rises": bool(rho > 0 and diff.established()),
    }


def _trend_table(trends: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| reward | own score at the first target | at the last | last − first (paired) | Spearman | rises |",
        "|---|---|---|---|---|---|",
    ]
    for r, t in trends.items():
        lines.append(
            f"| {r} | {t['first']:.4g} | {t['last']:.4g} | {fmt(t['difference'], digits='.3g')} "
            f"| {t['spearman']:.2f} | {'yes' if t['rises'] else 'no'} |"
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
    runs, scores = [], []
    for omega in cfg.scales:
        sampler = replace(cfg.eval.sampler, guidance=omega)
        result, per_image = evaluate(bundle, cfg.eval, sampler=sampler, rewards=scorers)
        runs.append({"guidance": omega, **result})
        scores.append(per_image)
        log.info("ω=%.1f: GenEval %.1f", omega, 100 * result["geneval"]["overall"])
    diffs = _against_first(scores)
    for run, d in zip(runs, diffs, strict=True):
        run["difference_to_first"] = to_dicts(d)
    best = int(np.argmax([r["geneval"]["overall"] for r in runs]))
    results = {"config": cfg, "checkpoint": str(bundle.checkpoint), "step": bundle.step, "runs": runs,
               "best_guidance": cfg.scales[best]}  # fmt: skip
    write_scores(cfg.out / "per_image.jsonl",
                 [({"guidance": w}, s) for w, s in zip(cfg.scales, scores, strict=True)])  # fmt: skip
    save_json(cfg.out / "results.json", results)
    lines_plot(
        list(cfg.scales), {"miro": _series(runs)}, "guidance scale ω", cfg.out / "guidance.png"
    )
    rows = {
        f"ω={w:g} − ω={cfg.scales[0]:g}": d for w, d in zip(cfg.scales[1:], diffs[1:], strict=True)
    }
    write_report(cfg.out, "Guidance scale", [
        f"Checkpoint `{bundle.checkpoint}` (step {bundle.step}); s⁺ = all 1, s⁻ = all 0; "
        f"{cfg.eval.sampler.steps} Euler steps. Best GenEval at ω = {cfg.scales[best]:g} "
        f"({fmt(diffs[best]['geneval'], 100)} points over ω = {cfg.scales[0]:g}, paired). "
        "95 % bootstrap intervals in brackets.",
        metric_table({f"ω={r['guidance']:g}": r for r in runs}),
        "Paired differences to the first scale (✓: interval above zero):\n\n"
        + difference_table(rows or {"—": diffs[0]}),
        "![guidance](guidance.png)",
    ])  # fmt: skip
    return results
