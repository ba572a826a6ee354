"""Stage `miro eval text-reliance`: how much a checkpoint's predictions depend on the caption.

The flow-matching loss on training samples is measured twice with the same noise and times:
with each image's own caption, and with the captions shifted by one within the batch (another
sample's caption, the rewards left as they are). The relative rise of the loss says how much
the model's predictions lean on the right caption: a model that ignores its captions scores
exactly 0 at every t. On Shapes World the rise grows steadily with training, so seconds of
forward passes per checkpoint tell whether a change to the model or the recipe teaches the
text sooner, where GenEval needs hundreds of sampled images for a figure a few points wide.

`--swap colour` or `--swap shape` asks which words a model reads: each Shapes World colour
(shape) word in a caption is replaced by the next one in the palette (shape list), every other
word kept, and only the samples whose caption names one are measured. A model that draws the
asked shapes but ignores the colour words rises on `shape` and stays near 0 on `colour`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miro_data.checks import check_choice, check_device, check_int, check_positive, check_seed
from miro_data.common import MiroError, save_json
from miro_data.hub import allow_download_field
from miro_data.options import NUMBERS, opt
from miro_data.shapes import COLORS, SHAPES
from miro_train.codec import Codec
from miro_train.conditioning import ConditioningInput
from miro_train.data import Shards, make_loader, next_batch, open_shards
from miro_train.flow import flow_loss
from miro_train.prepare import batch_spec_for
from miro_train.sampler import WEIGHTS, Weights
from miro_train.stats import LEVEL, N_BOOT

log = logging.getLogger(__name__)

CHANGED = {"caption": "shifted captions", "colour": "colour words changed",
           "shape": "shape words changed"}  # fmt: skip
SWAPS = tuple(CHANGED)


@dataclass(frozen=True)
class TextRelianceConfig:
    """Which checkpoints, on which shards, at which times."""

    checkpoints: tuple[Path, ...] = field(metadata=opt(help="Checkpoint or run folders."))
    shards: Path = field(metadata=opt("--shards", help="Training-shard folder to measure on."))
    samples: int = field(default=1024, metadata=opt(help="Samples to average over."))
    times: tuple[float, ...] = field(default=(0.3, 0.5, 0.7, 0.9), metadata=opt(
        parser=NUMBERS, help="Noise levels t, comma-separated."
    ))  # fmt: skip
    batch_size: int = field(default=256, metadata=opt())
    seed: int = field(default=0, metadata=opt(help="Fixes the samples' order and the noise."))
    device: str = field(default="auto", metadata=opt())
    weights: Weights = field(default="ema", metadata=opt())
    swap: str = field(default="caption", metadata=opt(help=(
        "What changes: 'caption' (another sample's), or each Shapes World 'colour' or 'shape' "
        "word (the next one in the list)."
    )))  # fmt: skip
    allow_download: bool = allow_download_field("the model's text encoder or VAE")
    out: Path | None = field(default=None, metadata=opt(  # a JSON file for the results, when set
        "--out", "-o", help="A JSON file for the results."
    ))  # fmt: skip

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise MiroError("no checkpoints given")
        check_positive("--samples", self.samples)
        check_int("--batch-size", self.batch_size, 2)  # captions are shifted within a batch
        if not self.times or any(
            not isinstance(t, int | float) or not 0.0 < t < 1.0 for t in self.times
        ):
            raise MiroError("--times must be values strictly between 0 and 1")
        check_seed("--seed", self.seed)
        check_device("--device", self.device)
        check_choice("--weights", self.weights, WEIGHTS)
        check_choice("--swap", self.swap, SWAPS)


def shift_captions(cond: ConditioningInput) -> ConditioningInput:
    """Each sample gets the caption of the one before it (ids (B, L) or embeddings (B, L, D));
    the rewards stay."""
    mask = None if cond.text_mask is None else cond.text_mask.roll(1, dims=0)
    return replace(cond, text=cond.text.roll(1, dims=0), text_mask=mask)


def text_reliance(cfg: TextRelianceConfig) -> list[dict[str, Any]]:
    """One result per checkpoint: the loss with true and shifted captions at each t, the rise."""
    shards = open_shards(cfg.shards)
    if shards.total < 2:
        raise MiroError(f"{cfg.shards} holds fewer than two samples")
    results = [_measure(ckpt, shards, cfg) for ckpt in cfg.checkpoints]
    if cfg.out is not None:
        save_json(cfg.out, {"config": cfg, "results": results})
    return results


def next_word(words: Sequence[str]) -> Callable[[str], str]:
    """A caption rewriter: each of `words` (or its plural) becomes the next one, cyclically."""
    following = {w: words[(i + 1) % len(words)] for i, w in enumerate(words)}
    following |= {f"{w}s": f"{n}s" for w, n in following.items()}
    pattern = re.compile(r"\b(" + "|".join(sorted(following, key=len, reverse=True)) + r")\b")
    return lambda caption: pattern.sub(lambda m: following[m.group(1)], caption)


def _pairs(
    batch: dict[str, Any], b: int, codec: Codec, rewrite: Callable[[str], str] | None
) -> tuple[torch.Tensor, ConditioningInput, ConditioningInput]:
    """Which of the first b samples are measured (row indices), with their own conditioning
    and the changed one: another sample's caption, or with `rewrite` the caption rewritten
    (only the samples whose caption it changes)."""
    if rewrite is None:
        cond = codec.inputs(batch)[:b]
        return torch.arange(b), cond, shift_captions(cond)
    captions = list(batch["captions"][:b])
    rows = [i for i, c in enumerate(captions) if rewrite(c) != c]
    index = torch.tensor(rows, dtype=torch.long)
    rewards = batch["rewards"][:b][index].to(codec.device)
    # both captions encoded here the same way (not one from precomputed shard embeddings)
    own = ConditioningInput(rewards, *codec.text([captions[i] for i in rows]))
    other = ConditioningInput(rewards, *codec.text([rewrite(captions[i]) for i in rows]))
    return index, own, other


@torch.no_grad()
def _measure(checkpoint: Path, shards: Shards, cfg: TextRelianceConfig) -> dict[str, Any]:
    from miro_train.sample import load_bundle

    bundle = load_bundle(checkpoint, cfg.device, cfg.weights, cfg.allow_download)
    model, codec = bundle.model, bundle.codec
    total = min(cfg.samples, shards.total)  # the stream is endless: read each sample once
    batch_spec = batch_spec_for(model.spec, min(cfg.batch_size, total), seed=cfg.seed)
    batches = iter(make_loader(shards, batch_spec, workers=0))
    generator = torch.Generator().manual_seed(cfg.seed)
    words = {"colour": COLORS, "shape": SHAPES}.get(cfg.swap)
    rewrite = None if words is None else next_word(words)
    losses: dict[float, list[list[torch.Tensor]]] = {t: [[], []] for t in cfg.times}
    read = 0
    while read < total:
        batch = next_batch(batches)
        b = min(len(batch["captions"]), total - read)
        images = codec.to_model(batch)[:b]
        rows, own, other = _pairs(batch, b, codec, rewrite)
        x, n = images[rows.to(images.device)], len(rows)
        for t in cfg.times:
            # drawn for the whole batch, so every --swap gives a sample the same noise
            noise = torch.randn(images.shape, generator=generator)[rows].to(x.device)
            if n:
                times = torch.full((n,), t, device=x.device)
                for k, inputs in enumerate((own, other)):
                    loss = flow_loss(model, x, inputs, t=times, noise=noise, per_sample=True)
                    losses[t][k].append(loss.cpu())
        read += b
    if not losses[cfg.times[0]][0]:
        raise MiroError(f"no caption among the {read} samples names a Shapes World {cfg.swap}")
    per_t = np.stack([[torch.cat(parts).double().numpy() for parts in losses[t]]
                      for t in cfg.times])  # (T, 2, N)  # fmt: skip
    result = {"checkpoint": str(bundle.checkpoint), "step": bundle.step, "swap": cfg.swap,
              **summarise(per_t, cfg.times, cfg.seed)}  # fmt: skip
    log.info("%s: loss rises %.2f %% with %s", bundle.checkpoint,
             100 * result["mean_rise"], CHANGED[cfg.swap])  # fmt: skip
    return result


def summarise(per_t: np.ndarray, times: Sequence[float], seed: int) -> dict[str, Any]:
    """Per-sample losses (T, 2 = own | changed, N) → the losses and rise at each t, and the
    rise averaged over t with its 95 % bootstrap interval over the samples (one resample for
    every t: a sample's losses at different t share its image and caption)."""

    def mean_rise(sums: np.ndarray) -> np.ndarray:  # (T, 2, ...) loss sums → (...)
        return (sums[:, 1] / sums[:, 0] - 1.0).mean(0)

    n = per_t.shape[2]
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=N_BOOT)
    boot = mean_rise(per_t @ counts.T)  # (boot,): each resample's rise
    tail = (100 - LEVEL) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    sums = per_t.sum(-1)  # (T, 2)
    rows = [
        {"t": t, "loss": own / n, "loss_shifted": other / n, "rise": other / own - 1.0}
        for t, (own, other) in zip(times, sums.tolist(), strict=True)
    ]
    return {"samples": n, "times": rows, "mean_rise": float(mean_rise(sums)),
            "low": float(low), "high": float(high)}  # fmt: skip
