"""`miro train` and `miro sample`: parse options into the stage's config and call it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from miro_data.common import MiroError


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to the top-level app."""
    app.command("train")(train_cmd)
    app.command("sample")(sample_cmd)


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise MiroError("--rewards names no reward")
    return names


def train_cmd(
    shards: Path = typer.Argument(..., help="Training-shard folder (manifest.json + tars)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder: checkpoints, log.csv, loss.png."
    ),
    model: str = typer.Option("unet-tiny", "--model", help="Registry name or a .json config."),
    rewards: str = typer.Option(
        None, "--rewards", help="Rewards to condition on, in order (default: all in the manifest)."
    ),
    baseline: bool = typer.Option(
        False, "--baseline", help="No reward conditioning (the control)."
    ),
    text_encoder: str = typer.Option(
        None,
        "--text-encoder",
        help="'word', or a Hugging Face id / folder (default: the model config's).",
    ),
    vae: str = typer.Option(
        None,
        "--vae",
        help="AutoencoderKL id / folder, or 'none' for pixel space (default: the model config's).",
    ),
    vae_subfolder: str = typer.Option(None, "--vae-subfolder"),
    resolution: int = typer.Option(
        None, "--resolution", help="Image side in pixels (default: the model config's)."
    ),
    steps: int = typer.Option(2000, "--steps"),
    batch_size: int = typer.Option(64, "--batch-size", help="Global batch over all processes."),
    lr: float = typer.Option(1e-3, "--lr"),
    optimizer: Literal["adamw", "lamb"] = typer.Option("adamw", "--optimizer"),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    warmup: int = typer.Option(100, "--warmup"),
    grad_clip: float = typer.Option(2.0, "--grad-clip"),
    ema: float = typer.Option(0.999, "--ema", help="EMA decay."),
    time_shift: float = typer.Option(
        1.0, "--time-shift", help="Train more at high noise: t ← s·t/(1+(s−1)·t)."
    ),
    time_shift_end: float = typer.Option(
        None, "--time-shift-end", help="Move the shift linearly to this value by the last step."
    ),
    precision: Literal["auto", "fp32", "bf16", "fp16"] = typer.Option(
        "auto", "--precision", help="CUDA autocast dtype."
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(None, "--workers", help="Data-loading processes per rank."),
    log_every: int = typer.Option(50, "--log-every"),
    ckpt_every: int = typer.Option(500, "--ckpt-every"),
    keep: int = typer.Option(None, "--keep", help="Keep only the newest N checkpoints."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its latest checkpoint."
    ),
    tensorboard: bool = typer.Option(False, "--tensorboard"),
) -> None:
    """Train a MIRO model (or the --baseline) with flow matching.

    Multi-GPU or multi-node: torchrun --nproc-per-node N .venv/bin/miro train …
    """
    from miro_train.train import TrainConfig, train

    cfg = TrainConfig(
        shards=shards,
        out=out,
        model=model,
        rewards=_names(rewards),
        baseline=baseline,
        text_encoder=text_encoder,
        vae=vae,
        vae_subfolder=vae_subfolder,
        resolution=resolution,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        warmup=warmup,
        grad_clip=grad_clip,
        ema=ema,
        time_shift=time_shift,
        time_shift_end=time_shift_end,
        precision=precision,
        compile=compile,
        device=device,
        seed=seed,
        workers=workers,
        log_every=log_every,
        ckpt_every=ckpt_every,
        keep=keep,
        resume=resume,
        tensorboard=tensorboard,
    )
    typer.echo(str(train(cfg)))


def _prompts(prompt: list[str] | None, prompts_file: Path | None) -> tuple[str, ...]:
    items = list(prompt or [])
    if prompts_file is None:
        return tuple(items)
    if not prompts_file.is_file():
        raise MiroError(f"prompts file not found: {prompts_file}")
    try:
        lines = prompts_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MiroError(f"prompts file {prompts_file} is not UTF-8 text") from None
    for n, line in enumerate(map(str.strip, lines), start=1):
        if line.startswith("{"):
            try:
                line = str(json.loads(line).get("prompt", ""))
            except (json.JSONDecodeError, AttributeError):
                raise MiroError(f"{prompts_file}:{n}: not a JSON object with 'prompt'") from None
        if line:
            items.append(line)
    return tuple(items)


def sample_cmd(
    checkpoint: Path = typer.Argument(
        ..., help="A checkpoint folder, or a run folder (its latest)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for images/, grid.png, manifest.jsonl."
    ),
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="A prompt (repeatable)."),
    prompts_file: Path = typer.Option(
        None, "--prompts", help="Prompts: one per line, or JSONL with 'prompt'."
    ),
    n: int = typer.Option(1, "--n", help="Images per prompt."),
    guidance: float = typer.Option(7.0, "--guidance", "-w", help="CFG scale ω."),
    steps: int = typer.Option(50, "--steps", help="Euler steps."),
    seed: int = typer.Option(0, "--seed"),
    preset: str = typer.Option("high", "--preset", help="high, isolate:REWARD or pair:A,B@t."),
    target: str = typer.Option(
        "", "--target", help="s⁺ overrides, e.g. aesthetic=0.625,pickscore=1 (others 1)."
    ),
    negative: str = typer.Option(
        "", "--negative", help="s⁻ overrides (others 0, or the preset's)."
    ),
    best_of: int = typer.Option(1, "--best-of", help="Draw N per image and keep the best."),
    select_by: str = typer.Option(
        None, "--select-by", help="Reward (registry name or module:Class) for --best-of."
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    weights: Literal["ema", "model"] = typer.Option("ema", "--weights"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace samples already in --out."),
) -> None:
    """Sample with multi-reward classifier-free guidance; writes PNGs, a grid and a JSONL manifest."""
    from miro_train.sample import SampleConfig, sample
    from miro_train.sampler import SamplerSettings

    sampler = SamplerSettings(
        steps=steps, guidance=guidance, preset=preset, target=target, negative=negative, seed=seed,
        batch_size=batch_size, weights=weights, device=device,
    )  # fmt: skip
    cfg = SampleConfig(checkpoint=checkpoint, out=out, prompts=_prompts(prompt, prompts_file), n=n,
                       sampler=sampler, best_of=best_of, select_by=select_by, overwrite=overwrite)  # fmt: skip
    typer.echo(str(sample(cfg)))
