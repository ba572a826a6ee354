"""Stage `miro eval text-reliance`: how much a checkpoint's predictions depend on the caption.

The flow-matching loss on training samples is measured twice with the same noise and times:
with each image's own caption, and with the captions shifted by one within the batch (another
sample's caption, the rewards left as they are). The relative rise of the loss says how much
the model's predictions lean on the right caption: a model that ignores its captions scores
exactly 0 at every t. On Shapes World the rise grows steadily with training, so seconds of
forward passes per checkpoint tell whether a change to the model or the recipe teaches the
text sooner, where GenEval needs hundreds of sampled images for a figure a few points wide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from miro_data.checks import check_choice, check_device, check_int, check_positive, check_seed
from miro_data.common import MiroError, save_json
from miro_data.hub import allow_download_field
from miro_data.options import NUMBERS, opt
from miro_train.conditioning import ConditioningInput
from miro_train.data import Shards, make_loader, next_batch, open_shards
from miro_train.flow import flow_loss
from miro_train.prepare import batch_spec_for
from miro_train.sampler import WEIGHTS, Weights

log = logging.getLogger(__name__)


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


@torch.no_grad()
def _measure(checkpoint: Path, shards: Shards, cfg: TextRelianceConfig) -> dict[str, Any]:
    from miro_train.sample import load_bundle

    bundle = load_bundle(checkpoint, cfg.device, cfg.weights, cfg.allow_download)
    model, codec = bundle.model, bundle.codec
    total = min(cfg.samples, shards.total)  # the stream is endless: read each sample once
    batch_spec = batch_spec_for(model.spec, min(cfg.batch_size, total), seed=cfg.seed)
    batches = iter(make_loader(shards, batch_spec, workers=0))
    generator = torch.Generator().manual_seed(cfg.seed)
    sums = {t: [0.0, 0.0] for t in cfg.times}
    seen = 0
    while seen < total:
        batch = next_batch(batches)
        b = min(len(batch["captions"]), total - seen)
        x, cond = codec.to_model(batch)[:b], codec.inputs(batch)[:b]
        for t in cfg.times:
            noise = torch.randn(x.shape, generator=generator).to(x.device)
            times = torch.full((b,), t, device=x.device)
            for k, inputs in enumerate((cond, shift_captions(cond))):
                loss = flow_loss(model, x, inputs, t=times, noise=noise)
                sums[t][k] += float(loss) * b
        seen += b
    rows = [
        {"t": t, "loss": own / seen, "loss_shifted": other / seen, "rise": other / own - 1.0}
        for t, (own, other) in sums.items()
    ]
    result: dict[str, Any] = {
        "checkpoint": str(bundle.checkpoint),
        "step": bundle.step,
        "samples": seen,
        "times": rows,
        "mean_rise": sum(r["rise"] for r in rows) / len(rows),
    }
    log.info("%s: loss rises %.1f %% with shifted captions", bundle.checkpoint,
             100 * result["mean_rise"])  # fmt: skip
    return result
