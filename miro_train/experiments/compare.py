"""Experiment `compare`: baseline vs MIRO on the same shards, model, seed and step budget.

Both arms are trained with checkpoints every `eval_every` steps — once per training seed with
`--train-seeds` — and every checkpoint's EMA model is evaluated on the same prompts with the
same noise (MIRO at s⁺ = all high, guided against s⁻ = all low; the baseline unguided, as it
has no reward to guide with). Figures are means over seeds with 95 % bootstrap intervals;
MIRO vs baseline is a paired difference. The speed-up is claimed only where established
(miro_train.stats.speedup): the first evaluated step at which MIRO is above the baseline's
final score with the paired difference's interval above zero; baseline steps / that step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_data.checks import check_names
from miro_data.common import json_safe, save_json
from miro_data.options import NAMES, opt
from miro_data.processes import owns_output
from miro_train.experiments.common import (
    SEEDS,
    EvalSettings,
    TrainSettings,
    check_train_seeds,
    checkpoints_by_step,
    evaluate_checkpoint,
    metric_rewards,
    seed_runs,
    train_arm,
    write_report,
)
from miro_train.experiments.plots import convergence_plot
from miro_train.experiments.scores import (
    Scores,
    difference_table,
    estimates,
    intervals_of,
    metric_table,
    result_of,
    stack_by_step,
    to_dicts,
    write_scores,
)
from miro_train.stats import Estimate, fmt, speedup

log = logging.getLogger(__name__)

ARMS = ("baseline", "miro")
SHARDS_DIGEST = "shards_digest"  # results.json config: the training shards' Manifest.digest()
TRAIN_SEEDS_HELP = (
    "Train each arm once per seed (e.g. 0,1,2; runs in ARM/seed-N, resumed); "
    "figures are means over seeds. --seed still fixes the evaluation's prompts and noise."
)
BASELINE_FROM_HELP = (
    "A finished compare (or combine) of the same shards, baseline recipe and evaluation: its "
    "baseline arm's recorded scores stand in for this one's, which is not trained."
)


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
    train_seeds: tuple[int, ...] | None = field(  # None: one run per arm, seeded by train.seed
        default=None, metadata=opt(parser=SEEDS, help=TRAIN_SEEDS_HELP)
    )
    # MIRO conditioned on other rewards shares the baseline: train it once, reuse its record
    baseline_from: Path | None = field(
        default=None, metadata=opt("--baseline-from", help=BASELINE_FROM_HELP)
    )

    def __post_init__(self) -> None:
        check_names("--rewards", self.rewards)
        check_train_seeds(self.train_seeds)


def _shift(train: dict[str, Any]) -> str:
    shift = f"{train['time_shift']:g}"
    if train["time_shift_end"] is not None:
        shift += f" → {train['time_shift_end']:g}"
    share = train.get("time_shift_share", 1.0)  # absent from older results.json
    return shift if share == 1.0 else f"{shift} on {100 * share:g} % of each batch"


def evaluate_runs(runs: list[Path], cfg: EvalSettings, rewards: list) -> dict[int, Scores]:
    """The checkpoint steps that all seeds' runs share, each evaluated per seed and stacked."""

    def score(checkpoint: Path) -> Scores:
        _, scores = evaluate_checkpoint(checkpoint, cfg, rewards)
        log.info("%s: GenEval %.1f", checkpoint, 100 * scores.values["geneval"].mean())
        return scores

    by_run = [dict(checkpoints_by_step(run)) for run in runs]
    return stack_by_step(by_run, score, f"the checkpoints of {', '.join(map(str, runs))}")


