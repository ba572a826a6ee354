"""Before the loop: check the inputs, decide whether the run starts or resumes (and from which
checkpoint, with the run's stored settings), resolve the model spec — complete, latent
statistics included — from the shards or the checkpoint, and pick the precision. Kept out of
train.py so the loop reads top to bottom; restoring the state is checkpoint.restore_state's."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from miro_data.checks import check_identifier
from miro_data.common import MiroError
from miro_train.checkpoint import list_checkpoints, read_meta, read_spec, recover_checkpoints
from miro_train.codec import Codec, resolve_spec
from miro_train.data import (
    BatchSpec,
    Shards,
    check_rewards,
    iter_captions,
    levels_seen,
    make_loader,
    open_shards,
    peek,
)
from miro_train.dist import DistInfo, barrier
from miro_train.spec import LatentStats, ModelSpec
from miro_train.text import WordVocab

if TYPE_CHECKING:  # a type only: prepare.py does not import the loop's module
    from miro_train.config import TrainConfig

log = logging.getLogger(__name__)

# What may change when a run is resumed; everything else comes from the run's checkpoint.
RESUMABLE = (
    "shards",
    "out",
    "steps",
    "log_every",
    "ckpt_every",
    "keep",
    "workers",
    "device",
    "compile",
    "tensorboard",
    "resume",
    "allow_download",
)


@dataclass(frozen=True)
class RunSetup:
    """What the loop needs: the run's settings, its complete spec, the data, and the
    checkpoint to resume from (None: the run starts at step 0)."""

    cfg: TrainConfig
    spec: ModelSpec
    shards: Shards
    batch_spec: BatchSpec
    resume: Path | None


def _check_numbers(cfg: TrainConfig, info: DistInfo) -> None:
    """What depends on the launch (TrainConfig checks every option on its own)."""
    if cfg.batch_size % info.world:
        raise MiroError(f"--batch-size {cfg.batch_size} does not split over {info.world} processes")


def _stored_config(cfg: TrainConfig, stored: dict[str, Any]) -> TrainConfig:
    """The resumed run's own settings, with only the RESUMABLE fields taken from `cfg`."""
    kept: dict[str, Any] = {}
    for f in fields(cfg):
        if f.name in RESUMABLE or f.name not in stored:
            continue
        value = stored[f.name]
        kept[f.name] = tuple(value) if isinstance(value, list) else value
    return replace(cfg, **kept)


