"""Stage `miro eval`: the Shapes World GenEval, and reward metrics of generated images.

GenEval here follows ../shared/SHAPES_WORLD.md: a prompt set balanced over the six categories
(fixed seed), several images per prompt, the detector's pass/fail per image; a category's
score is its fraction of passed images and the overall score is the mean of the six.
Images come from a checkpoint (generated with the given sampler settings) or from any
JSONL manifest with `prompt` and `file` fields, so images from any model can be scored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from miro_data.common import (
    MiroError,
    atomic_path,
    check_choice,
    check_device,
    check_finite,
    check_positive,
    check_seed,
    dumps_json,
    owns_output,
)
from miro_data.decode import DecodeError, decode_image
from miro_data.detector import check
from miro_data.shapes import CATEGORIES, caption_for, parse_caption, sample_prompt

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

    def to_dict(self) -> dict:
        return {"overall": self.overall, "categories": self.categories, "n_images": self.n_images}

    def to_markdown(self) -> str:
        head = "| " + " | ".join(["overall", *CATEGORIES]) + " |"
        rule = "|" + "---|" * (len(CATEGORIES) + 1)
        row = (
            "| "
            + " | ".join(f"{100 * v:.1f}" for v in [self.overall, *self.categories.values()])
            + " |"
        )
        return "\n".join([head, rule, row])


def score_geneval(prompts: Sequence[str], images: Sequence[np.ndarray]) -> GenevalResult:
    """Detector checks of each image against its prompt, aggregated per category."""
    passed, by_category = [], {c: [] for c in CATEGORIES}
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
# Manifests and pictures
# ----------------------------------------------------------------------------


def read_manifest(path: Path) -> tuple[list[dict], list[np.ndarray]]:
    """Rows of a JSONL manifest and their images (`file` is relative to the manifest)."""
    if not path.exists():
        raise MiroError(f"manifest not found: {path}")
    rows, images = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            file = path.parent / row["file"]
            prompt = row["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MiroError(
                f"{path}:{n}: expected a JSON object with 'prompt' and 'file'"
            ) from None
        try:
            images.append(decode_image(file.read_bytes()))
        except (OSError, DecodeError) as err:
            raise MiroError(f"{path}:{n}: cannot read image {file}: {err}") from None
        rows.append({**row, "prompt": prompt})
    if not rows:
        raise MiroError(f"manifest {path} is empty")
    return rows, images


def write_manifest(
    out: Path, prompts: Sequence[str], images: np.ndarray, extra: Sequence[dict]
) -> Path:
    """PNG per image under out/images/ and out/manifest.jsonl (write-then-rename)."""
    rows = []
    for i, (prompt, image, more) in enumerate(zip(prompts, images, extra, strict=True)):
        name = f"images/{i:06d}.png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        rows.append({"file": name, "prompt": prompt, **more})
    manifest = out / "manifest.jsonl"
    with atomic_path(manifest) as tmp:
        tmp.write_text("".join(dumps_json(r) + "\n" for r in rows))
    return manifest


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
    """Score a checkpoint (generating its images) or an existing manifest."""

    out: Path
    checkpoint: Path | None = None
    manifest: Path | None = None
    prompts_per_category: int = 16
    images_per_prompt: int = 4
    seed: int = 0
    guidance: float = 7.0
    steps: int = 50
    preset: str = "high"
    target: str = ""
    negative: str = ""
    weights: str = "ema"
    device: str = "auto"
    batch_size: int = 64

    def __post_init__(self) -> None:
        from miro_train.sample import WEIGHTS, check_targets

        if (self.checkpoint is None) == (self.manifest is None):
            raise MiroError("give a CHECKPOINT or --manifest (one of the two)")
        for name in ("prompts_per_category", "images_per_prompt", "steps", "batch_size"):
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        check_seed("--seed", self.seed)
        check_finite("--guidance", self.guidance, 0)
        check_targets(self.preset, self.target, self.negative)
        check_choice("--weights", self.weights, WEIGHTS)
        check_device("--device", self.device)


def _generate_for_geneval(cfg: GenevalConfig) -> tuple[list[str], np.ndarray]:
    from miro_train.sample import generate, load_bundle, resolve_targets

    bundle = load_bundle(cfg.checkpoint, cfg.device, cfg.weights)  # type: ignore[arg-type]
    pos, neg = resolve_targets(bundle.rewards, cfg.preset, cfg.target, cfg.negative)
    base = geneval_prompts(cfg.prompts_per_category, cfg.seed)
    prompts = [p for p in base for _ in range(cfg.images_per_prompt)]
    images = generate(
        bundle,
        prompts,
        positive=pos,
        negative=neg,
        guidance=cfg.guidance,
        steps=cfg.steps,
        seeds=cfg.seed * 1_000_003,
        batch_size=cfg.batch_size,
        progress=True,
    )
    extra = [
        {
            "seed": cfg.seed * 1_000_003 + i,
            "targets": pos,
            "negatives": neg,
            "guidance": cfg.guidance,
            "steps": cfg.steps,
            "checkpoint": str(bundle.checkpoint),
            "step": bundle.step,
        }
        for i in range(len(prompts))
    ]
    write_manifest(cfg.out, prompts, images, extra)
    return prompts, images


@owns_output  # one process writes an output folder at a time
def geneval(cfg: GenevalConfig) -> GenevalResult:
    """GenEval of a checkpoint or manifest; writes results.json, results.md and category grids."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.manifest is not None:
        rows, images = read_manifest(cfg.manifest)
        prompts = [r["prompt"] for r in rows]
    else:
        prompts, images = _generate_for_geneval(cfg)  # type: ignore[assignment]
    result = score_geneval(prompts, images)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    with atomic_path(cfg.out / "results.json") as tmp:
        tmp.write_text(dumps_json({**result.to_dict(), "settings": settings}, indent=2))
    with atomic_path(cfg.out / "results.md") as tmp:
        tmp.write_text(
            f"# Shapes World GenEval\n\n{result.to_markdown()}\n\n{result.n_images} images.\n"
        )
    save_category_grids(
        cfg.out, prompts, images, result.passed, cfg.images_per_prompt if cfg.checkpoint else 8
    )
    return result


