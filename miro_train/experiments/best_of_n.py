"""Experiment `best-of-n`: test-time scaling — draw N candidates, keep the best by a reward.

For each model, every GenEval prompt slot gets `n_max` candidates once; the curve for N
selects among the first N, so all points share their samples. Each candidate is scored by
every selection reward and by the detector; a point reports the chosen images' GenEval and
reward means with 95 % bootstrap intervals, and N = n_max is compared with N = 1 as a paired
difference (the same prompt slots; the N = 1 pick is one of the N = n_max candidates).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miro_data.checks import check_names, check_positive
from miro_data.common import MiroError, save_json
from miro_data.options import NAMES, opt
from miro_data.processes import owns_output
from miro_train.evaluate import geneval_images, score_geneval, write_per_image
from miro_train.experiments.common import EvalSettings, load_for, metric_rewards, write_report
from miro_train.experiments.plots import lines_plot
from miro_train.experiments.scores import Scores, difference_table, estimates, to_dicts
from miro_train.stats import Estimate, fmt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BestOfNConfig:
    """Models to compare, the largest N, and the rewards to select by."""

    out: Path = field(metadata=opt())
    checkpoints: dict[str, Path]  # name → checkpoint (e.g. baseline, miro)
    n_max: int = field(default=32, metadata=opt(help="Largest N."))
    select_by: tuple[str, ...] | None = field(default=None, metadata=opt(  # None: every metric reward
        parser=NAMES, help="Rewards to select by (default: all metric rewards)."
    ))  # fmt: skip
    eval: EvalSettings = field(
        default_factory=lambda: EvalSettings(prompts_per_category=4, images_per_prompt=2)
    )

    def __post_init__(self) -> None:
        check_positive("--n-max", self.n_max)
        if not self.checkpoints:
            raise MiroError("give at least one checkpoint")
        check_names("--select-by", self.select_by, identifiers=False)


def n_values(n_max: int) -> list[int]:
    ns, n = [], 1
    while n < n_max:
        ns.append(n)
        n *= 2
    return [*ns, n_max]


def _candidates(bundle, cfg: BestOfNConfig) -> tuple[list[str], np.ndarray]:
    """The prompt slots and their candidates (slots, n_max, H, W, 3): the GenEval set with
    images_per_prompt × n_max draws of each prompt, candidate j of a slot its next draw."""
    per_slot = cfg.eval.images_per_prompt
    flat, images = geneval_images(bundle, cfg.eval.sampler, cfg.eval.prompts_per_category,
                                  per_slot * cfg.n_max)  # fmt: skip
    return flat[:: cfg.n_max], images.reshape(len(flat) // cfg.n_max, cfg.n_max, *images.shape[1:])


def _curves(
    prompts: list[str], passed: np.ndarray, scores: dict[str, np.ndarray], ns: list[int]
) -> dict[str, dict[str, list[Estimate]]]:
    """For each selection reward: metric → estimates over N (GenEval overall and reward
    means), and the per-slot picks behind them (for the paired N = n_max vs N = 1)."""
    out: dict[str, dict[str, list[Estimate]]] = {}
    for select, by in scores.items():
        key = np.where(np.isnan(by), -np.inf, by)
        rows = np.arange(len(prompts))
        curve: dict[str, list[Estimate]] = {}
        for n in ns:
            pick = key[:, :n].argmax(1)
            for metric, e in estimates(_picked(prompts, passed, scores, rows, pick)).items():
                if not metric.startswith("geneval/"):
                    curve.setdefault(metric, []).append(e)
        out[select] = curve
    return out


def _picked(prompts: list[str], passed: np.ndarray, scores: dict[str, np.ndarray],
            rows: np.ndarray, pick: np.ndarray) -> Scores:  # fmt: skip
    values = {"geneval": passed[rows, pick].astype(np.float64)}
    values |= {f"reward/{r}": v[rows, pick] for r, v in scores.items()}
    return Scores(prompts, {k: v[None] for k, v in values.items()})


def _candidate_rows(name: str, prompts: list[str], passed: np.ndarray,
                    scores: dict[str, np.ndarray]) -> list[dict]:  # fmt: skip
    return [
        {"model": name, "slot": i, "candidate": j, "prompt": prompt, "geneval": bool(passed[i, j]),
         **{f"reward/{r}": float(v[i, j]) for r, v in scores.items()}}
        for i, prompt in enumerate(prompts) for j in range(passed.shape[1])
    ]  # fmt: skip


def _largest_vs_one(prompts: list[str], passed: np.ndarray, scores: dict[str, np.ndarray]) -> dict:
    """Per selection reward: the paired difference of the N = n_max picks to the N = 1 picks."""
    rows, out = np.arange(len(prompts)), {}
    for select, by in scores.items():
        pick = np.where(np.isnan(by), -np.inf, by).argmax(1)
        first = np.zeros_like(pick)
        diff = estimates(_picked(prompts, passed, scores, rows, pick),
                         _picked(prompts, passed, scores, rows, first))  # fmt: skip
        out[select] = {k: e for k, e in diff.items() if not k.startswith("geneval/")}
    return out


@owns_output  # one process writes an output folder at a time
def best_of_n(cfg: BestOfNConfig) -> dict[str, Any]:
    select = cfg.select_by or cfg.eval.rewards
    scorers = {
        r.name: r for r in metric_rewards(select, allow_download=cfg.eval.sampler.allow_download)
    }
    ns = n_values(cfg.n_max)
    curves: dict[str, dict] = {}
    rows: list[dict] = []  # every candidate's scores: what the intervals come from
    gains: dict[str, dict] = {}
    prompts: list[str] = []
    for name, ckpt in cfg.checkpoints.items():
        prompts, cand = _candidates(load_for(ckpt, cfg.eval), cfg)  # (S, N, H, W, 3)
        flat_prompts = [p for p in prompts for _ in range(cfg.n_max)]
        flat_images = list(cand.reshape(-1, *cand.shape[2:]))
        passed = np.array(score_geneval(flat_prompts, flat_images).passed).reshape(
            len(prompts), cfg.n_max
        )
        scores = {r: np.asarray(s.score(flat_images, flat_prompts), dtype=float).reshape(len(prompts), cfg.n_max)
                  for r, s in scorers.items()}  # fmt: skip
        curves[name] = _curves(prompts, passed, scores, ns)
        gains[name] = _largest_vs_one(prompts, passed, scores)
        rows += _candidate_rows(name, prompts, passed, scores)
        lines_plot(
            ns,
            {f"select by {r}": c for r, c in curves[name].items()},
            "N (candidates)",
            cfg.out / f"best_of_n_{name}.png",
        )
        log.info(
            "best-of-n %s: GenEval %.1f at N=1",
            name,
            100 * curves[name][next(iter(scores))]["geneval"][0].value,
        )
    results = {
        "config": cfg,
        "n": ns,
        "curves": {m: {r: {k: [e.value for e in v] for k, v in c.items()} for r, c in by.items()}
                   for m, by in curves.items()},
        "intervals": {m: {r: {k: [[e.low, e.high] for e in v] for k, v in c.items()}
                      for r, c in by.items()} for m, by in curves.items()},
        f"n{cfg.n_max}_minus_n1": {m: {r: to_dicts(d) for r, d in by.items()} for m, by in gains.items()},
    }  # fmt: skip
    write_per_image(cfg.out / "per_image.jsonl", rows)
    save_json(cfg.out / "results.json", results)
    write_report(cfg.out, "Best-of-N test-time scaling", [
        f"{len(prompts)} prompt slots × up to {cfg.n_max} candidates per model; selection by each reward; "
        f"ω = {cfg.eval.sampler.guidance} for reward-conditioned models. 95 % bootstrap intervals in brackets.",
        *(_table(name, ns, c) for name, c in curves.items()),
        *(f"## {name}: N = {cfg.n_max} − N = 1 (paired; ✓: interval above zero)\n\n"
          + difference_table({f"select by {r}": d for r, d in g.items()}) for name, g in gains.items()),
        *(f"![{name}](best_of_n_{name}.png)" for name in curves),
    ])  # fmt: skip
    return results


def _table(name: str, ns: list[int], curves: dict[str, dict[str, list[Estimate]]]) -> str:
    lines = [f"## {name}: GenEval (%) of the selected images", "", "| select by | " + " | ".join(f"N={n}" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]  # fmt: skip
    for select, c in curves.items():
        lines.append(f"| {select} | " + " | ".join(fmt(v, 100) for v in c["geneval"]) + " |")
    return "\n".join(lines)
