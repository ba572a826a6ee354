"""Stage `miro eval`: the Shapes World GenEval, and reward metrics of generated images.

GenEval here follows docs/shapes-world.md: a prompt set balanced over the six categories
(fixed seed), several images per prompt, the detector's pass/fail per image; a category's
score is its fraction of passed images and the overall score is the mean of the six.
Images come from a checkpoint (generated with the given sampler settings) or from any
JSONL manifest with `prompt` and `file` fields, so images from any model can be scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from miro_data.checks import check_positive
from miro_data.common import MiroError, atomic_path, dumps_json, save_json
from miro_data.detector import check
from miro_data.hub import allow_download_field
from miro_data.options import NAMES, opt
from miro_data.processes import owns_output
from miro_data.rewards import check_reward_names
from miro_data.shapes import CATEGORIES, caption_for, parse_caption, sample_prompt
from miro_train.following import WORDS, Attribute, following, following_line
from miro_train.imagefolder import read_manifest, write_manifest
from miro_train.sampler import SamplerSettings, draw_numbers
from miro_train.stats import Estimate, bootstrap, fmt

if TYPE_CHECKING:  # torch is imported only when images are generated
    from miro_train.sample import ModelBundle

# `miro sample`'s settings in a larger batch: GenEval draws hundreds of images
GENEVAL_SAMPLER = SamplerSettings(batch_size=64)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# Prompts and scores
# ----------------------------------------------------------------------------


def geneval_prompts(per_category: int, seed: int = 0) -> list[str]:
    """`per_category` distinct prompts of each category (as far as the grammar allows), fixed by seed."""
    rng = np.random.default_rng([seed, 5_315])
    prompts: list[str] = []
    for category in CATEGORIES:
        seen: list[str] = []
        for _ in range(per_category * 50):
            text = caption_for(sample_prompt(category, rng))
            if text not in seen:
                seen.append(text)
            if len(seen) == per_category:
                break
        # a category with fewer distinct prompts repeats them in turn, so each is asked
        # equally often (single_object has three: circle, square, triangle)
        prompts += [seen[i % len(seen)] for i in range(per_category)]
    return prompts


@dataclass(frozen=True)
class GenevalResult:
    """Per-category pass rates and their mean, over n_images."""

    categories: dict[str, float]
    overall: float
    n_images: int
    passed: list[bool] = field(repr=False, default_factory=list)
    # 95 % bootstrap intervals (miro_train.stats) keyed "geneval" and "geneval/<category>"
    intervals: dict[str, Estimate] = field(repr=False, default_factory=dict)
    # per kind of word ("shape", "color"): "following" and "objects" (miro_train.following)
    following: dict[Attribute, dict[str, Estimate]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        out = {"overall": self.overall, "categories": self.categories, "n_images": self.n_images}
        if self.intervals:
            out |= interval_fields(self.intervals)
        return out | {f"{WORDS[a].category}_{k}": e.to_dict()
                      for a, figures in self.following.items() for k, e in figures.items()}  # fmt: skip

    def to_markdown(self) -> str:
        head = "| " + " | ".join(["overall", *CATEGORIES]) + " |"
        rule = "|" + "---|" * (len(CATEGORIES) + 1)
        keys = ["geneval", *(f"geneval/{c}" for c in self.categories)]
        values = [self.overall, *self.categories.values()]
        cells = [fmt(self.intervals[k], 100) if k in self.intervals else f"{100 * v:.1f}"
                 for k, v in zip(keys, values, strict=True)]  # fmt: skip
        table = "\n".join([head, rule, "| " + " | ".join(cells) + " |"])
        lines = [following_line(a, figures) for a, figures in self.following.items()]
        return "\n\n".join([table, *lines])


def interval_fields(intervals: dict[str, Estimate]) -> dict:
    """The `interval` of the overall score and the `intervals` of the categories, as
    [low, high] pairs: the fields results.json gives beside each GenEval figure."""
    pair = [intervals["geneval"].low, intervals["geneval"].high]
    cats = {k.removeprefix("geneval/"): [e.low, e.high] for k, e in intervals.items()
            if k.startswith("geneval/")}  # fmt: skip
    return {"interval": pair, "intervals": cats}


def with_intervals(result: GenevalResult, prompts: Sequence[str]) -> GenevalResult:
    """The result with 95 % intervals (prompts and images within a prompt resampled)."""
    passed = np.asarray(result.passed, dtype=np.float64)
    return replace(result, intervals=bootstrap({"geneval": passed}, prompts))


def score_geneval(
    prompts: Sequence[str], images: Sequence[np.ndarray] | np.ndarray
) -> GenevalResult:
    """Detector checks of each image against its prompt, aggregated per category."""
    passed: list[bool] = []
    by_category: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for text, image in zip(prompts, images, strict=True):
        prompt = parse_caption(text)
        if prompt is None:
            raise MiroError(f"not a Shapes World prompt: {text!r}")
        ok = bool(check(prompt, image))
        passed.append(ok)
        by_category[prompt.category].append(ok)
    categories = {c: float(np.mean(v)) if v else math.nan for c, v in by_category.items()}
    present = [v for v in categories.values() if not math.isnan(v)]
    return GenevalResult(
        categories, float(np.mean(present)) if present else math.nan, len(passed), passed
    )


# ----------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------


def save_category_grids(
    out: Path,
    prompts: Sequence[str],
    images: Sequence[np.ndarray],
    passed: Sequence[bool],
    per_row: int,
) -> list[Path]:
    """One PNG per category: a row per prompt, a green or red frame for pass or fail."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    categories = [getattr(parse_caption(p), "category", None) for p in prompts]
    for category in CATEGORIES:
        idx = [i for i, c in enumerate(categories) if c == category][: per_row * 8]
        if not idx:
            continue
        rows = math.ceil(len(idx) / per_row)
        fig, axes = plt.subplots(
            rows, per_row, figsize=(1.3 * per_row + 2.2, 1.3 * rows), squeeze=False
        )
        for ax in axes.ravel():
            ax.axis("off")
        for k, i in enumerate(idx):
            ax = axes[k // per_row][k % per_row]
            ax.imshow(images[i], interpolation="nearest")
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("#2e7d32" if passed[i] else "#c62828")
                spine.set_linewidth(2.5)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            if k % per_row == 0:
                ax.set_ylabel(
                    prompts[i].removeprefix("a photo of "),
                    rotation=0,
                    ha="right",
                    va="center",
                    fontsize=7,
                )
        fig.suptitle(
            f"{category}: {100 * np.mean([passed[i] for i in idx]):.0f}% pass (green)", fontsize=9
        )
        fig.tight_layout()
        path = out / f"grid_{category}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenevalConfig:
    """Score a checkpoint (generating its images) or an existing manifest.

    `sampler.seed` fixes the prompt set as well as the noise.
    """

    out: Path = field(
        default=Path("geneval"),
        metadata=opt("--out", "-o", help="Folder for images, results and grids."),
    )
    checkpoint: Path | None = field(
        default=None, metadata=opt(help="Checkpoint or run folder (omit with --manifest).")
    )
    manifest: Path | None = field(
        default=None, metadata=opt(help="Score the images of this JSONL manifest instead.")
    )
    prompts_per_category: int = field(
        default=16, metadata=opt(help="Distinct prompts per category.")
    )
    images_per_prompt: int = field(default=4, metadata=opt())
    sampler: SamplerSettings = GENEVAL_SAMPLER

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.manifest is None):
            raise MiroError("give a CHECKPOINT or --manifest (one of the two)")
        check_positive("--prompts-per-category", self.prompts_per_category)
        check_positive("--images-per-prompt", self.images_per_prompt)


