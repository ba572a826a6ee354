"""Per-image scores of the experiments' evaluations, and the figures with intervals made of them.

An evaluation keeps every image's GenEval pass/fail and reward values (`Scores`), so that
figures carry 95 % bootstrap intervals and two evaluations on the same prompts and noise
compare as a paired difference (miro_train.stats). Training seeds stack as a leading axis.
A result dict — what results.json holds per evaluation — keeps the figures where they always
were (`geneval.overall`, `geneval.categories`, `rewards`) and adds their intervals beside them.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from miro_data.common import MiroError, first_line
from miro_data.rewards import Reward
from miro_train.evaluate import interval_fields, score_geneval, write_per_image
from miro_train.stats import Estimate, bootstrap, fmt

T = TypeVar("T")


@dataclass(frozen=True)
class Scores:
    """metric ('geneval' pass as 0/1, 'reward/<name>') → values of shape (seeds, images)."""

    prompts: list[str]
    values: dict[str, np.ndarray]

    @property
    def n_seeds(self) -> int:
        return next(iter(self.values.values())).shape[0]

    def to_record(self) -> dict[str, Any]:
        """One training seed's scores as JSON-ready lists (an evaluation's cached record)."""
        if self.n_seeds != 1:
            raise ValueError(f"a record holds one training seed's scores, not {self.n_seeds}")
        return {
            "prompts": self.prompts,
            "values": {k: v[0].tolist() for k, v in self.values.items()},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Scores:
        """The scores `to_record` wrote; KeyError, TypeError or ValueError if it is damaged."""
        prompts = [str(p) for p in record["prompts"]]
        values = {
            str(k): np.asarray(v, dtype=np.float64)[None] for k, v in record["values"].items()
        }
        if not values or any(v.shape != (1, len(prompts)) for v in values.values()):
            raise ValueError("the record's values do not match its prompts")
        return cls(prompts, values)


def score_images(prompts: list[str], images: Any, rewards: Sequence[Reward]) -> Scores:
    """Each image's GenEval check and reward values (one training seed)."""
    values = {"geneval": np.asarray(score_geneval(prompts, images).passed, dtype=np.float64)}
    for reward in rewards:
        values[f"reward/{reward.name}"] = np.asarray(
            reward.score(list(images), list(prompts)), dtype=np.float64
        )
    return Scores(list(prompts), {k: v[None] for k, v in values.items()})


def stack_seeds(per_seed: Sequence[Scores]) -> Scores:
    """One evaluation per training seed (same prompts and noise) as one seeds × images set;
    MiroError if they do not share their prompts and metrics."""
    first = per_seed[0]
    if any(s.prompts != first.prompts for s in per_seed):
        raise MiroError("the training seeds' evaluations used other prompts")
    if any(s.values.keys() != first.values.keys() for s in per_seed):
        raise MiroError("the training seeds' evaluations measured other metrics")
    return Scores(
        first.prompts,
        {k: np.concatenate([s.values[k] for s in per_seed]) for k in first.values},
    )


def stack_by_step(
    per_seed: Sequence[Mapping[int, T]], score: Callable[[T], Scores], what: str
) -> dict[int, Scores]:
    """Per step that every training seed has (`per_seed`: step → something to score, in seed
    order), the seeds' `score`s stacked; MiroError naming `what` if they share no step."""
    steps = sorted(set.intersection(*(set(m) for m in per_seed)))
    if not steps:
        raise MiroError(f"{what} share no step")
    out = {}
    for step in steps:
        try:
            out[step] = stack_seeds([score(m[step]) for m in per_seed])
        except MiroError as err:
            raise MiroError(f"{what} at step {step}: {err}") from None
    return out


def estimates(scores: Scores, baseline: Scores | None = None) -> dict[str, Estimate]:
    """Every metric's estimate and interval; with `baseline`, the paired difference to it."""
    return bootstrap(
        scores.values, scores.prompts, baseline=None if baseline is None else baseline.values
    )


def result_of(scores: Scores, **extra: Any) -> dict[str, Any]:
    """The result dict of an evaluation: figures (means over seeds) and their intervals."""
    est = estimates(scores)
    cats = {k.removeprefix("geneval/"): e.value for k, e in est.items() if k.startswith("geneval/")}
    rewards = {k.removeprefix("reward/"): e for k, e in est.items() if k.startswith("reward/")}
    geneval = {"overall": est["geneval"].value, "categories": cats,
               "n_images": len(scores.prompts) * scores.n_seeds}  # fmt: skip
    return {
        **extra,
        "geneval": geneval | interval_fields(est),
        "rewards": {k: e.value for k, e in rewards.items()},
        "reward_intervals": {k: [e.low, e.high] for k, e in rewards.items()},
    }