def prepare_run(cfg: TrainConfig, info: DistInfo) -> RunSetup:
    """Validate, then resolve what the run trains; nothing is written before this passes."""
    shards = open_shards(cfg.shards)
    if info.main:  # the caller holds the run's lock: what a killed run left is stale
        recover_checkpoints(cfg.out)
    barrier(info)
    existing = list_checkpoints(cfg.out)
    resume = None
    if cfg.resume and not existing:  # killed before its first checkpoint: nothing to go on from
        log.warning("--resume: no checkpoint in %s yet, starting the run from step 0", cfg.out)
    if cfg.resume and existing:
        resume = existing[-1]
        cfg = _stored_config(cfg, read_meta(resume)["config"])
        spec = read_spec(resume)
        check_rewards(shards, list(spec.rewards))
        if spec.edges_version != shards.manifest.edges_version:
            raise MiroError(
                f"the run was trained on bin edges version {spec.edges_version}, "
                f"the shards in {shards.root} have {shards.manifest.edges_version}"
            )
    else:
        if existing:  # (a log but no checkpoint: a run killed early, which starts over)
            raise MiroError(
                f"{cfg.out} already holds a run: pass --resume, or choose another --out"
            )
        rewards = [] if cfg.baseline else list(cfg.rewards or shards.rewards)
        for name in rewards:
            check_identifier(name, "reward name")
        check_rewards(shards, rewards)
        if not cfg.baseline and not rewards:
            raise MiroError(f"the shards in {shards.root} carry no rewards: train with --baseline")
        _check_numbers(cfg, info)  # before the caption scan, which may take a while
        spec = resolve_spec(
            cfg.model,
            rewards=rewards,
            shards=shards,
            captions=iter_captions(shards, cfg.vocab_samples),
            text_encoder=cfg.text_encoder,
            vae=cfg.vae,
            vae_subfolder=cfg.vae_subfolder,
            resolution=cfg.resolution,
            prediction=cfg.prediction,
            allow_download=cfg.allow_download,
        )
    _check_numbers(cfg, info)
    batch_spec = batch_spec_for(spec, cfg.batch_size // info.world, cfg.seed, cfg.shuffle_buffer)
    peek(shards, batch_spec)  # a bad first sample fails here, in this process, in one line
    cfg.out.mkdir(parents=True, exist_ok=True)
    if resume is None and not spec.complete:  # new latent run: statistics before the build
        stats = latent_stats(shards, spec, batch_spec, info.device,
                             allow_download=cfg.allow_download)  # fmt: skip
        spec = replace(spec, image=replace(spec.image, stats=stats))
    return RunSetup(cfg, spec, shards, batch_spec, resume)


def warn_about(run: RunSetup) -> None:
    """Settings that run but train badly; called once the run's model is built, so that an
    error in the model config is the only line the user sees."""
    cfg = run.cfg
    if run.resume is None:
        _warn_constant(run.shards, list(run.spec.rewards))
    if cfg.warmup >= cfg.steps:
        log.warning(
            "--warmup %d ≥ --steps %d: the learning rate never reaches --lr", cfg.warmup, cfg.steps
        )


def _warn_constant(shards: Shards, rewards: list[str], limit: int = 2000) -> None:
    """A reward whose samples all sit in one level conditions on nothing (a `--where` on the
    reward itself does that): say so, since training still runs."""
    for reward, levels in levels_seen(shards, rewards, limit).items():
        if len(levels) <= 1:
            where = f" (--where {shards.manifest.where!r})" if shards.manifest.where else ""
            log.warning(
                "%s is constant in %s%s: every sample is at level %s, so conditioning on it "
                "teaches the model nothing; re-shard without that filter, or leave it out of "
                "--rewards",
                reward, shards.root, where, next(iter(levels), "undefined"),
            )  # fmt: skip


def batch_spec_for(
    spec: ModelSpec, batch_size: int, seed: int = 0, shuffle_buffer: int = 1000
) -> BatchSpec:
    """What a model with this resolved spec reads from each training sample."""
    text, image = spec.text, spec.image
    return BatchSpec(
        rewards=spec.rewards,
        batch_size=batch_size,
        resolution=image.resolution,
        latents=image.space == "latent" and image.precomputed,
        vocab=WordVocab(text.vocab, text.max_len) if text.kind == "word" else None,
        text_emb=text.kind == "hf" and text.precomputed,
        text_len=text.max_len,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
    )


def amp_context(precision: str, device: torch.device):
    """Autocast (bf16 or fp16, CUDA only) and the grad scaler fp16 needs."""
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise MiroError(f"--precision {precision} needs a CUDA device; use fp32 on {device}")
        return contextlib.nullcontext(), None
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return torch.autocast("cuda", dtype=dtype), scaler


@torch.no_grad()
def latent_stats(
    shards: Shards,
    spec: ModelSpec,
    batch_spec: BatchSpec,
    device: torch.device,
    samples: int = 1024,
    allow_download: bool = False,
) -> LatentStats:
    """Per-channel mean and std of the unscaled VAE latents over the first samples."""
    codec = Codec(spec, device, need_vae=not spec.image.precomputed,
                  allow_download=allow_download)  # fmt: skip
    loader = iter(make_loader(shards, batch_spec, workers=0))
    chunks, seen = [], 0
    while seen < min(samples, shards.total):
        z = codec.raw_latents(next(loader))
        chunks.append(z.transpose(0, 1).flatten(1))  # (C, B·h·w)
        seen += z.shape[0]
    flat = torch.cat(chunks, dim=1)
    mean, std = flat.mean(1), flat.std(1).clamp_min(1e-6)
    log.info("latent mean %s, std %s", mean.tolist(), std.tolist())
    return LatentStats(tuple(mean.tolist()), tuple(std.tolist()))
