"""Checkpoints: a folder per step, written whole or not at all.

RUN/checkpoints/step_0001000/
    model.safetensors   trained weights
    ema.safetensors     EMA weights (what sampling uses by default)
    optimizer.pt        optimizer (+ fp16 grad-scaler) state
    checkpoint.json     format, step, resolved train config, model spec (reward names,
                        bin-edge version, text vocabulary, image space), RNG states
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from miro_data.common import MiroError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "miro-checkpoint/1"
META = "checkpoint.json"


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    run: Path,
    step: int,
    *,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    meta: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write step `step` into a hidden folder, then rename it into place; prune to `keep`."""
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


def load_weights(module: nn.Module, ckpt: Path, which: str = "ema") -> None:
    """Load `model` or `ema` weights into a module built from the checkpoint's spec."""
    path = ckpt / f"{which}.safetensors"
    try:
        state = load_file(path)
        module.load_state_dict(state, strict=True)
    except (OSError, SafetensorError) as err:
        raise MiroError(f"corrupt checkpoint {ckpt}: cannot read {path.name} ({err})") from None
    except RuntimeError as err:
        first = str(err).splitlines()[0]
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
# RNG state, as JSON
# ----------------------------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random stream a training step reads: the loss generator, torch, numpy, python."""
    np_state = np.random.get_state()
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