def metrics_of(result: dict[str, Any]) -> dict[str, float]:
    """Flat {metric: value}: GenEval overall, per category, and each reward mean."""
    flat = {"geneval": result["geneval"]["overall"]}
    flat |= {f"geneval/{c}": v for c, v in result["geneval"]["categories"].items()}
    flat |= {f"reward/{k}": v for k, v in result["rewards"].items()}
    return flat


def intervals_of(result: dict[str, Any]) -> dict[str, Estimate]:
    """Flat {metric: Estimate}, as metrics_of, from a result dict's figures and intervals."""
    g = result["geneval"]
    bounds = {"geneval": g["interval"]}
    bounds |= {f"geneval/{c}": b for c, b in g["intervals"].items()}
    bounds |= {f"reward/{k}": b for k, b in result["reward_intervals"].items()}
    return {k: Estimate(v, *bounds[k]) for k, v in metrics_of(result).items()}


def _cell(metric: str, est: Estimate, signed: bool = False) -> str:
    text = fmt(est, 100) if metric.startswith("geneval") else fmt(est, digits=".4g")
    return ("+" if signed and est.value >= 0 else "") + text


def metric_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per model/setting, GenEval overall and categories, reward
    means, each with its 95 % interval in brackets."""
    first = intervals_of(next(iter(rows.values())))
    head = ["", "step", *(k.removeprefix("reward/") for k in first)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [_cell(k, e) for k, e in intervals_of(r).items()]
        lines.append("| " + " | ".join([name, str(r.get("step", "")), *cells]) + " |")
    return "\n".join(lines)


def difference_table(rows: dict[str, dict[str, Estimate]]) -> str:
    """Markdown table of paired differences, one row per comparison; ✓ where the whole
    interval is above zero."""
    metrics = list(next(iter(rows.values())))
    head = ["", *(k.removeprefix("reward/") for k in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, diffs in rows.items():
        cells = [_cell(k, e, signed=True) + (" ✓" if e.established() else "")
                 for k, e in diffs.items()]  # fmt: skip
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def to_dicts(diffs: dict[str, Estimate]) -> dict[str, dict[str, float]]:
    return {k: e.to_dict() for k, e in diffs.items()}


def write_scores(
    path: Path,
    evaluations: Sequence[tuple[dict[str, Any], Scores]],
    train_seeds: Sequence[int] = (),
) -> None:
    """Every image of every evaluation as a JSON line: the labels (model, step, setting…),
    the training seed (and its position), the prompt and each metric — what the intervals
    come from."""
    rows = []
    for labels, scores in evaluations:
        for s in range(scores.n_seeds):
            seed = {"train_seed": train_seeds[s]} if len(train_seeds) == scores.n_seeds else {}
            for i, prompt in enumerate(scores.prompts):
                metrics = {k: float(v[s, i]) for k, v in scores.values.items()}
                rows.append({**labels, **seed, "seed_index": s, "prompt": prompt, **metrics})
    write_per_image(path, rows)


SCORE_LABELS = ("train_seed", "seed_index", "prompt")  # per-image fields that are no metric


def read_scores(path: Path, labels: Sequence[str]) -> list[tuple[dict[str, Any], int, Scores]]:
    """What `write_scores` wrote (or its gzip, `*.jsonl.gz`): per evaluation (rows sharing the `labels` values) and training
    seed, the labels, the seed and its scores, in the file's order. Bad rows raise MiroError."""
    groups: dict[tuple, tuple[list[str], dict[str, list[float]]]] = {}
    try:  # (gzipped, as experiment records kept in a repository may be)
        data = path.read_bytes()
        lines = (gzip.decompress(data) if path.suffix == ".gz" else data).decode().splitlines()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise MiroError(f"cannot read {path}: {first_line(err)}") from None
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            key = (*(row[k] for k in labels), int(row["train_seed"]))
            prompts, values = groups.setdefault(key, ([], {}))
            prompts.append(str(row["prompt"]))
            for name, value in row.items():
                if name not in SCORE_LABELS and name not in labels:
                    values.setdefault(name, []).append(float("nan" if value is None else value))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MiroError(
                f"{path}, line {number}: not a per-image score row ({first_line(err)})"
            ) from None
    out = []
    for key, (prompts, values) in groups.items():
        if any(len(v) != len(prompts) for v in values.values()):
            raise MiroError(f"{path}: the rows of {key} do not all carry the same metrics")
        arrays = {k: np.asarray(v, dtype=np.float64)[None] for k, v in values.items()}
        out.append((dict(zip(labels, key[:-1], strict=True)), key[-1], Scores(prompts, arrays)))
    return out