def speedups(scores: dict[str, dict[int, Scores]]) -> dict[str, dict[str, Any]]:
    """Per metric: the baseline's final estimate, and where (if anywhere) MIRO's lead over it
    is established (miro_train.stats.speedup). All metrics are 'higher is better' here."""
    base_step = max(scores["baseline"])
    base_final = scores["baseline"][base_step]
    base_est = estimates(base_final)
    steps = sorted(scores["miro"])
    est = [estimates(scores["miro"][step]) for step in steps]
    diffs = [estimates(scores["miro"][step], base_final) for step in steps]
    out = {}
    for metric, final in base_est.items():
        found = speedup(
            steps, [e[metric] for e in est], [d[metric] for d in diffs], final, base_step
        )
        out[metric] = {"baseline_final": final.to_dict(), "baseline_steps": base_step, **found}
    return out


@owns_output  # one process writes an output folder at a time
def compare(cfg: CompareConfig) -> dict[str, Any]:
    """Train both arms per seed (or reuse finished runs), evaluate every checkpoint, report."""
    from miro_train.data import open_shards
    from miro_train.experiments.combine import BorrowedBaseline

    # the data, recorded beside the recipe, so that `combine` can tell other shards apart
    digest = open_shards(cfg.shards).manifest.digest()
    config = {**json_safe(cfg), SHARDS_DIGEST: digest}
    seeds = cfg.train_seeds or (cfg.train.seed,)
    borrowed = None if cfg.baseline_from is None else BorrowedBaseline.read(
        cfg.baseline_from, config, seeds)  # fmt: skip
    arms = ("miro",) if borrowed else ARMS
    cfg.out.mkdir(parents=True, exist_ok=True)
    runs = {arm: seed_runs(cfg.out / arm, cfg.train, cfg.train_seeds) for arm in arms}
    seconds = {
        arm: {train.seed: train_arm(cfg.shards, run, train, baseline=arm == "baseline",
                                    rewards=cfg.rewards)
              for train, run in runs[arm]}
        for arm in arms
    }  # fmt: skip
    rewards = metric_rewards(cfg.eval.rewards, also=cfg.rewards or (),
                             allow_download=cfg.eval.sampler.allow_download)  # fmt: skip
    scores = {arm: evaluate_runs([r for _, r in runs[arm]], cfg.eval, rewards) for arm in arms}
    if borrowed:
        seconds["baseline"] = borrowed.seconds
        scores["baseline"] = borrowed.scores_of(next(iter(scores["miro"].values())))
    return write_results(cfg.out, config, seeds, seconds, scores)


def write_results(
    out: Path,
    config: dict[str, Any],
    seeds: Sequence[int],
    seconds: dict[str, dict[int, float]],
    scores: dict[str, dict[int, Scores]],
) -> dict[str, Any]:
    """results.json, per_image.jsonl, convergence.png and report.md of evaluated arms: what
    `compare` writes once it has trained and evaluated, and `combine` from several compares.

    `config` is the compare's config as JSON; `seconds[arm][seed]` each run's training time;
    `scores[arm][step]` the evaluation of that step, training seeds stacked in `seeds` order.
    """
    evals = {arm: [result_of(s, step=step) for step, s in scores[arm].items()] for arm in ARMS}
    last = {arm: max(scores[arm]) for arm in ARMS}
    difference = estimates(scores["miro"][last["miro"]], scores["baseline"][last["baseline"]])
    summary = speedups(scores)
    write_scores(out / "per_image.jsonl",
                 [({"arm": arm, "step": step}, s) for arm in ARMS for step, s in scores[arm].items()],
                 seeds)  # fmt: skip
    per_seed = {arm: {str(seed): round(seconds[arm][seed], 1) for seed in seeds} for arm in ARMS}
    results = {"config": config, "train_seeds": list(seeds),
               "seconds": {arm: sum(seconds[arm].values()) for arm in ARMS},
               "seconds_per_seed": per_seed, "evaluations": evals,
               "difference": to_dicts(difference), "speedup": summary}  # fmt: skip
    save_json(out / "results.json", results)
    convergence_plot({arm: _curves(evals[arm]) for arm in ARMS}, out / "convergence.png")
    write_report(
        out, "Baseline vs MIRO", _report(config, seeds, per_seed, evals, difference, summary)
    )
    return results


