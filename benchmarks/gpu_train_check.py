"""GPU check, part 2: `miro train --model miro-360m` steps/s and model FLOPs utilisation.

Training shards of precomputed 4×32×32 latents (256 px) and FLAN-T5-XL-width caption
embeddings, written by the tests' `ShardWriter` fixture; an AutoencoderKL of SDXL-VAE's
configuration at random init gives the latent space's channels and factor. `train()` (what
`miro train` calls) runs in bf16; steps/s is the median step after a warm-up, MFU the analytic
FLOPs per step × steps/s over the GPU's dense bf16 peak (see `gpu_check.PEAK_BF16`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from gpu_check import ROOT, peak_bytes, peak_flops, reset_peak, sync

GIB = 2**30


def write_vae(folder: Path, dry_run: bool) -> Path:
    """An AutoencoderKL of SDXL-VAE's configuration (tiny widths for --dry-run): only its
    latent channels and factor are read, the latents being precomputed."""
    from diffusers import AutoencoderKL

    widths, layers, groups = ((8, 8, 8, 8), 1, 8) if dry_run else ((128, 256, 512, 512), 2, 32)
    AutoencoderKL(
        block_out_channels=widths, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=layers, latent_channels=4,
        norm_num_groups=groups, sample_size=1024, scaling_factor=0.13025,
    ).save_pretrained(folder)  # fmt: skip
    return folder


def dry_run_model(path: Path) -> str:
    """A tiny latent-space RIN with a frozen-encoder text input, the shape of miro-360m."""
    config = {
        "backbone": "rin",
        "backbone_args": {"patch": 2, "data_dim": 32, "latents": 8, "latent_dim": 32,
                          "blocks": 2, "layers": 1, "rw_heads": 2, "heads": 2,
                          "self_conditioning": True},
        "conditioning": {"dim": 32, "fourier_dim": 16, "hidden": 32, "registers": 2,
                         "layers": 2, "heads": 2, "pool": False},
        "text": {"kind": "hf", "name": "miro-dry-run/text-encoder", "dim": 24, "max_len": 16},
        "image": {"space": "latent", "resolution": 64},
    }  # fmt: skip
    path.write_text(json.dumps(config))
    return str(path)


def step_flops(spec, batch: int) -> tuple[float, int]:
    """Analytic FLOPs of one training step (2 per multiply-add), from shapes on the meta
    device, and the model's parameter count."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from miro_train.conditioning import ConditioningInput
    from miro_train.models import build_model, count_parameters

    text, image = spec.text, spec.image
    with torch.device("meta"):
        model = build_model(spec)
        emb = torch.randn(1, text.max_len, text.dim)
        inputs = ConditioningInput(
            torch.rand(1, len(spec.rewards)), emb, torch.ones(1, text.max_len, dtype=torch.bool)
        )
        x, t = torch.randn(1, image.channels, image.size, image.size), torch.rand(1)
        with FlopCounterMode(display=False) as cond_count:
            cond = model.condition(inputs)
        with FlopCounterMode(display=False) as first_count:
            _, state = model.velocity(x, t, cond)
        with FlopCounterMode(display=False) as step_count:
            model.velocity(x, t, cond, state if model.self_conditioning else None)
    per_sample = 3 * (cond_count.get_total_flops() + step_count.get_total_flops())
    if model.self_conditioning:  # the stop-gradient first pass: forward only
        per_sample += first_count.get_total_flops()
    return float(per_sample * batch), count_parameters(model)


def train_check(work: Path, args: argparse.Namespace, device: str, device_name: str) -> dict:
    """`miro train` steps/s and MFU on precomputed latents and caption embeddings."""
    sys.path.insert(0, str(ROOT / "tests"))
    from train_fixtures import write_shards

    from miro_train.checkpoint import find_checkpoint, read_spec
    from miro_train.models import model_config
    from miro_train.train import TrainConfig, train

    model = dry_run_model(work / "model.json") if args.dry_run else "miro-360m"
    config = model_config(model)
    vae = write_vae(work / "vae", args.dry_run)
    side = config["image"]["resolution"] // 8
    text = config["text"]
    batch = args.train_batch
    shards = write_shards(
        work / "train_shards", n=max(2 * batch, 64), per_shard=max(batch, 32),
        rewards=("sharpness", "noise", "contrast", "colorfulness", "edge_sharpness", "shapes_alignment"),
        txt_emb_dim=text["dim"], latent_shape=(4, side, side),
        hooks={"text": text["name"], "vae": str(vae)},
    )  # fmt: skip
    stamps: list[float] = []

    def stamp(_info) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    warmup = 2 if args.dry_run else 5
    cfg = TrainConfig(shards=shards, out=work / "run", model=model, vae=str(vae),
                      steps=warmup + args.train_steps + 1, batch_size=batch,
                      precision="bf16" if device.startswith("cuda") else "fp32", device=device,
                      log_every=10_000, ckpt_every=10_000, workers=0 if args.dry_run else None)  # fmt: skip
    base = reset_peak(device)
    train(cfg, stamp)
    peak = peak_bytes(device)
    intervals = [b - a for a, b in zip(stamps[warmup - 1 : -2], stamps[warmup:-1], strict=True)]
    steps_s = 1.0 / statistics.median(intervals)
    spec = read_spec(find_checkpoint(work / "run"))
    flops, params = step_flops(spec, batch)
    peak_rate = peak_flops(device_name) if device.startswith("cuda") else None
    return {
        "model": model if not args.dry_run else "dry-run RIN (miro-360m's shape, tiny widths)",
        "params_m": params / 1e6, "batch_size": batch, "resolution": config["image"]["resolution"],
        "latent_shape": [4, side, side], "precision": cfg.precision, "steps_s": steps_s,
        "img_s": steps_s * batch, "flops_per_step": flops, "achieved_tflops": flops * steps_s / 1e12,
        "peak_tflops": None if peak_rate is None else peak_rate / 1e12,
        "mfu": None if peak_rate is None else flops * steps_s / peak_rate,
        "peak_known": peak_rate is not None,
        "peak_gib": None if peak is None else (peak - base) / GIB,
    }  # fmt: skip