def geneval_images(
    bundle: ModelBundle,
    settings: SamplerSettings,
    per_category: int,
    per_prompt: int,
    progress: bool = False,
) -> tuple[list[str], np.ndarray]:
    """The GenEval prompt set (fixed by the settings' seed), each prompt drawn `per_prompt`
    times in a row: the one way `miro eval geneval` and the experiments make their images."""
    from miro_train.sample import generate

    base = geneval_prompts(per_category, settings.seed)
    prompts = [p for p in base for _ in range(per_prompt)]
    return prompts, generate(bundle, prompts, settings, progress=progress)


def _checkpoint_images(cfg: GenevalConfig) -> tuple[list[str], np.ndarray]:
    """Generate, then keep the images and their manifest in the output folder."""
    from miro_train.sample import load_bundle, provenance

    settings = cfg.sampler
    assert cfg.checkpoint is not None  # GenevalConfig takes a checkpoint or a manifest
    bundle = load_bundle(cfg.checkpoint, settings.device, settings.weights,
                         settings.allow_download)  # fmt: skip
    about = provenance(bundle, settings)
    cfg.out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before sampling
    prompts, images = geneval_images(
        bundle, settings, cfg.prompts_per_category, cfg.images_per_prompt, progress=True
    )
    write_manifest(cfg.out, prompts, images, [{"draw": k, **about} for k in draw_numbers(prompts)])
    return prompts, images


PER_IMAGE = "per_image.jsonl"  # one row per image: what the intervals are bootstrapped from


