"""95 % bootstrap intervals for GenEval and reward means, paired differences, and the speed-up.

Every figure of an evaluation is a mean over images, and images come in groups: the prompts
(each drawn several times) and, in multi-seed experiments, the training seeds. The bootstrap
resamples all levels: training seeds, prompts within each GenEval category (the prompt set is
balanced over categories by design, so every replicate keeps them all), and images within a
prompt. A category evaluated on every prompt its grammar has (Shapes World's single objects
have three; `shapes.all_prompts`) keeps its prompts: they are the whole population, not a
sample of one, so there is no prompt-sampling uncertainty to add — only its images and the
training seeds are resampled. A paired difference (two models, or two settings, on the same
prompts with the same noise) applies the *same* resample to both sides, so what they share
cancels. Resamples come from a seeded generator: the same data and seed give the same
intervals, bit for bit.

Per-image values are arrays of shape (seeds, images) — or (images,) for one seed — keyed by
metric: `geneval` holds each image's pass (1.0) or fail (0.0) and yields `geneval` (the mean
of the category scores) and `geneval/<category>`; any other key (`reward/<name>`) yields the
mean of its finite values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from miro_data.common import MiroError
from miro_data.shapes import CATEGORIES, all_prompts, caption_for, parse_caption

N_BOOT = 1000  # resamples per interval: percentiles of 1000 are stable to ~0.1 point here
LEVEL = 95.0


@dataclass(frozen=True)
class Estimate:
    """A statistic and its 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def established(self) -> bool:
        """For a difference: is the whole interval above zero?"""
        return bool(self.low > 0)


@dataclass(frozen=True)
class Layout:
    """Which images belong to which prompt, and each prompt's category (its stratum)."""

    members: np.ndarray  # (prompts, most images of a prompt): image indices, -1 padding
    sizes: np.ndarray  # (prompts,) images of each prompt
    strata: tuple[str, ...]  # each prompt's category ("" outside Shapes World)
    n_images: int
    complete: frozenset[str] = frozenset()  # categories present with every prompt they have


