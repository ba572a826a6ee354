"""Stage `miro train`: flow-matching training of a MIRO (or baseline) model on training shards.

Read top to bottom: resolve the model from the shards, build it, its optimizer and EMA,
restore the latest checkpoint when resuming, then loop: batch → loss → step → EMA → log →
checkpoint. `train` runs in-process too; a callback sees every step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from miro_data.common import (
    MiroError,
    fault_point,
    keep_freed_memory,
    output_lock,
    progress_bar,
    user_os_error,
)
from miro_train import dist
from miro_train.checkpoint import (
    find_checkpoint,
    load_optimizer,
    load_weights,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir,
)
from miro_train.codec import Codec
from miro_train.config import TrainConfig  # its home; imported from here too
from miro_train.data import make_loader, next_batch
from miro_train.flow import flow_loss, shift_at
from miro_train.models import MiroModel, build_model, count_parameters
from miro_train.optim import Ema, lr_at, make_optimizer
from miro_train.prepare import amp_context, check_world, latent_stats, prepare_run
from miro_train.runlog import RunLog

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
    cond: dict[str, torch.Tensor | None],
    *,
    generator: torch.Generator | None = None,
    self_cond_rate: float = 0.0,
    grad_clip: float = 2.0,
    amp: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    time_shift: float = 1.0,
) -> torch.Tensor:
    """One optimizer step on one batch; `net` may be the DDP wrapper of `model`."""
    with amp or contextlib.nullcontext():
        loss = flow_loss(
            net,
            x,
            generator=generator,
            self_cond_rate=self_cond_rate,
            time_shift=time_shift,
            t=t,
            noise=noise,
            **cond,
        )
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
    run = prepare_run(cfg, info)  # validates everything before anything is written
    cfg, spec, device = run.cfg, run.spec, info.device
    torch.manual_seed(cfg.seed)
    model = build_model(spec).to(device)
    ema = Ema(model, cfg.ema)
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.betas)
    amp, scaler = amp_context(cfg.precision, device)
    generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + info.rank)
    # The loss summed since the last log row, and that row's step: saved in checkpoints, so a
    # resumed run writes the rows an uninterrupted one would, whatever the two intervals.
    window = torch.zeros((), device=device)
    step = step_log = 0
    if run.resume is not None:
        step, step_log = _restore(
            run.resume, info, model, ema, optimizer, scaler, generator, window
        )
        log.info("resuming %s at step %d", cfg.out, step)
    elif spec["image"]["space"] == "latent" and spec["image"].get("mean") is None:
        spec["image"] |= latent_stats(run.shards, spec, run.batch_spec, device)
    codec = Codec(spec, device, need_vae=not spec["image"].get("precomputed"))
    if info.main:
        log.info("%s: %s parameters on %s", spec["name"], f"{count_parameters(model):,}", device)
    net = DistributedDataParallel(model) if info.world > 1 else model
    net = torch.compile(net) if cfg.compile else net
    workers = cfg.workers if cfg.workers is not None else (6 if device.type == "cuda" else 1)
    loader = make_loader(
        run.shards,
        run.batch_spec,
        start_batch=step,
        rank=info.rank,
        world=info.world,
        workers=workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    runlog = RunLog(cfg.out, step if run.resume else None, cfg.tensorboard) if info.main else None
    meta = {"config": _jsonable(cfg), "model": spec}
    self_cond = cfg.self_cond_rate if model.self_conditioning else 0.0
    last_ckpt = None
    t_start = t_log = time.perf_counter()
    step_rate = step  # steps/s counts this process's steps only

    model.train()
    with progress_bar("step", disable=True if not info.main else None) as bar:
        task = bar.add_task("train", total=cfg.steps, completed=step)
        while step < cfg.steps:
            batch = next_batch(batches)
            lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = codec.to_model(batch)
            text, text_mask = codec.text(batch["captions"], batch)
            rewards = batch["rewards"].to(device, non_blocking=True)
            cond = {"rewards": rewards, "text": text, "text_mask": text_mask}
            loss = train_step(
                net,
                model,
                optimizer,
                x,
                cond,
                generator=generator,
                self_cond_rate=self_cond,
                grad_clip=cfg.grad_clip,
                amp=amp,
                scaler=scaler,
                time_shift=shift_at(step, cfg.steps, cfg.time_shift, cfg.time_shift_end),
            )
            ema.update(model, step)
            step += 1
            window += loss
            bar.advance(task)

            if step % cfg.log_every == 0 or step == cfg.steps:
                mean_loss = dist.mean(window / (step - step_log), info)
                if not math.isfinite(mean_loss):
                    raise MiroError(f"the loss is {mean_loss} at step {step}: lower --lr")
                now = time.perf_counter()
                rate = (step - step_rate) / (now - t_log)
                if runlog is not None:
                    log.info(
                        "step %d/%d | loss %.4f | %.2f steps/s | lr %.2e",
                        step,
                        cfg.steps,
                        mean_loss,
                        rate,
                        lr,
                    )
                    runlog.write(step, mean_loss, lr, rate, now - t_start)
                window.zero_()
                t_log, step_log, step_rate = now, step, step
            ckpt = None
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                ranks = dist.gather((rng_state(generator), float(window)), info)
                if info.main:
                    ckpt = last_ckpt = _save(
                        cfg,
                        step,
                        model,
                        ema,
                        optimizer,
                        scaler,
                        {
                            **meta,
                            "rng": [rng for rng, _ in ranks],
                            "log_window": {"since": step_log, "sums": [w for _, w in ranks]},
                        },
                    )
                dist.barrier(info)
            if callback is not None:
                callback(StepInfo(step, float(loss), lr, model, ema.model, ckpt))
            fault_point("train.step")

    if runlog is not None:
        kind = "MIRO" if spec["rewards"] else "baseline"
        runlog.plot(cfg.out / "loss.png", f"{spec['name']} ({kind})")
        runlog.close()
    return last_ckpt or find_checkpoint(cfg.out)


def _save(
    cfg: TrainConfig,
    step: int,
    model: MiroModel,
    ema: Ema,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    meta: dict[str, Any],
) -> Path:
    """save_checkpoint, with a full disk or an unwritable folder as one line naming it."""
    try:
        return save_checkpoint(cfg.out, step, model=model, ema=ema.model, optimizer=optimizer,
                               scaler=scaler, meta=meta, keep=cfg.keep)  # fmt: skip
    except Exception as err:
        mapped = user_os_error(err, step_dir(cfg.out, step), writing=True)
        if mapped is None:
            raise
        raise MiroError(f"{mapped} (the checkpoints written before are intact)") from None


def _restore(
    ckpt: Path, info: dist.DistInfo, model: nn.Module, ema: Ema, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, generator: torch.Generator, window: torch.Tensor,
) -> tuple[int, int]:  # fmt: skip
    """Load a checkpoint into the run's state (weights, optimizer, RNG streams, and the loss
    window into `window`); returns its step and the step of the last log row."""
    meta = read_meta(ckpt)
    load_weights(model, ckpt, "model")
    load_weights(ema.model, ckpt, "ema")
    state = load_optimizer(ckpt)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MiroError(
            f"checkpoint {ckpt}: optimizer.pt does not fit the model ({first})"
        ) from None
    step, saved = int(meta["step"]), meta.get("log_window")
    if not check_world(meta, info):
        return step, step
    set_rng_state(meta["rng"][info.rank], generator)
    if saved is None:  # a checkpoint written before the window was saved
        return step, step
    window.fill_(float(saved["sums"][info.rank]))
    return step, int(saved["since"])


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