@dataclass(frozen=True)
class RewardEvalConfig:
    """Reward metrics over the images of a manifest."""

    manifest: Path
    rewards: tuple[str, ...]
    out: Path | None = None
    reward_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rewards:
            raise MiroError("--rewards names no reward")


def reward_summary(
    images: Sequence[np.ndarray], prompts: Sequence[str], rewards: Sequence
) -> dict[str, dict]:
    """Mean, std and count (NaN excluded) of each reward over the images."""
    out = {}
    for reward in rewards:
        values = np.asarray(reward.score(list(images), list(prompts)), dtype=np.float64)
        ok = values[np.isfinite(values)]
        out[reward.name] = {
            "mean": float(ok.mean()) if ok.size else math.nan,
            "std": float(ok.std()) if ok.size else math.nan,
            "n": int(ok.size),
            "undefined": int(values.size - ok.size),
        }
    return out


def eval_rewards(cfg: RewardEvalConfig) -> dict[str, dict]:
    """Score a manifest's images with registered rewards; writes rewards.json and a bar plot."""
    from miro_data.rewards import RewardContext, build_reward

    rows, images = read_manifest(cfg.manifest)
    ctx = RewardContext(options=cfg.reward_options)
    rewards = [build_reward(name, ctx) for name in cfg.rewards]
    summary = reward_summary(images, [r["prompt"] for r in rows], rewards)
    out = cfg.out or cfg.manifest.parent
    with atomic_path(out / "rewards.json") as tmp:
        tmp.write_text(dumps_json(summary, indent=2))
    plot_reward_bars({"images": summary}, out / "rewards.png")
    return summary


def plot_reward_bars(groups: dict[str, dict[str, dict]], path: Path) -> None:
    """One panel per reward, one bar (mean ± std) per group (e.g. per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r for g in groups.values() for r in g})
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
    for ax, reward in zip(axes[0], names, strict=True):
        labels = [g for g in groups if reward in groups[g]]
        means = [groups[g][reward]["mean"] for g in labels]
        stds = [groups[g][reward]["std"] for g in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color="#4a78b5", capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(reward, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
