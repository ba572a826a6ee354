"""`TrainConfig`: everything `miro train` takes, checked when built; no torch, so the CLI, the
experiments and run preparation import it without the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from miro_data.checks import (
    check_choice,
    check_device,
    check_finite,
    check_identifier,
    check_int,
    check_nonempty_text,
    check_optional_positive,
    check_positive,
    check_seed,
)
from miro_data.common import MiroError
from miro_data.hub import allow_download_field
from miro_data.options import NAMES, opt
from miro_train.spec import PREDICTIONS

Optimizer = Literal["adamw", "lamb"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # autocast on CUDA only
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `miro train` needs; stored, resolved, in every checkpoint."""

    # text, not Path: a bucket URL (s3://b/x) must keep its '//'
    shards: str = field(
        metadata=opt(help="Training-shard folder (manifest.json + tars), or a URL (s3://…).")
    )
    out: Path = field(
        metadata=opt("--out", "-o", help="Run folder: checkpoints, log.csv, loss.png.")
    )
    model: str = field(default="unet-tiny", metadata=opt(help="Registry name or a .json config."))
    rewards: tuple[str, ...] | None = field(default=None, metadata=opt(  # None: the manifest's
        parser=NAMES, help="Rewards to condition on, in order (default: all in the manifest)."
    ))  # fmt: skip
    # no reward conditioning: the control of every comparison
    baseline: bool = field(
        default=False, metadata=opt("--baseline", help="No reward conditioning (the control).")
    )
    text_encoder: str | None = field(default=None, metadata=opt(  # None: the model config's
        help="'word', or a Hugging Face id / folder (default: the model config's)."
    ))  # fmt: skip
    vae: str | None = field(default=None, metadata=opt(  # None: the model config's
        help="AutoencoderKL id / folder, or 'none' for pixel space (default: the model config's)."
    ))  # fmt: skip
    vae_subfolder: str | None = field(default=None, metadata=opt())
    allow_download: bool = allow_download_field("a text encoder or VAE")
    resolution: int | None = field(
        default=None, metadata=opt(help="Image side in pixels (default: the model config's).")
    )
    prediction: str | None = field(default=None, metadata=opt(  # None: the model config's
        help="What the backbone predicts: 'v' (velocity) or 'x' (clean image; default: the "
        "model config's)."
    ))  # fmt: skip
    steps: int = field(default=2000, metadata=opt())
    batch_size: int = field(default=64, metadata=opt(help="Global batch over all processes."))
    lr: float = field(default=1e-3, metadata=opt())
    optimizer: Optimizer = field(default="adamw", metadata=opt())
    weight_decay: float = field(default=0.01, metadata=opt())
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = field(default=100, metadata=opt())
    min_lr_ratio: float = 0.1
    grad_clip: float = field(default=2.0, metadata=opt())
    ema: float = field(default=0.999, metadata=opt(help="EMA decay."))
    self_cond_rate: float = 0.9  # backbones with latent self-conditioning (RIN) only
    # > 1 trains more at high noise (SD3's shift)
    time_shift: float = field(
        default=1.0, metadata=opt(help="Train more at high noise: t ← s·t/(1+(s−1)·t).")
    )
    time_shift_end: float | None = field(default=None, metadata=opt(  # None: constant
        help="Move the shift linearly to this value by the last step."
    ))  # fmt: skip
    time_shift_share: float = field(default=1.0, metadata=opt(
        help="Share of each batch whose times are shifted; the rest stay unshifted."
    ))  # fmt: skip
    caption_dropout: float = field(default=0.0, metadata=opt(
        help="Share of samples trained without their caption (what --caption-guidance needs)."
    ))  # fmt: skip
    precision: Precision = field(default="auto", metadata=opt(help="CUDA autocast dtype."))
    compile: bool = field(default=False, metadata=opt("--compile", help="torch.compile the model."))
    device: str = field(default="auto", metadata=opt())
    seed: int = field(default=0, metadata=opt())
    workers: int | None = field(default=None, metadata=opt(  # None: 1 on CPU, 6 on GPU
        help="Data-loading processes per rank."
    ))  # fmt: skip
    shuffle_buffer: int = 1000
    log_every: int = field(default=50, metadata=opt())
    ckpt_every: int = field(default=500, metadata=opt())
    keep: int | None = field(default=None, metadata=opt(  # None keeps all
        help="Keep only the newest N checkpoints."
    ))  # fmt: skip
    resume: bool = field(default=False, metadata=opt(
        "--resume", help="Continue the run in --out from its latest checkpoint."
    ))  # fmt: skip
    tensorboard: bool = field(default=False, metadata=opt("--tensorboard"))
    vocab_samples: int = 100_000

    def __post_init__(self) -> None:
        """Every option checked here, before anything is read or written."""
        if isinstance(self.shards, Path):
            object.__setattr__(self, "shards", str(self.shards))
        for name in ("steps", "batch_size", "log_every", "ckpt_every", "shuffle_buffer",
                     "vocab_samples"):  # fmt: skip
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        for name in ("resolution", "keep"):
            check_optional_positive(f"--{name}", getattr(self, name))
        check_int("--warmup", self.warmup, 0)
        check_seed("--seed", self.seed)
        if self.workers is not None:
            check_int("--workers", self.workers, 0)
        check_finite("--lr", self.lr, 0, open_low=True)
        check_finite("--weight-decay", self.weight_decay, 0)
        check_finite("--grad-clip", self.grad_clip, 0, open_low=True)
        check_finite("--ema", self.ema, 0, 1, open_high=True)
        check_finite("--time-shift", self.time_shift, 0, open_low=True)
        if self.time_shift_end is not None:
            check_finite("--time-shift-end", self.time_shift_end, 0, open_low=True)
        check_finite("--time-shift-share", self.time_shift_share, 0, 1)
        check_finite("min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_finite("self_cond_rate", self.self_cond_rate, 0, 1)
        check_finite("--caption-dropout", self.caption_dropout, 0, 1, open_high=True)
        if len(self.betas) != 2:
            raise MiroError(f"betas must be two numbers, not {self.betas!r}")
        for beta in self.betas:
            check_finite("betas", beta, 0, 1, open_high=True)
        check_choice("--optimizer", self.optimizer, OPTIMIZERS)
        if self.prediction is not None:
            check_choice("--prediction", self.prediction, PREDICTIONS)
        check_choice("--precision", self.precision, PRECISIONS)
        check_device("--device", self.device)
        check_nonempty_text("--model", self.model)
        for name in ("text_encoder", "vae", "vae_subfolder"):
            if getattr(self, name) is not None:
                check_nonempty_text(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.rewards is not None:
            if not self.rewards:
                raise MiroError("--rewards names no reward")
            for reward in self.rewards:
                check_identifier(reward, "reward name")
