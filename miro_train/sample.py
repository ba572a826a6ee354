"""Stage `miro sample`, and the one generation path every command draws through.

`load_bundle` + `generate` are the Python API: `generate` turns prompts + `SamplerSettings` +
a loaded model into images, for `miro sample`, `miro eval geneval` and every experiment.
`sample` is the CLI stage: n images per prompt (best-of-N: N draws per image, the one a reward
scores highest kept), written by `imagefolder.write_manifest` (PNGs and a JSONL manifest:
prompt, draw, seed, targets, guidance, … that any evaluator can score) plus a grid.
Settings, targets and the seed convention are `sampler.py`'s.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from miro_data.checks import check_choice, check_positive
from miro_data.common import MiroError, atomic_path, progress_bar
from miro_data.options import opt
from miro_data.processes import owns_output
from miro_train.checkpoint import find_checkpoint, load_weights, read_meta, read_spec
from miro_train.codec import Codec
from miro_train.conditioning import ConditioningInput
from miro_train.dist import pick_device
from miro_train.flow import euler, guided_velocity
from miro_train.imagefolder import MANIFEST, write_manifest
from miro_train.models import MiroModel, build_model
from miro_train.sampler import WEIGHTS, SamplerSettings, Targets, draw_numbers, noise_seed

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


@dataclass
class ModelBundle:
    """A model ready to sample: weights loaded, in eval mode, with its codec."""

    model: MiroModel
    codec: Codec
    checkpoint: Path
    step: int
    weights: str
    caption_dropout: float = 0.0  # its training's: > 0 makes caption guidance possible

    @property
    def rewards(self) -> list[str]:
        return self.model.reward_names


def load_bundle(
    checkpoint: str | Path, device: str = "auto", weights: str = "ema", allow_download: bool = False
) -> ModelBundle:
    """Load a miro checkpoint (a checkpoint folder, or a run folder → its latest); its frozen
    encoders from the local cache, or with `allow_download` from the Hub when missing."""
    check_choice("--weights", weights, WEIGHTS)
    ckpt = find_checkpoint(checkpoint)
    meta = read_meta(ckpt)
    spec = read_spec(ckpt, meta)
    dev = pick_device(device)
    model = build_model(spec)
    load_weights(model, ckpt, weights)
    model = model.to(dev).eval()
    codec = Codec(spec, dev, allow_download=allow_download)
    dropout = float(meta["config"].get("caption_dropout") or 0.0)
    return ModelBundle(model, codec, ckpt, int(meta["step"]), weights, dropout)


# ----------------------------------------------------------------------------
# Generation: the one path from prompts + settings + model to images
# ----------------------------------------------------------------------------


def _noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One standard-normal sample per seed, drawn on the CPU: the same on every device."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


def _vectors(values: Targets, rewards: list[str], n: int) -> torch.Tensor:
    nan = float("nan")
    return torch.tensor([[nan if values.get(k) is None else values[k] for k in rewards]] * n)


@torch.no_grad()
def generate(
    bundle: ModelBundle,
    prompts: Sequence[str],
    settings: SamplerSettings,
    *,
    draws: Sequence[int] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(N, H, W, 3) uint8 images for N prompts, sampled as `settings` say.

    Image i starts from `noise_seed(settings.seed, prompts[i], draws[i])`; `draws` defaults
    to `draw_numbers(prompts)` (a repeated prompt gets draws 0, 1, …), and redraws one image
    of a manifest from its row's `prompt`, `seed` and `draw`.
    """
    model, codec, rewards, n = bundle.model, bundle.codec, bundle.rewards, len(prompts)
    draws = draw_numbers(prompts) if draws is None else list(draws)
    if len(draws) != n:
        raise MiroError(f"{len(draws)} draw numbers for {n} prompts")
    seeds = [noise_seed(settings.seed, p, k) for p, k in zip(prompts, draws, strict=True)]
    positive, negative = settings.targets(bundle)
    pos, neg = _vectors(positive, rewards, n), _vectors(negative, rewards, n)
    contrast = bool(rewards) and settings.guidance != 0
    images, size = [], settings.batch_size
    with progress_bar("img", disable=None if progress else True) as bar:
        task = bar.add_task("sample", total=n)
        for i in range(0, n, size):
            part = slice(i, min(n, i + size))
            chunk = list(prompts[part])
            noise = _noise(seeds[part], codec.shape).to(codec.device)
            text, mask = codec.text(chunk)
            inputs = ConditioningInput(pos[part].to(codec.device), text, mask)
            cond_pos = model.condition(inputs)
            cond_neg = (
                model.condition(replace(inputs, rewards=neg[part].to(codec.device)))
                if contrast
                else None
            )
            uncaptioned = None
            if settings.caption_guidance:
                no_caption = torch.ones(len(chunk), dtype=torch.bool, device=codec.device)
                uncaptioned = model.condition(inputs.without_caption(no_caption))
            velocity = guided_velocity(
                model, cond_pos, cond_neg, settings.guidance, settings.guidance_interval,
                uncaptioned=uncaptioned, caption_omega=settings.caption_guidance,
            )  # fmt: skip
            images.append(codec.to_images(euler(velocity, noise, settings.steps)))
            bar.advance(task, len(chunk))
    return np.concatenate(images)


