"""Stage `miro sample`: multi-reward guided Euler sampling from a miro checkpoint.

`load_bundle` + `generate` are the Python API (issue 5's evaluations call them for many
prompts and checkpoints); `sample` is the CLI stage that writes PNGs, a grid and a JSONL
manifest (prompt, seed, targets, guidance, file) that any evaluator can score.

Targets (METHOD.md): s⁺ defaults to all 1 (the top bin) and s⁻ to all 0. Presets: `high`;
`isolate:R` (s⁻ all 1 except R = 0: guide along R alone); `pair:A,B@t` (s⁻ all 1 except
A = t, B = 1 − t). `--target` / `--negative` then override single rewards; `none` asks for a
reward's learned "missing" embedding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
    progress_bar,
)
from miro_train.checkpoint import find_checkpoint, load_weights, read_meta
from miro_train.codec import Codec
from miro_train.dist import pick_device
from miro_train.flow import euler, guided_velocity
from miro_train.models import MiroModel, build_model

log = logging.getLogger(__name__)

Targets = dict[str, float | None]  # reward → value in [0, 1], None = missing
PRESETS = ("high", "isolate", "pair")
WEIGHTS = ("ema", "model")


@dataclass
class ModelBundle:
    """A model ready to sample: weights loaded, in eval mode, with its codec."""

    model: MiroModel
    codec: Codec
    checkpoint: Path
    step: int
    weights: str

    @property
    def rewards(self) -> list[str]:
        return self.model.reward_names


def load_bundle(checkpoint: str | Path, device: str = "auto", weights: str = "ema") -> ModelBundle:
    """Load a miro checkpoint (a checkpoint folder, or a run folder → its latest)."""
    check_choice("--weights", weights, WEIGHTS)
    ckpt = find_checkpoint(checkpoint)
    meta = read_meta(ckpt)
    dev = pick_device(device)
    model = build_model(meta["model"])
    load_weights(model, ckpt, weights)
    model = model.to(dev).eval()
    return ModelBundle(model, Codec(meta["model"], dev), ckpt, int(meta["step"]), weights)


# ----------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------


def parse_values(text: str, rewards: Sequence[str] | None, what: str = "--target") -> Targets:
    """'aesthetic=0.625,pickscore=1' → {reward: value}; checks names and the [0, 1] range.

    With `rewards` None only the syntax and the values are checked (before a checkpoint is read).
    """
    out: Targets = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = (s.strip() for s in item.partition("="))
        if not sep:
            raise MiroError(f"{what}: {item!r} is not REWARD=VALUE")
        if rewards is not None and name not in rewards:
            known = ", ".join(rewards) or "none (a baseline checkpoint)"
            raise MiroError(f"{what}: the checkpoint knows no reward {name!r}; it knows: {known}")
        if raw.lower() in ("none", "missing", "null"):
            out[name] = None
            continue
        try:
            value = float(raw)
        except ValueError:
            raise MiroError(f"{what}: {name}={raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:  # NaN too
            raise MiroError(f"{what}: {name}={value} is outside [0, 1]")
        out[name] = value
    return out


def resolve_targets(
    rewards: Sequence[str], preset: str = "high", target: str = "", negative: str = ""
) -> tuple[Targets, Targets]:
    """(s⁺, s⁻) over every reward of the checkpoint, from a preset and per-reward overrides."""
    pos: Targets = dict.fromkeys(rewards, 1.0)
    neg: Targets = dict.fromkeys(rewards, 0.0)
    kind, _, arg = preset.partition(":")
    if kind == "isolate":
        (name,) = parse_values(f"{arg}=0", rewards, "--preset isolate").keys()
        neg = dict.fromkeys(rewards, 1.0) | {name: 0.0}
    elif kind == "pair":
        names, _, t = arg.partition("@")
        pair = [n.strip() for n in names.split(",")]
        if len(pair) != 2 or not t:
            raise MiroError(f"--preset {preset!r}: write pair:A,B@t, e.g. pair:aesthetic,clip@0.3")
        a = parse_values(f"{pair[0]}={t}", rewards, "--preset pair")[pair[0]]
        assert a is not None
        parse_values(f"{pair[1]}={1 - a}", rewards, "--preset pair")
        neg = dict.fromkeys(rewards, 1.0) | {pair[0]: a, pair[1]: 1.0 - a}
    elif kind != "high":
        raise MiroError(f"unknown preset {preset!r}; use high, isolate:REWARD or pair:A,B@t")
    return pos | parse_values(target, rewards), neg | parse_values(negative, rewards, "--negative")


def check_targets(preset: str, target: str, negative: str) -> None:
    """The preset's and the overrides' syntax and values, before a checkpoint is read."""
    kind, _, arg = preset.partition(":")
    if kind not in PRESETS or (kind == "high") != (arg == ""):
        raise MiroError(f"unknown preset {preset!r}; use high, isolate:REWARD or pair:A,B@t")
    if kind == "pair":
        names, _, t = arg.partition("@")
        if len(names.split(",")) != 2 or not t:
            raise MiroError(f"--preset {preset!r}: write pair:A,B@t, e.g. pair:aesthetic,clip@0.3")
        parse_values(f"{names.split(',')[0]}={t}", None, "--preset pair")
    parse_values(target, None)
    parse_values(negative, None, "--negative")


def _vectors(values: Targets | Sequence[Targets], rewards: list[str], n: int) -> torch.Tensor:
    rows = [values] * n if isinstance(values, dict) else list(values)
    if len(rows) != n:
        raise MiroError(f"{len(rows)} target vectors for {n} prompts")
    nan = float("nan")
    return torch.tensor([[nan if r.get(k) is None else r[k] for k in rewards] for r in rows])


# ----------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------


def _noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One standard-normal sample per seed, drawn on the CPU: the same on every device."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    )


@torch.no_grad()
def generate(
    bundle: ModelBundle,
    prompts: Sequence[str],
    *,
    positive: Targets | Sequence[Targets] | None = None,
    negative: Targets | Sequence[Targets] | None = None,
    guidance: float = 7.0,
    steps: int = 50,
    seeds: int | Sequence[int] = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """(N, H, W, 3) uint8 images for N prompts; image i starts from noise seeded by seeds[i].

    `positive` / `negative` are one target dict for all prompts or one per prompt (missing
    rewards default to 1 and 0); noise is drawn on the CPU so an image depends only on its
    seed, not on the batch or the device.
    """
    model, codec, rewards, n = bundle.model, bundle.codec, bundle.rewards, len(prompts)
    seeds = [seeds + i for i in range(n)] if isinstance(seeds, int) else list(seeds)
    pos = _vectors(positive if positive is not None else dict.fromkeys(rewards, 1.0), rewards, n)
    neg = _vectors(negative if negative is not None else dict.fromkeys(rewards, 0.0), rewards, n)
    contrast = bool(rewards) and guidance != 0
    images = []
    with progress_bar("img", disable=None if progress else True) as bar:
        task = bar.add_task("sample", total=n)
        for i in range(0, n, batch_size):
            part = slice(i, min(n, i + batch_size))
            chunk = list(prompts[part])
            noise = _noise(seeds[part], codec.shape).to(codec.device)
            text, mask = codec.text(chunk)
            cond_pos = model.condition(pos[part].to(codec.device), text, mask)
            cond_neg = model.condition(neg[part].to(codec.device), text, mask) if contrast else None
            x = euler(guided_velocity(model, cond_pos, cond_neg, guidance), noise, steps)
            images.append(codec.to_images(x))
            bar.advance(task, len(chunk))
    return np.concatenate(images)


# ----------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleConfig:
    """What `miro sample` draws and where it writes."""

    checkpoint: Path
    out: Path
    prompts: tuple[str, ...]
    n: int = 1  # images per prompt
    guidance: float = 7.0
    steps: int = 50
    seed: int = 0
    preset: str = "high"
    target: str = ""
    negative: str = ""
    best_of: int = 1
    select_by: str | None = None
    batch_size: int = 32
    device: str = "auto"
    weights: str = "ema"
    overwrite: bool = False

    def __post_init__(self) -> None:
        """Every option checked here, before the checkpoint is read."""
        if not self.prompts:
            raise MiroError("no prompts: give --prompt TEXT or --prompts FILE")
        for name in ("n", "steps", "best_of", "batch_size"):
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        check_finite("--guidance", self.guidance, 0)
        check_seed("--seed", self.seed)
        check_targets(self.preset, self.target, self.negative)
        check_device("--device", self.device)
        check_choice("--weights", self.weights, WEIGHTS)
        if self.best_of > 1 and not self.select_by:
            raise MiroError("--best-of needs --select-by REWARD")


@owns_output  # one process writes an output folder at a time
def sample(cfg: SampleConfig) -> Path:
    """Draw n images per prompt; returns the manifest's path."""
    if (cfg.out / "manifest.jsonl").exists() and not cfg.overwrite:
        raise MiroError(
            f"{cfg.out} already holds samples: choose another --out or pass --overwrite"
        )
    bundle = load_bundle(cfg.checkpoint, cfg.device, cfg.weights)
    if not bundle.rewards and (cfg.target or cfg.negative or cfg.preset != "high"):
        raise MiroError(
            f"{bundle.checkpoint} is a baseline (no reward conditioning): drop the targets"
        )
    pos, neg = resolve_targets(bundle.rewards, cfg.preset, cfg.target, cfg.negative)
    scorer = None
    if cfg.best_of > 1:
        from miro_data.rewards import build_reward

        scorer = build_reward(str(cfg.select_by))
    cfg.out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before sampling
    items = [(p, k) for p in cfg.prompts for k in range(cfg.n)]
    seeds = [cfg.seed + i * cfg.best_of + j for i in range(len(items)) for j in range(cfg.best_of)]
    captions = [p for p, _ in items for _ in range(cfg.best_of)]
    images = generate(
        bundle,
        captions,
        positive=pos,
        negative=neg,
        guidance=cfg.guidance,
        steps=cfg.steps,
        seeds=seeds,
        batch_size=cfg.batch_size,
        progress=True,
    )
    scores = np.full(len(captions), np.nan)
    if scorer is not None:
        scores = np.asarray(scorer.score(list(images), captions), dtype=np.float64)
    rows, chosen = [], []
    for i, (prompt, k) in enumerate(items):
        cand = slice(i * cfg.best_of, (i + 1) * cfg.best_of)
        pick = i * cfg.best_of + (
            int(np.nanargmax(scores[cand])) if scorer and not np.isnan(scores[cand]).all() else 0
        )
        name = f"images/{i:06d}.png"
        with atomic_path(cfg.out / name) as tmp:
            Image.fromarray(images[pick]).save(tmp, format="PNG")
        chosen.append(images[pick])
        rows.append(_row(cfg, bundle, prompt, k, seeds[pick], name, pos, neg, scores[pick]))
    _write_grid(np.stack(chosen), cfg.out / "grid.png", cfg.n)
    manifest = cfg.out / "manifest.jsonl"
    with atomic_path(manifest) as tmp:
        tmp.write_text("".join(dumps_json(r) + "\n" for r in rows))
    log.info("wrote %d images, grid.png and %s", len(rows), manifest)
    return manifest


def _row(
    cfg: SampleConfig,
    bundle: ModelBundle,
    prompt: str,
    k: int,
    seed: int,
    file: str,
    pos: Targets,
    neg: Targets,
    score: float,
) -> dict[str, Any]:
    row = {
        "file": file,
        "prompt": prompt,
        "index": k,
        "seed": seed,
        "targets": pos,
        "negatives": neg,
        "guidance": cfg.guidance,
        "steps": cfg.steps,
        "checkpoint": str(bundle.checkpoint),
        "step": bundle.step,
        "weights": bundle.weights,
    }
    if cfg.best_of > 1:
        row |= {
            "best_of": cfg.best_of,
            "select_by": cfg.select_by,
            "score": None if math.isnan(score) else float(score),
        }
    return row


def _write_grid(images: np.ndarray, path: Path, per_row: int) -> None:
    n, h, w, _ = images.shape
    cols = per_row if per_row > 1 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = img
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