def _minutes(per_seed: dict[str, float]) -> str:
    return " / ".join(f"{s / 60:.1f}" for s in per_seed.values()) + " min"


def _interval(sampler: dict[str, Any]) -> str:
    low, high = sampler["guidance_interval"]
    text = "" if (low, high) == (0.0, 1.0) else f" at noise levels {low:g} ≤ t ≤ {high:g}"
    caption = sampler.get("caption_guidance") or 0.0
    return text + (f", caption guidance ω_c = {caption:g} (both arms)" if caption else "")


def _prediction(train: dict[str, Any]) -> str:
    prediction = train.get("prediction")  # absent from older results.json
    return f", {prediction}-prediction" if prediction else ""


def _report(config: dict[str, Any], seeds: Sequence[int], seconds: dict[str, dict[str, float]],
            evals: dict, difference: dict[str, Estimate], summary: dict) -> list[str]:  # fmt: skip
    train, sampler = config["train"], config["eval"]["sampler"]
    finals = {arm: evals[arm][-1] for arm in ARMS}
    per_seed = finals["miro"]["geneval"]["n_images"] // len(seeds)
    return [
        f"Same shards, model (`{train['model']}`{_prediction(train)}), batch {train['batch_size']}, "
        f"lr {train['lr']:g}, time shift {_shift(train)} and {train['steps']} steps per arm, "
        f"training seed(s) {', '.join(map(str, seeds))}; "
        f"MIRO sampled at s⁺ = all high, ω = {sampler['guidance']}{_interval(sampler)}, "
        f"{sampler['steps']} Euler steps; {per_seed} images per evaluation and seed, the same "
        f"prompts and noise for both arms. Training time per run (seed "
        f"{' / '.join(map(str, seeds))}): baseline {_minutes(seconds['baseline'])}, "
        f"MIRO {_minutes(seconds['miro'])}.{_borrowed(config)} Figures are means over "
        "seeds with 95 % bootstrap intervals (training seeds, prompts and images resampled).",
        "## Final scores\n\n" + metric_table(finals),
        "## MIRO − baseline (paired, final checkpoints; ✓: interval above zero)\n\n"
        + difference_table({"MIRO − baseline": difference}),
        "## Speed-up (first step where MIRO is above the baseline's final score, established)\n\n"
        + _speedup_table(summary),
        "![convergence](convergence.png)",
    ]


def _borrowed(config: dict[str, Any]) -> str:
    folder = config.get("baseline_from")  # absent from older results.json
    return f" The baseline's scores are those recorded in `{folder}`." if folder else ""


def _curves(evals: list[dict]) -> dict[str, list[tuple[int, Estimate]]]:
    curves: dict[str, list[tuple[int, Estimate]]] = {}
    for result in evals:
        for metric, est in intervals_of(result).items():
            curves.setdefault(metric, []).append((result["step"], est))
    return curves


def _speedup_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| metric | baseline final | MIRO established at | MIRO − baseline there | speed-up |",
             "|---|---|---|---|---|"]  # fmt: skip
    for metric, s in summary.items():
        scale, digits = (100, ".1f") if metric.startswith("geneval") else (1, ".4g")
        final = fmt(s["baseline_final"], scale, digits)
        diff = fmt(s["difference"], scale, digits) if s["difference"] else "—"
        if not s["established"]:
            lines.append(f"| {metric} | {final} | not established | {diff} (last step) | — |")
            continue
        at, speed = f"{s['step']}", f"{s['speedup']:.1f}×"
        if s["lower_bound"]:  # established at MIRO's first evaluation: it may have been sooner
            at, speed = f"≤ {at}", f"≥ {speed}"
        lines.append(f"| {metric} | {final} | {at} | {diff} | {speed} |")
    return "\n".join(lines)
