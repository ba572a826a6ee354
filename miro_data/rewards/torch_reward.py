"""What every learned reward shares: options, device and autocast, model sharing, feature reuse.

A learned reward subclasses `TorchReward` and implements `prepare(images, captions)` (its own
preprocessing and tokenisation, to tensors on the device) and `forward(batch)` (the model:
(n,) scores). `score()` runs the two under `torch.inference_mode` and, on CUDA only, autocast
in the context's precision (`auto` = bf16 where supported, else fp16; `fp32` = none). On a
CPU it always runs in fp32, where the scores equal the reference implementations'.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from miro_data.common import MiroError
from miro_data.rewards import imageops
from miro_data.rewards.base import Reward, RewardContext

COMMON_OPTIONS = {
    "batch_size": "images per forward pass (default: 32 on CPU, larger on CUDA)",
    "hf_home": "Hugging Face home whose hub/ cache holds the weights (default: $HF_HOME)",
}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise MiroError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MiroError(f"device {device!r} requested but CUDA is not available")
    return dev


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise MiroError(f"invalid precision {precision!r}: use auto, fp32, bf16 or fp16")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def read_options(name: str, ctx: RewardContext, accepted: dict[str, str]) -> dict[str, Any]:
    """The reward's options from the context, refusing keys it does not know."""
    options = ctx.options_for(name)
    allowed = {**COMMON_OPTIONS, **accepted}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise MiroError(
            f"reward {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(allowed))}"
        )
    if "batch_size" in options:
        try:
            options["batch_size"] = int(options["batch_size"])
        except (TypeError, ValueError):
            raise MiroError(f"reward {name!r}: batch_size must be an integer") from None
        if options["batch_size"] < 1:
            raise MiroError(f"reward {name!r}: batch_size must be at least 1")
    return options


def shared(ctx: RewardContext, key: tuple, build: Callable[[], Any]) -> Any:
    """One object per key and process: a checkpoint loads once however many rewards use it."""
    if key not in ctx.cache:
        ctx.cache[key] = build()
    return ctx.cache[key]


class FeatureCache:
    """Per-image features keyed by the image array itself (by identity, weakly referenced).

    `clip` and `aesthetic` score the same decoded arrays with the same CLIP tower; whichever
    runs second finds the embeddings here instead of encoding again, however the annotate loop
    splits batches.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, tuple[weakref.ref, torch.Tensor]] = OrderedDict()

    def get(self, image: np.ndarray) -> torch.Tensor | None:
        item = self._items.get(id(image))
        if item is None or item[0]() is not image:
            return None
        self._items.move_to_end(id(image))
        return item[1]

    def put(self, image: np.ndarray, feature: torch.Tensor) -> None:
        self._items[id(image)] = (weakref.ref(image), feature)
        self._items.move_to_end(id(image))
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def encode(
        self, images: Sequence[np.ndarray], encode: Callable[[list[np.ndarray]], torch.Tensor]
    ) -> torch.Tensor:
        """(n, D) features of `images`, encoding only those not seen before."""
        found = [self.get(im) for im in images]
        todo = [i for i, f in enumerate(found) if f is None]
        if todo:
            fresh = encode([images[i] for i in todo])
            for i, feature in zip(todo, fresh, strict=True):
                found[i] = feature
                self.put(images[i], feature)
        return torch.stack(found)  # type: ignore[arg-type]


class ScoreHead(nn.Module):
    """The MLP head of the LAION aesthetic predictor and of ImageReward (same layout, same keys).

    Its dropouts are inert at inference but keep the layer indices of the released checkpoints.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) → (B,)
        return self.layers(x).squeeze(-1)


class TorchReward(Reward):
    """A learned reward: options parsed, device and precision resolved, inference wrapped."""

    OPTIONS: ClassVar[dict[str, str]] = {}
    CUDA_BATCH: ClassVar[int] = 128

    def __init__(self, ctx: RewardContext | None = None) -> None:
        self.ctx = ctx or RewardContext()
        self.options = read_options(self.name, self.ctx, self.OPTIONS)
        self.device = resolve_device(self.ctx.device)
        self.amp_dtype = autocast_dtype(self.device, self.ctx.precision)
        default_batch = self.CUDA_BATCH if self.device.type == "cuda" else 32
        self.batch_size = int(self.options.get("batch_size", default_batch))
        self.hf_home = self.options.get("hf_home")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        if not len(images):
            return np.zeros(0)
        with torch.inference_mode(), self.autocast():
            values = self._score(list(images), ["" if c is None else str(c) for c in captions])
        return values.float().cpu().numpy().astype(np.float64)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return imageops.to_device(tensor, self.device)

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        """Model inputs (tensors on the device) from decoded images and captions."""
        raise NotImplementedError

    def forward(self, batch: dict) -> torch.Tensor:
        """(n,) scores from prepared inputs: the model alone."""
        raise NotImplementedError

    def _score(self, images: list[np.ndarray], captions: list[str]) -> torch.Tensor:
        return self.forward(self.prepare(images, captions))
