"""The run folder, in one place: its layout, checkpoints written whole or not at all, the state
they save and a resume restores, and the readers every other module uses.

RUN/
    log.csv             a row every --log-every steps (runlog.RunLog writes it; `read_log`)
    loss.png            the loss curve, drawn at the end (`loss_plot`)
    tensorboard/        with --tensorboard
    checkpoints/step_0001000/
        model.safetensors   trained weights
        ema.safetensors     EMA weights (what sampling uses by default)
        optimizer.pt        optimizer (+ fp16 grad-scaler) state
        checkpoint.json     format, step, resolved train config, model spec (spec.ModelSpec's
                            JSON), every rank's RNG state and loss window
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from miro_data import jsonfields as jf
from miro_data.common import MiroError, first_line, honour_umask, user_os_error
from miro_train import dist
from miro_train.optim import Ema
from miro_train.spec import ModelSpec

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "miro-checkpoint/1"
META = "checkpoint.json"
LOG_FIELDS = ("step", "loss", "lr", "steps_per_s", "elapsed_s")


# ----------------------------------------------------------------------------
# Layout and readers
# ----------------------------------------------------------------------------


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def log_path(run: Path) -> Path:
    return run / "log.csv"


def loss_plot(run: Path) -> Path:
    return run / "loss.png"


def tensorboard_dir(run: Path) -> Path:
    return run / "tensorboard"


def read_log(run: Path) -> list[dict[str, str]]:
    """The rows of RUN/log.csv written whole (a run killed mid-write can leave a cut line)."""
    path = log_path(run)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if _complete(row)]


def _complete(row: dict) -> bool:
    if None in row:  # more fields than the header: two rows run together
        return False
    try:
        return all(isinstance(float(row[k]), float) for k in LOG_FIELDS)
    except (TypeError, ValueError, KeyError):
        return False


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is one checkpoint's folder (rather than a run folder)."""
    return (path / META).exists()


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    run: Path,
    step: int,
    *,
    spec: ModelSpec,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    config: Mapping[str, Any] | None = None,
    resume: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write step `step` into a hidden folder, then rename it into place; prune to `keep`.

    `config` is the run's resolved TrainConfig as JSON, `resume` what `save_state` adds for
    an exact resume (every rank's RNG state and loss window)."""
    meta = {"config": dict(config or {}), "model": spec.to_json(), **(resume or {})}
    final = step_dir(run, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tag = {"format": CHECKPOINT_FORMAT}
    opt_state = {"optimizer": optimizer.state_dict()}
    if scaler is not None:
        opt_state["scaler"] = scaler.state_dict()
    try:
        save_file(_tensors(model), tmp / "model.safetensors", metadata=tag)
        save_file(_tensors(ema), tmp / "ema.safetensors", metadata=tag)
        for name in ("model.safetensors", "ema.safetensors"):
            honour_umask(tmp / name)  # safetensors creates its files 0600
        # through a Python file: a full disk is then an OSError, not torch's "unexpected pos"
        with open(tmp / "optimizer.pt", "wb") as f:
            torch.save(opt_state, f)
        (tmp / META).write_text(json.dumps({"format": CHECKPOINT_FORMAT, "step": step, **meta}))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written folder only takes space
        raise
    if final.exists():  # re-saving a step: swap, so a crash never leaves neither
        old = final.with_name(f".{final.name}.old")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    if keep is not None and keep >= 1:
        for stale in list_checkpoints(run)[:-keep]:
            if stale != final:  # the checkpoint just written is never pruned
                shutil.rmtree(stale)
    log.debug("saved %s", final)
    return final


def recover_checkpoints(run: Path) -> None:
    """Tidy what a killed run left in RUN/checkpoints (with the run's lock held): a step moved
    aside while being re-saved comes back; half-written and moved-aside folders go."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return
    for old in folder.glob(".step_*.old"):
        final = folder / old.name[1:].removesuffix(".old")
        if not final.exists():
            os.replace(old, final)
            log.warning("restored %s, left aside by a run killed while re-saving it", final)
    for stale in [*folder.glob(".step_*.old"), *folder.glob(".step_*.tmp")]:
        shutil.rmtree(stale, ignore_errors=True)


def list_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step_*") if (p / META).exists())


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the latest checkpoint of a run folder."""
    path = Path(path)
    if (path / META).exists():
        return path
    found = list_checkpoints(path)
    if not found:
        raise MiroError(f"no checkpoint in {path} (expected {META} or checkpoints/step_*)")
    return found[-1]


def read_meta(ckpt: Path) -> dict[str, Any]:
    try:
        meta = json.loads((ckpt / META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MiroError(f"corrupt checkpoint {ckpt}: cannot read {META} ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise MiroError(f"{ckpt} is not a miro checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    for key in ("step", "model", "config"):
        if key not in meta:
            raise MiroError(f"corrupt checkpoint {ckpt}: {META} lacks {key!r}")
    return meta


def read_spec(ckpt: Path, meta: dict[str, Any] | None = None) -> ModelSpec:
    """The model spec a checkpoint was trained with (any layout a miro checkpoint has held);
    from its `meta` when the caller has read it already."""
    try:
        return ModelSpec.from_json((read_meta(ckpt) if meta is None else meta)["model"])
    except jf.FieldError as err:
        raise MiroError(f"corrupt checkpoint {ckpt}: the model spec in {META}: {err}") from None


def read_step(ckpt: Path) -> int:
    return int(read_meta(ckpt)["step"])


def load_weights(module: nn.Module, ckpt: Path, which: str = "ema") -> None:
    """Load `model` or `ema` weights into a module built from the checkpoint's spec."""
    path = ckpt / f"{which}.safetensors"
    try:
        state = load_file(path)
        module.load_state_dict(state, strict=True)
    except (OSError, SafetensorError) as err:
        raise MiroError(f"corrupt checkpoint {ckpt}: cannot read {path.name} ({err})") from None
    except RuntimeError as err:
        first = first_line(err)
        raise MiroError(f"checkpoint {ckpt}: weights do not match its config ({first})") from None


def load_optimizer(ckpt: Path) -> dict[str, Any]:
    """The optimizer state, loaded with weights_only: a pickle that would run code is refused."""
    path = ckpt / "optimizer.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError, ValueError) as err:
        # weights_only refuses any global it does not know: a pickle that would import code
        unsafe = re.search(r"GLOBAL (\S+)", str(err))
        if unsafe:
            raise MiroError(
                f"{path} is not a safe checkpoint: loading it would import {unsafe.group(1)}"
                " (refused; nothing in it ran)"
            ) from None
        lines = [line for line in str(err).splitlines() if line.strip()]
        reason = lines[-2].strip() if len(lines) > 2 else lines[0] if lines else "empty file"
        raise MiroError(f"corrupt checkpoint {ckpt}: cannot read optimizer.pt ({reason})") from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise MiroError(f"corrupt checkpoint {ckpt}: optimizer.pt holds no optimizer state")
    return state


# ----------------------------------------------------------------------------
# The state of a run: saved with every checkpoint, restored on resume
# ----------------------------------------------------------------------------


@dataclass
class RunState:
    """Everything a training step reads besides the data: what a resumed run must get back
    for its log and weights to equal those of an uninterrupted run."""

    model: nn.Module
    ema: Ema
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 only
    generator: torch.Generator  # the loss's random stream: t, noise, self-conditioning
    window: torch.Tensor  # this rank's loss summed since the last log row (on the device)
    step: int = 0
    step_log: int = 0  # the step of the last log row
    seconds: float = 0.0  # training wall time up to `step`, summed over resumed segments


def save_state(
    run: Path,
    state: RunState,
    *,
    spec: ModelSpec,
    config: Mapping[str, Any],
    info: dist.DistInfo,
    keep: int | None = None,
) -> Path | None:
    """Checkpoint `state.step` (every rank calls it; rank 0 writes, with every rank's RNG
    state and loss window); returns the folder on rank 0. A full disk or an unwritable folder
    is one line naming it."""
    ranks = dist.gather((rng_state(state.generator), float(state.window)), info)
    ckpt = None
    if info.main:
        resume = {
            "rng": [rng for rng, _ in ranks],
            "log_window": {"since": state.step_log, "sums": [w for _, w in ranks]},
            "train_seconds": round(state.seconds, 3),
        }
        try:
            ckpt = save_checkpoint(run, state.step, spec=spec, model=state.model,
                                   ema=state.ema.model, optimizer=state.optimizer,
                                   scaler=state.scaler, config=config, resume=resume,
                                   keep=keep)  # fmt: skip
        except Exception as err:
            mapped = user_os_error(err, step_dir(run, state.step), writing=True)
            if mapped is None:
                raise
            raise MiroError(f"{mapped} (the checkpoints written before are intact)") from None
    dist.barrier(info)
    return ckpt


def restore_state(ckpt: Path, state: RunState, info: dist.DistInfo) -> None:
    """Load a checkpoint into `state`: weights, optimizer, step, and (when the run had as many
    processes) this rank's RNG streams and loss window."""
    meta = read_meta(ckpt)
    load_weights(state.model, ckpt, "model")
    load_weights(state.ema.model, ckpt, "ema")
    saved = load_optimizer(ckpt)
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scaler is not None and "scaler" in saved:
            state.scaler.load_state_dict(saved["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        first = first_line(err)
        raise MiroError(
            f"checkpoint {ckpt}: optimizer.pt does not fit the model ({first})"
        ) from None
    state.step = state.step_log = int(meta["step"])
    state.seconds = float(meta.get("train_seconds", 0.0))  # (0: written before it was kept)
    window = meta.get("log_window")
    if not _same_world(meta, info):
        return
    set_rng_state(meta["rng"][info.rank], state.generator)
    if window is not None:  # (absent in checkpoints written before the window was saved)
        state.window.fill_(float(window["sums"][info.rank]))
        state.step_log = int(window["since"])


def _same_world(meta: dict[str, Any], info: dist.DistInfo) -> bool:
    """Whether the RNG streams of the checkpoint can be restored exactly on this many ranks."""
    if len(meta.get("rng", [])) == info.world:
        return True
    log.warning(
        "the run was trained on %d processes, now %d: the resume will not be exact",
        len(meta.get("rng", [])),
        info.world,
    )
    return False


# ----------------------------------------------------------------------------
# RNG state, as JSON
# ----------------------------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream a training step reads: the loss generator, torch, numpy, python."""
    np_state: Any = np.random.get_state()  # (name, keys, pos, has_gauss, cached)
    state = {
        "generator": _b64(generator.get_state()),
        "torch": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(_unb64(state["generator"]))
    torch.set_rng_state(_unb64(state["torch"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