def provenance(bundle: ModelBundle, settings: SamplerSettings) -> dict:
    """What every manifest row records about how its image was drawn (with prompt and draw)."""
    positive, negative = settings.targets(bundle)
    return {
        "seed": settings.seed,
        "targets": positive,
        "negatives": negative,
        "guidance": settings.guidance,
        "caption_guidance": settings.caption_guidance,
        "guidance_interval": list(settings.guidance_interval),
        "steps": settings.steps,
        "checkpoint": str(bundle.checkpoint),
        "step": bundle.step,
        "weights": bundle.weights,
    }


# ----------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleConfig:
    """What `miro sample` draws and where it writes; every option checked before any work."""

    checkpoint: Path = field(
        metadata=opt(help="A checkpoint folder, or a run folder (its latest).")
    )
    out: Path = field(
        metadata=opt("--out", "-o", help="Folder for images/, grid.png, manifest.jsonl.")
    )
    prompts: tuple[str, ...]  # the CLI reads them from --prompt and --prompts FILE
    n: int = field(default=1, metadata=opt(help="Images per prompt."))
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    best_of: int = field(default=1, metadata=opt(help="Draw N per image and keep the best."))
    select_by: str | None = field(default=None, metadata=opt(
        help="Reward (registry name or module:Class) for --best-of."
    ))  # fmt: skip
    overwrite: bool = field(
        default=False, metadata=opt("--overwrite", help="Replace samples already in --out.")
    )

    def __post_init__(self) -> None:
        if not self.prompts:
            raise MiroError("no prompts: give --prompt TEXT or --prompts FILE")
        check_positive("--n", self.n)
        check_positive("--best-of", self.best_of)
        if self.best_of > 1 and not self.select_by:
            raise MiroError("--best-of needs --select-by REWARD")


@owns_output  # one process writes an output folder at a time
def sample(cfg: SampleConfig) -> Path:
    """Draw n images per prompt (the best of `best_of` draws each); returns the manifest's path."""
    if (cfg.out / MANIFEST).exists() and not cfg.overwrite:
        raise MiroError(
            f"{cfg.out} already holds samples: choose another --out or pass --overwrite"
        )
    settings = cfg.sampler
    bundle = load_bundle(cfg.checkpoint, settings.device, settings.weights,
                         settings.allow_download)  # fmt: skip
    about = provenance(bundle, settings)  # also refuses targets for a baseline, before work
    scorer = None
    if cfg.best_of > 1:
        from miro_data.rewards import RewardContext, build_reward

        ctx = RewardContext(allow_download=settings.allow_download)
        scorer = build_reward(str(cfg.select_by), ctx)
    cfg.out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before sampling
    items = [(p, k) for p in cfg.prompts for k in range(cfg.n)]
    captions = [p for p, _ in items for _ in range(cfg.best_of)]  # candidates of item i together
    draws = draw_numbers(captions)
    images = generate(bundle, captions, settings, draws=draws, progress=True)
    scores = np.full(len(captions), np.nan)
    if scorer is not None:
        scores = np.asarray(scorer.score(list(images), captions), dtype=np.float64)
    picks, rows = [], []
    for i, (_, k) in enumerate(items):
        cand = scores[i * cfg.best_of : (i + 1) * cfg.best_of]
        pick = i * cfg.best_of + (0 if np.isnan(cand).all() else int(np.nanargmax(cand)))
        picks.append(pick)
        rows.append({"index": k, "draw": draws[pick], **about})
        if cfg.best_of > 1:
            score = float(scores[pick])
            rows[-1] |= {"best_of": cfg.best_of, "select_by": cfg.select_by,
                         "score": None if math.isnan(score) else score}  # fmt: skip
    labels = [grid_label(p, about["targets"]) for p in cfg.prompts]
    _write_grid(images[picks], cfg.out / "grid.png", labels)
    manifest = write_manifest(cfg.out, [p for p, _ in items], images[picks], rows)
    log.info("wrote %d images, grid.png and %s", len(rows), manifest)
    return manifest


GRID_MIN_SIDE = 128  # small images are scaled up (nearest: pixels stay visible) to this
GRID_LABEL_WIDTH = 240
GRID_GAP = 4


def grid_label(prompt: str, targets: Targets | None) -> str:
    """A grid row's label: its prompt, then its reward targets."""
    if not targets:
        return prompt
    shown = ("missing" if value is None else f"{value:g}" for value in targets.values())
    return prompt + "\n" + ", ".join(f"{name}={v}" for name, v in zip(targets, shown, strict=True))


def _write_grid(images: np.ndarray, path: Path, labels: list[str]) -> None:
    """One row per label (a prompt's `n` images side by side), each row labelled on the left."""
    from PIL import ImageDraw, ImageFont

    n, h, w, _ = images.shape
    cols = n // len(labels)
    scale = max(1, math.ceil(GRID_MIN_SIDE / max(h, w)))
    cell_h, cell_w = h * scale, w * scale
    left = GRID_LABEL_WIDTH + GRID_GAP
    grid = Image.new(
        "RGB",
        (left + cols * (cell_w + GRID_GAP), GRID_GAP + len(labels) * (cell_h + GRID_GAP)),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=12)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = Image.fromarray(img).resize((cell_w, cell_h), Image.Resampling.NEAREST)
        grid.paste(tile, (left + c * (cell_w + GRID_GAP), GRID_GAP + r * (cell_h + GRID_GAP)))
    for r, label in enumerate(labels):
        wrapped = "\n".join(textwrap.fill(part, 34) for part in label.split("\n"))
        draw.multiline_text((GRID_GAP, GRID_GAP + r * (cell_h + GRID_GAP) + 2), wrapped,
                            fill="black", font=font)  # fmt: skip
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
