"""Experiment `compare`: baseline vs MIRO on the same shards, model, seed and step budget.

Both arms are trained with checkpoints every `eval_every` steps; every checkpoint's EMA model
is evaluated (MIRO at s⁺ = all high, guided against s⁻ = all low; the baseline unguided, as it
has no reward to guide with). The speed-up is the paper's: the baseline's final score divided
into the steps MIRO needs to reach it, per metric (linear interpolation between evaluations).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_data.checks import check_names
from miro_data.common import save_json
from miro_data.options import NAMES, opt
from miro_data.processes import owns_output
from miro_train.experiments.common import (
    EvalSettings,
    TrainSettings,
    checkpoints_by_step,
    evaluate,
    load_for,
    metric_rewards,
    metric_table,
    metrics_of,
    train_arm,
    write_report,
)
from miro_train.experiments.plots import convergence_plot

log = logging.getLogger(__name__)

ARMS = ("baseline", "miro")


@dataclass(frozen=True)
class CompareConfig:
    """Two arms, one budget."""

    shards: Path = field(metadata=opt(help="Training shards from `miro data reshard`."))
    out: Path = field(metadata=opt(help="Experiment folder (finished arms in it are reused)."))
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    rewards: tuple[str, ...] | None = field(  # MIRO's conditioning; None: all in the manifest
        default=None, metadata=opt(parser=NAMES, help="MIRO's rewards (default: all).")
    )

    def __post_init__(self) -> None:
        check_names("--rewards", self.rewards)


def _shift(train: TrainSettings) -> str:
    if train.time_shift_end is None:
        return f"{train.time_shift:g}"
    return f"{train.time_shift:g} → {train.time_shift_end:g}"


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """First (interpolated) step at which the curve reaches `target`; None if it never does."""
    prev_step, prev_value = 0, -math.inf
    for step, value in curve:
        if value >= target:
            if prev_value == -math.inf or value == prev_value:
                return float(step)
            frac = (target - prev_value) / (value - prev_value)
            return prev_step + max(0.0, min(1.0, frac)) * (step - prev_step)
        prev_step, prev_value = step, value
    return None


def speedups(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> dict[str, dict[str, Any]]:
    """Per metric: baseline's final value, steps MIRO needs to reach it, and the ratio.

    Rewards where lower is worse are all oriented 'higher is better' in this project, so one
    rule fits every metric. When MIRO is already there at its first evaluation, the step it
    got there is unknown (only bounded by that evaluation), so the speed-up is a lower bound.
    """
    out = {}
    for metric, base_curve in curves["baseline"].items():
        final_step, final = base_curve[-1]
        miro_curve = curves["miro"][metric]
        reach = steps_to_reach(miro_curve, final)
        out[metric] = {
            "baseline_final": final,
            "baseline_steps": final_step,
            "miro_steps_to_reach": reach,
            "speedup": (final_step / reach) if reach else None,
            "lower_bound": reach is not None and reach == miro_curve[0][0],
        }
    return out


@owns_output  # one process writes an output folder at a time
def compare(cfg: CompareConfig) -> dict[str, Any]:
    """Train both arms (or reuse finished ones), evaluate every checkpoint, write the report."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    seconds = {
        arm: train_arm(
            cfg.shards, cfg.out / arm, cfg.train, baseline=arm == "baseline", rewards=cfg.rewards
        )
        for arm in ARMS
    }
    rewards = metric_rewards(cfg.eval.rewards, also=cfg.rewards or (),
                             allow_download=cfg.eval.sampler.allow_download)  # fmt: skip
    evals: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for arm in ARMS:
        for step, ckpt in checkpoints_by_step(cfg.out / arm):
            bundle = load_for(ckpt, cfg.eval)
            result, _, _ = evaluate(bundle, cfg.eval, rewards=rewards)
            evals[arm].append(result)
            log.info("%s step %d: GenEval %.1f", arm, step, 100 * result["geneval"]["overall"])
    curves = {arm: _curves(evals[arm]) for arm in ARMS}
    summary = speedups(curves)
    results = {"config": cfg, "seconds": seconds, "evaluations": evals, "speedup": summary}
    save_json(cfg.out / "results.json", results)
    convergence_plot(curves, cfg.out / "convergence.png")
    finals = {arm: evals[arm][-1] for arm in ARMS}
    write_report(cfg.out, "Baseline vs MIRO", [
        f"Same shards, model (`{cfg.train.model}`), seed, batch {cfg.train.batch_size}, "
        f"lr {cfg.train.lr:g}, time shift {_shift(cfg.train)} and {cfg.train.steps} steps per arm; "
        f"MIRO sampled at s⁺ = all high, ω = {cfg.eval.sampler.guidance}, "
        f"{cfg.eval.sampler.steps} Euler steps; {finals['miro']['geneval']['n_images']} images per evaluation. "
        f"Training took {seconds['baseline'] / 60:.1f} min (baseline) and {seconds['miro'] / 60:.1f} min (MIRO).",
        "## Final scores\n\n" + metric_table(finals),
        "## Speed-up (steps MIRO needs to reach the baseline's final score)\n\n" + _speedup_table(summary),
        "![convergence](convergence.png)",
    ])  # fmt: skip
    return results


def _curves(evals: list[dict]) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    for result in evals:
        for metric, value in metrics_of(result).items():
            curves.setdefault(metric, []).append((result["step"], value))
    return curves


def _speedup_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| metric | baseline final | MIRO steps to reach | speed-up |", "|---|---|---|---|"]
    for metric, s in summary.items():
        reach = "never" if s["miro_steps_to_reach"] is None else f"{s['miro_steps_to_reach']:.0f}"
        speed = "—" if s["speedup"] is None else f"{s['speedup']:.1f}×"
        if s["lower_bound"]:  # reached by MIRO's first evaluation: it may have been sooner
            reach, speed = f"≤ {reach}", f"≥ {speed}"
        lines.append(f"| {metric} | {s['baseline_final']:.4g} | {reach} | {speed} |")
    return "\n".join(lines)