def write_per_image(path: Path, rows: Sequence[dict]) -> None:
    """Per-image results as JSON lines (written whole, then renamed into place)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(dumps_json(row) + "\n" for row in rows))


@owns_output  # one process writes an output folder at a time
def geneval(cfg: GenevalConfig) -> GenevalResult:
    """GenEval of a checkpoint or manifest; writes results.json, results.md and category grids.

    Inputs are read and checked before anything is written, so bad input leaves no folder.
    """
    images: Sequence[np.ndarray]
    if cfg.manifest is not None:
        rows, images = read_manifest(cfg.manifest)
        prompts = [r["prompt"] for r in rows]
        result = score_geneval(prompts, images)
        cfg.out.mkdir(parents=True, exist_ok=True)
    else:
        prompts, generated = _checkpoint_images(cfg)
        images = list(generated)
        result = score_geneval(prompts, images)
    figures = {a: following(prompts, images, a) for a in WORDS}
    result = replace(
        with_intervals(result, prompts), following={a: f for a, f in figures.items() if f}
    )
    write_per_image(
        cfg.out / PER_IMAGE,
        [{"prompt": p, "passed": ok} for p, ok in zip(prompts, result.passed, strict=True)],
    )
    save_json(cfg.out / "results.json", {**result.to_dict(), "settings": cfg})
    with atomic_path(cfg.out / "results.md") as tmp:
        tmp.write_text(
            f"# Shapes World GenEval\n\n{result.to_markdown()}\n\n{result.n_images} images; "
            "95 % bootstrap intervals in brackets (prompts, and images within a prompt, resampled).\n"
        )
    save_category_grids(
        cfg.out, prompts, images, result.passed, cfg.images_per_prompt if cfg.checkpoint else 8
    )
    return result


@dataclass(frozen=True)
class RewardEvalConfig:
    """Reward metrics over the images of a manifest."""

    manifest: Path = field(metadata=opt(help="JSONL manifest with prompt and file fields."))
    rewards: tuple[str, ...] = field(
        metadata=opt("--rewards", "-r", parser=NAMES, help="Comma-separated reward names.")
    )
    out: Path | None = field(default=None, metadata=opt(
        help="Folder for rewards.json and rewards.png (default: beside the manifest)."
    ))  # fmt: skip
    reward_options: dict = field(default_factory=dict)
    allow_download: bool = allow_download_field("reward weights")

    def __post_init__(self) -> None:
        check_reward_names(self.rewards)  # none, unknown and twice-named rewards


def reward_summary(
    images: Sequence[np.ndarray] | np.ndarray, prompts: Sequence[str], rewards: Sequence
) -> dict[str, dict]:
    """Mean, its 95 % bootstrap interval (prompts and images within a prompt resampled), std
    and count (NaN excluded) of each reward over the images."""
    out = {}
    for reward in rewards:
        values = np.asarray(reward.score(list(images), list(prompts)), dtype=np.float64)
        ok = values[np.isfinite(values)]
        est = bootstrap({reward.name: values}, prompts)[reward.name]
        out[reward.name] = {
            "mean": float(ok.mean()) if ok.size else math.nan,
            "low": est.low,
            "high": est.high,
            "std": float(ok.std()) if ok.size else math.nan,
            "n": int(ok.size),
            "undefined": int(values.size - ok.size),
        }
    return out


def eval_rewards(cfg: RewardEvalConfig) -> dict[str, dict]:
    """Score a manifest's images with registered rewards; writes rewards.json and a bar plot."""
    from miro_data.rewards import RewardContext, build_reward

    rows, images = read_manifest(cfg.manifest)
    ctx = RewardContext(options=cfg.reward_options, allow_download=cfg.allow_download)
    rewards = [build_reward(name, ctx) for name in cfg.rewards]
    summary = reward_summary(images, [r["prompt"] for r in rows], rewards)
    out = cfg.out or cfg.manifest.parent
    with atomic_path(out / "rewards.json") as tmp:
        tmp.write_text(dumps_json(summary, indent=2))
    plot_reward_bars({"images": summary}, out / "rewards.png")
    return summary


def plot_reward_bars(groups: dict[str, dict[str, dict]], path: Path) -> None:
    """One panel per reward, one bar per group (e.g. per model): the mean and its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r for g in groups.values() for r in g})
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
    for ax, reward in zip(axes[0], names, strict=True):
        labels = [g for g in groups if reward in groups[g]]
        means = np.array([groups[g][reward]["mean"] for g in labels])
        bounds = np.array([[groups[g][reward]["low"], groups[g][reward]["high"]] for g in labels])
        yerr = np.abs(bounds.T - means)  # matplotlib wants distances below and above
        ax.bar(range(len(labels)), means, yerr=yerr, color="#4a78b5", capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(reward, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
