"""Stage `miro train`: flow-matching training of a MIRO (or baseline) model on training shards.

Read top to bottom: `prepare_run` (the complete model spec, start or resume), build the run's
state (model, EMA, optimizer, loss generator: `checkpoint.RunState`), `restore_state` when
resuming, then loop: batch → loss → step → EMA → log row → `save_state`. `train` runs
in-process too; a callback sees every step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from miro_data.common import MiroError, keep_freed_memory, progress_bar
from miro_data.processes import fault_point, output_lock
from miro_train import dist
from miro_train.checkpoint import RunState, find_checkpoint, restore_state, save_state
from miro_train.codec import Codec
from miro_train.conditioning import ConditioningInput
from miro_train.config import TrainConfig  # its home; imported from here too
from miro_train.data import make_loader, next_batch
from miro_train.flow import flow_loss, shift_at
from miro_train.models import MiroModel, build_model, count_parameters
from miro_train.optim import Ema, lr_at, make_optimizer
from miro_train.prepare import RunSetup, amp_context, prepare_run, warn_about
from miro_train.runlog import RunLog
from miro_train.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class StepInfo:
    """What a callback sees after each optimizer step."""

    step: int
    loss: float
    lr: float
    model: MiroModel
    ema: MiroModel
    checkpoint: Path | None  # set on the steps that wrote one


def train_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    cond: ConditioningInput,
    *,
    generator: torch.Generator | None = None,
    self_cond_rate: float = 0.0,
    grad_clip: float = 2.0,
    amp: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    time_shift: float = 1.0,
    time_shift_share: float = 1.0,
) -> torch.Tensor:
    """One optimizer step on one batch; `net` may be the DDP wrapper of `model`."""
    with amp or contextlib.nullcontext():
        loss = flow_loss(net, x, cond, generator=generator, self_cond_rate=self_cond_rate,
                         time_shift=time_shift, time_shift_share=time_shift_share)  # fmt: skip
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def train(cfg: TrainConfig, callback: Callable[[StepInfo], None] | None = None) -> Path:
    """Train, or resume, the run in cfg.out; returns its last checkpoint's folder."""
    keep_freed_memory()  # CPU steps re-allocate every activation (bench_malloc.py: 1.14×)
    info = dist.setup(cfg.device)
    try:
        # One process owns a run folder (rank 0 writes it): a second run into it is refused.
        with output_lock(cfg.out) if info.main else contextlib.nullcontext():
            return _train(cfg, info, callback)
    except RuntimeError as err:  # torch.cuda.OutOfMemoryError is one; CPU allocators say so
        text = str(err)
        oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text
        if not (oom or "can't allocate memory" in text):
            raise
        raise MiroError(
            f"out of memory with {cfg.batch_size // info.world} images per process on "
            f"{info.device}: lower --batch-size (the checkpoints written so far are intact)"
        ) from None
    finally:
        dist.cleanup()


