"""Reshard hooks: precompute per-sample tensors the trainer would otherwise compute every epoch.

`text=MODEL` computes the caption's token embeddings (float16 (L, D), padding dropped) from a
frozen Hugging Face encoder; `vae=MODEL` the image's unscaled VAE latents (float16 (C, h, w))
from a diffusers AutoencoderKL. reshard stores them as `TrainSample.txt_emb` / `.latent`
(members `trainshards.TEXT_EMB` / `LATENT`). MODEL is a Hugging Face id (resolved from the
local cache when offline) or a local folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from miro_data.common import MiroError


class Hook(ABC):
    """Computes one array per sample, in batches; `kind` says which (see HOOKS)."""

    kind: str = ""

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    def __call__(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> list[np.ndarray]:
        """One array per sample."""


class TextEmbeddingHook(Hook):
    """Token embeddings of the caption (real tokens only)."""

    kind = "text"

    def __init__(
        self, model: str, device: str = "cpu", max_length: int = 77, allow_download: bool = False
    ) -> None:
        super().__init__(model)
        from miro_data.encoders import FrozenTextEncoder

        self.encoder = FrozenTextEncoder(model, device=device, max_length=max_length,
                                         allow_download=allow_download)  # fmt: skip

    def __call__(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> list[np.ndarray]:
        emb, mask = self.encoder.encode(captions)
        tokens, keep = emb.float().cpu().numpy(), mask.cpu().numpy()
        return [e[m].astype(np.float16) for e, m in zip(tokens, keep, strict=True)]


class VaeLatentHook(Hook):
    """Unscaled VAE posterior means of the image; same-size images are encoded together."""

    kind = "vae"

    def __init__(self, model: str, device: str = "cpu", allow_download: bool = False) -> None:
        super().__init__(model)
        from miro_data.encoders import ImageAutoencoder

        self.vae = ImageAutoencoder(model, device=device, allow_download=allow_download)

    def __call__(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(img.shape, []).append(i)
        for idx in by_shape.values():
            latents = self.vae.encode(np.stack([images[i] for i in idx])).cpu().numpy()
            for i, lat in zip(idx, latents, strict=True):
                out[i] = lat.astype(np.float16)
        return out  # type: ignore[return-value]


HOOKS = {"text": TextEmbeddingHook, "vae": VaeLatentHook}


def parse_hooks(specs: Sequence[str]) -> list[tuple[str, str]]:
    """'text=google/flan-t5-base' → ('text', 'google/flan-t5-base'); checks, loads nothing."""
    parsed = []
    for spec in specs:
        kind, sep, model = spec.partition("=")
        if not sep or kind not in HOOKS or not model.strip():
            raise MiroError(f"--hook {spec!r}: expected text=MODEL or vae=MODEL")
        parsed.append((kind, model))
    if len({kind for kind, _ in parsed}) != len(parsed):
        raise MiroError("each hook kind may be given once")
    return parsed


def build_hooks(
    specs: Sequence[str], device: str = "cpu", allow_download: bool = False
) -> list[Hook]:
    """'text=google/flan-t5-base', 'vae=madebyollin/sdxl-vae-fp16-fix' → hooks (their models
    fetched from the Hub when missing from the cache, with `allow_download`)."""
    return [HOOKS[kind](model, device=device, allow_download=allow_download)
            for kind, model in parse_hooks(specs)]  # fmt: skip
