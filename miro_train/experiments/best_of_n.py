"""Experiment `best-of-n`: test-time scaling — draw N candidates, keep the best by a reward.

For each model, every GenEval prompt slot gets `n_max` candidates once; the curve for N
selects among the first N, so all points share their samples. Each candidate is scored by
every selection reward and by the detector; a point reports the chosen images' GenEval and
reward means.
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
from miro_data.shapes import CATEGORIES, parse_caption
from miro_train.evaluate import geneval_images, score_geneval
from miro_train.experiments.common import EvalSettings, load_for, metric_rewards, write_report
from miro_train.experiments.plots import lines_plot

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
) -> dict:
    """For each selection reward: metric → list over N (GenEval overall and reward means)."""
    cats = np.array([parse_caption(p).category for p in prompts])  # type: ignore[union-attr]
    out: dict[str, dict[str, list[float]]] = {}
    for select, by in scores.items():
        key = np.where(np.isnan(by), -np.inf, by)
        curve: dict[str, list[float]] = {
            m: [] for m in ["geneval", *(f"reward/{r}" for r in scores)]
        }
        for n in ns:
            pick = key[:, :n].argmax(1)
            rows = np.arange(len(prompts))
            ok = passed[rows, pick]
            curve["geneval"].append(
                float(np.mean([ok[cats == c].mean() for c in CATEGORIES if (cats == c).any()]))
            )
            for r, values in scores.items():
                curve[f"reward/{r}"].append(float(np.nanmean(values[rows, pick])))
        out[select] = curve
    return out


@owns_output  # one process writes an output folder at a time
def best_of_n(cfg: BestOfNConfig) -> dict[str, Any]:
    select = cfg.select_by or cfg.eval.rewards
    scorers = {
        r.name: r for r in metric_rewards(select, allow_download=cfg.eval.sampler.allow_download)
    }
    ns = n_values(cfg.n_max)
    curves: dict[str, dict] = {}
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
        lines_plot(
            ns,
            {f"select by {r}": c for r, c in curves[name].items()},
            "N (candidates)",
            cfg.out / f"best_of_n_{name}.png",
        )
        log.info(
            "best-of-n %s: GenEval %.1f at N=1",
            name,
            100 * curves[name][next(iter(scores))]["geneval"][0],
        )
    results = {"config": cfg, "n": ns, "curves": curves}
    save_json(cfg.out / "results.json", results)
    write_report(cfg.out, "Best-of-N test-time scaling", [
        f"{len(prompts)} prompt slots × up to {cfg.n_max} candidates per model; selection by each reward; "
        f"ω = {cfg.eval.sampler.guidance} for reward-conditioned models.",
        *(_table(name, ns, c) for name, c in curves.items()),
        *(f"![{name}](best_of_n_{name}.png)" for name in curves),
    ])  # fmt: skip
    return results


def _table(name: str, ns: list[int], curves: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"## {name}: GenEval (%) of the selected images", "", "| select by | " + " | ".join(f"N={n}" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]  # fmt: skip
    for select, c in curves.items():
        lines.append(f"| {select} | " + " | ".join(f"{100 * v:.1f}" for v in c["geneval"]) + " |")
    return "\n".join(lines)