def _train(cfg: TrainConfig, info: dist.DistInfo, callback: Callable | None) -> Path:
    run = prepare_run(cfg, info)  # validated, spec complete; nothing written before this
    cfg, spec, device = run.cfg, run.spec, info.device
    amp, scaler = amp_context(cfg.precision, device)
    state = _build(cfg, spec, info, scaler)
    if info.main:
        warn_about(run)
    if run.resume is not None:
        restore_state(run.resume, state, info)
        log.info("resuming %s at step %d", cfg.out, state.step)
    codec = Codec(spec, device, need_vae=not spec.image.precomputed,
                  allow_download=cfg.allow_download)  # fmt: skip
    model = state.model
    assert isinstance(model, MiroModel)  # (RunState holds any module)
    if info.main:
        log.info("%s: %s parameters on %s", spec.name, f"{count_parameters(model):,}", device)
    net: Any = DistributedDataParallel(model) if info.world > 1 else model
    net = torch.compile(net) if cfg.compile else net  # a module or its compiled form
    batches = iter(_loader(run, state.step, info, cfg.workers))
    resumed_at = state.step if run.resume else None
    runlog = RunLog(cfg.out, resumed_at, cfg.tensorboard) if info.main else None
    self_cond = cfg.self_cond_rate if model.self_conditioning else 0.0
    timer = _Timer(state.step)
    seconds_before = state.seconds  # a resumed run's time counts on from its checkpoint's
    last_ckpt = None

    model.train()
    with progress_bar("step", disable=True if not info.main else None) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=state.step)
        while state.step < cfg.steps:
            batch = next_batch(batches)
            lr = lr_at(state.step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            shift = shift_at(state.step, cfg.steps, cfg.time_shift, cfg.time_shift_end)
            cond = _drop_captions(codec.inputs(batch), cfg.caption_dropout, state.generator)
            loss = train_step(net, model, state.optimizer, codec.to_model(batch),
                              cond, generator=state.generator,
                              self_cond_rate=self_cond, grad_clip=cfg.grad_clip, amp=amp,
                              scaler=state.scaler, time_shift=shift,
                              time_shift_share=cfg.time_shift_share)  # fmt: skip
            state.ema.update(model, state.step)
            state.step += 1
            state.window += loss
            bar.advance(task)
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                _log_row(state, lr, cfg, info, runlog, timer)
            ckpt = None
            if state.step % cfg.ckpt_every == 0 or state.step == cfg.steps:
                state.seconds = seconds_before + time.perf_counter() - timer.start
                ckpt = save_state(cfg.out, state, spec=spec, config=_jsonable(cfg), info=info,
                                  keep=cfg.keep)  # fmt: skip
                last_ckpt = ckpt or last_ckpt
            if callback is not None:
                ema = cast(MiroModel, state.ema.model)
                callback(StepInfo(state.step, float(loss), lr, model, ema, ckpt))
            fault_point("train.step")

    if runlog is not None:
        runlog.plot(f"{spec.name} ({'MIRO' if spec.rewards else 'baseline'})")
        runlog.close()
    return last_ckpt or find_checkpoint(cfg.out)


def _build(
    cfg: TrainConfig, spec: ModelSpec, info: dist.DistInfo, scaler: torch.amp.GradScaler | None
) -> RunState:
    """The model, its EMA and optimizer and the loss's random stream, as at step 0."""
    device = info.device
    torch.manual_seed(cfg.seed)
    model = build_model(spec).to(device)
    ema = Ema(model, cfg.ema)
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.betas)
    generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + info.rank)
    window = torch.zeros((), device=device)
    return RunState(model, ema, optimizer, scaler, generator, window)


def _drop_captions(
    cond: ConditioningInput, rate: float, generator: torch.Generator
) -> ConditioningInput:
    """Caption dropout: each sample loses its caption with probability `rate`, so the model
    also learns v(x, t | rewards, no caption), the other side of caption guidance."""
    if rate == 0:  # draws nothing: runs without dropout keep their random stream
        return cond
    b = cond.text.shape[0]
    drop = torch.rand(b, generator=generator, device=generator.device) < rate
    return cond.without_caption(drop.to(cond.text.device))


def _loader(run: RunSetup, start: int, info: dist.DistInfo, workers: int | None) -> DataLoader:
    """This rank's batches from batch `start` on (what an uninterrupted run reads next)."""
    device = info.device
    if workers is None:
        workers = 6 if device.type == "cuda" else 1
    return make_loader(run.shards, run.batch_spec, start_batch=start, rank=info.rank,
                       world=info.world, workers=workers,
                       pin_memory=device.type == "cuda")  # fmt: skip


class _Timer:
    """Wall time since the start and since the last log row; steps/s counts this process's."""

    def __init__(self, step: int) -> None:
        self.start = self.last = time.perf_counter()
        self.step = step

    def lap(self, step: int) -> tuple[float, float]:
        """(steps/s since the last lap, seconds since the start)."""
        now = time.perf_counter()
        rate = (step - self.step) / (now - self.last)
        self.last, self.step = now, step
        return rate, now - self.start


def _log_row(
    state: RunState,
    lr: float,
    cfg: TrainConfig,
    info: dist.DistInfo,
    runlog: RunLog | None,
    timer: _Timer,
) -> None:
    """The mean loss over every rank since the last row; rank 0 writes it. Resets the window."""
    mean_loss = dist.mean(state.window / (state.step - state.step_log), info)
    if not math.isfinite(mean_loss):
        raise MiroError(f"the loss is {mean_loss} at step {state.step}: lower --lr")
    rate, elapsed = timer.lap(state.step)
    if runlog is not None:
        log.info("step %d/%d | loss %.4f | %.2f steps/s | lr %.2e", state.step, cfg.steps,
                 mean_loss, rate, lr)  # fmt: skip
        runlog.write(state.step, mean_loss, lr, rate, elapsed)
    state.window.zero_()
    state.step_log = state.step


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