def layout_of(prompts: Sequence[str]) -> Layout:
    """Images with the same prompt text are one group (repeats of a prompt are more draws of it)."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(prompts):
        groups.setdefault(text, []).append(i)
    if not groups:
        raise MiroError("no images to compute statistics on")
    width = max(len(g) for g in groups.values())
    members = np.full((len(groups), width), -1, dtype=np.int64)
    for row, idx in enumerate(groups.values()):
        members[row, : len(idx)] = idx
    parsed = [parse_caption(text) for text in groups]
    strata = tuple(p.category if p else "" for p in parsed)
    sizes = np.array([len(g) for g in groups.values()], dtype=np.int64)
    asked: dict[str, set[str]] = {}  # each category's prompts, in the grammar's own spelling
    for p in parsed:
        if p is not None:
            asked.setdefault(p.category, set()).add(caption_for(p))
    complete = frozenset(c for c, seen in asked.items() if seen == all_prompts(c))
    return Layout(members, sizes, strata, len(prompts), complete)


@dataclass(frozen=True)
class Draws:
    """Resamples (or the identity, B = 1): seed, prompt and image indices per replicate."""

    seeds: np.ndarray  # (B, S)
    images: np.ndarray  # (B, S, P, K) image indices
    valid: np.ndarray  # (B, S, P, K): k < the drawn prompt's size


def identity(layout: Layout, n_seeds: int) -> Draws:
    """The data as observed: every seed, prompt and image once."""
    images = np.broadcast_to(np.maximum(layout.members, 0), (1, n_seeds, *layout.members.shape))
    valid = np.broadcast_to(layout.members >= 0, images.shape)
    return Draws(np.arange(n_seeds)[None], images, valid)


def resample(layout: Layout, n_seeds: int, n_boot: int = N_BOOT, seed: int = 0) -> Draws:
    """`n_boot` replicates: seeds with replacement, prompts with replacement within their
    category (unless it is complete: then each prompt once), then each drawn prompt's images
    with replacement (as many as it has)."""
    rng = np.random.default_rng([seed, 2_020])
    seeds = rng.integers(0, n_seeds, (n_boot, n_seeds))
    n_prompts, width = layout.members.shape
    prompts = np.broadcast_to(np.arange(n_prompts), (n_boot, n_prompts)).copy()
    strata = np.array(layout.strata)
    for stratum in dict.fromkeys(layout.strata):
        if stratum in layout.complete:
            continue
        where = np.flatnonzero(strata == stratum)
        prompts[:, where] = where[rng.integers(0, where.size, (n_boot, where.size))]
    sizes = layout.sizes[prompts][:, None, :, None]  # (B, 1, P, 1)
    k = np.arange(width)[None, None, None, :]
    pick = np.floor(rng.random((n_boot, n_seeds, n_prompts, width)) * sizes).astype(np.int64)
    images = layout.members[prompts[:, None, :, None], pick]
    return Draws(seeds, images, np.broadcast_to(k < sizes, images.shape))


def _as_seeds(values: np.ndarray, n_images: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    values = values[None] if values.ndim == 1 else values
    if values.ndim != 2 or values.shape[1] != n_images:
        raise MiroError(f"per-image values of shape {values.shape} do not match {n_images} images")
    return values


def _statistics(
    name: str, values: np.ndarray, layout: Layout, draws: Draws
) -> dict[str, np.ndarray]:
    """Each replicate's statistic(s) of one metric: {metric name: (B,) array}."""
    picked = values[draws.seeds[:, :, None, None], draws.images]  # (B, S, P, K)
    weight = draws.valid & np.isfinite(picked)
    total = np.where(weight, picked, 0.0).sum(axis=(1, 3))  # (B, P)
    count = weight.sum(axis=(1, 3)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name != "geneval":
            return {name: total.sum(1) / count.sum(1)}
        strata = np.array(layout.strata)
        out = {}
        for category in [c for c in CATEGORIES if c in layout.strata]:
            where = strata == category
            out[f"geneval/{category}"] = total[:, where].sum(1) / count[:, where].sum(1)
        if not out:
            raise MiroError("GenEval statistics need Shapes World prompts")
        out["geneval"] = np.nanmean(np.stack(list(out.values())), axis=0)
        return {"geneval": out.pop("geneval"), **out}


def _all(values: Mapping[str, np.ndarray], layout: Layout, draws: Draws) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, v in values.items():
        out |= _statistics(name, v, layout, draws)
    return out


def _estimates(point: dict[str, np.ndarray], boot: dict[str, np.ndarray]) -> dict[str, Estimate]:
    tail = (100 - LEVEL) / 2
    out = {}
    for name, value in point.items():
        reps = boot[name][np.isfinite(boot[name])]
        low, high = np.percentile(reps, [tail, 100 - tail]) if reps.size else (np.nan, np.nan)
        out[name] = Estimate(float(value[0]), float(low), float(high))
    return out


def bootstrap(
    values: Mapping[str, np.ndarray],
    prompts: Sequence[str],
    *,
    baseline: Mapping[str, np.ndarray] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each metric's estimate with its interval; with `baseline` (same prompts, same noise,
    same seeds, image for image), the paired difference values − baseline instead."""
    layout = layout_of(prompts)
    ours = {k: _as_seeds(v, layout.n_images) for k, v in values.items()}
    n_seeds = next(iter(ours.values())).shape[0]
    if any(v.shape[0] != n_seeds for v in ours.values()):
        raise MiroError("every metric needs the same training seeds")
    point_draw, boot_draw = identity(layout, n_seeds), resample(layout, n_seeds, n_boot, seed)
    point, boot = _all(ours, layout, point_draw), _all(ours, layout, boot_draw)
    if baseline is not None:
        theirs = {k: _as_seeds(baseline[k], layout.n_images) for k in values}
        if any(theirs[k].shape != ours[k].shape for k in values):
            raise MiroError("a paired difference needs the same images and seeds on both sides")
        base_point, base_boot = _all(theirs, layout, point_draw), _all(theirs, layout, boot_draw)
        point = {k: v - base_point[k] for k, v in point.items()}
        boot = {k: v - base_boot[k] for k, v in boot.items()}
    return _estimates(point, boot)


# ----------------------------------------------------------------------------
# The speed-up
# ----------------------------------------------------------------------------


def speedup(
    steps: Sequence[int],
    estimates: Sequence[Estimate],
    differences: Sequence[Estimate],
    baseline_final: Estimate,
    baseline_steps: int,
) -> dict[str, object]:
    """The first evaluated step whose estimate is above the baseline's final one *and* whose
    paired difference to it has its interval above zero; else "not established".

    `differences[i]` is the model at `steps[i]` minus the baseline at its final step. When the
    first evaluation already qualifies, the true step may be earlier: the ratio is a lower bound.
    """
    for i, (step, est, diff) in enumerate(zip(steps, estimates, differences, strict=True)):
        if est.value > baseline_final.value and diff.established():
            return {
                "established": True,
                "step": int(step),
                "speedup": baseline_steps / step,
                "lower_bound": i == 0,
                "difference": diff.to_dict(),
            }
    return {"established": False, "step": None, "speedup": None, "lower_bound": False,
            "difference": differences[-1].to_dict() if differences else None}  # fmt: skip


def fmt(est: Estimate | dict, scale: float = 1.0, digits: str = ".1f") -> str:
    """'12.3 [10.1, 14.6]' — a figure and its interval, for tables."""
    e = est if isinstance(est, dict) else est.to_dict()
    value, low, high = (_number(scale * e[k], digits) for k in ("value", "low", "high"))
    return f"{value} [{low}, {high}]"


def _number(x: float, digits: str) -> str:
    """`x` formatted, without the sign of a bound that rounds to zero ("-0.0" reads as below)."""
    text = f"{x:{digits}}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text
