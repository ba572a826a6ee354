"""What the model reads and writes: `resolve_spec` (registry config + data → `ModelSpec`),
captions → text tensors, a batch → `ConditioningInput`, images ↔ the model's space (pixels in
[-1, 1], or VAE latents normalised per channel) and back.

The same `Codec` serves training (batches from the shards, where text embeddings and latents
may be precomputed) and sampling (prompts in, uint8 images out).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from miro_data.common import MiroError
from miro_data.encoders import FrozenTextEncoder, ImageAutoencoder
from miro_data.jsonfields import FieldError
from miro_train.conditioning import ConditioningInput
from miro_train.data import Shards
from miro_train.models import model_config
from miro_train.spec import (
    BackboneSpec,
    ConditioningSpec,
    ImageSpec,
    ModelSpec,
    TextSpec,
)
from miro_train.text import WordVocab

log = logging.getLogger(__name__)


def resolve_spec(
    model: str,
    *,
    rewards: Sequence[str],
    shards: Shards,
    captions: Iterable[str],
    text_encoder: str | None = None,
    vae: str | None = None,
    vae_subfolder: str | None = None,
    resolution: int | None = None,
    prediction: str | None = None,
    allow_download: bool = False,
) -> ModelSpec:
    """The registry config completed by the data: rewards, text side, image space (and the
    options that override the config's). A latent space still lacks its statistics
    (`prepare.latent_stats` measures them with this spec)."""
    config = model_config(model)
    try:
        return ModelSpec(
            name=config["name"],
            backbone=BackboneSpec.of(config["backbone"], config.get("backbone_args", {})),
            conditioning=ConditioningSpec(**config["conditioning"]),
            text=_text_spec(config, shards, captions, text_encoder, allow_download),
            image=_image_spec(config, shards, vae, vae_subfolder, resolution, allow_download),
            rewards=tuple(rewards),
            edges_version=shards.manifest.edges_version,
            summary=config.get("summary"),
            prediction=prediction or config.get("prediction", "v"),
        )
    except FieldError as err:  # what the registry check leaves to the records (text.dim)
        raise MiroError(f"model config {model}: {err}") from None


def _text_spec(
    config: dict[str, Any],
    shards: Shards,
    captions: Iterable[str],
    text_encoder: str | None,
    allow_download: bool,
) -> TextSpec:
    text = dict(config.get("text", {"kind": "word", "dim": 128, "max_len": 16}))
    if text_encoder == "word" or (text_encoder is None and text.get("kind") == "word"):
        dim: Any = text.get("dim") if text.get("kind") == "word" else config["conditioning"]["dim"]
        vocab = WordVocab.build(captions, max_len=text.get("max_len", 16))
        return TextSpec("word", dim, vocab.max_len, vocab=vocab.words)
    name = text_encoder or text["name"]
    dim = text.get("dim") if name == text.get("name") else None
    if dim is None:  # another encoder than the config's: ask it its width
        dim = FrozenTextEncoder(name, allow_download=allow_download).dim
    return TextSpec("hf", int(dim), text.get("max_len", 128), name=name,
                    precomputed=shards.manifest.hooks.text == name)  # fmt: skip


def _image_spec(
    config: dict[str, Any],
    shards: Shards,
    vae: str | None,
    vae_subfolder: str | None,
    resolution: int | None,
    allow_download: bool,
) -> ImageSpec:
    image = config.get("image", {})
    vae = vae if vae is not None else image.get("vae") if image.get("space") == "latent" else None
    size = resolution or image.get("resolution", 32)
    if vae in (None, "", "none"):
        return ImageSpec("pixel", size, channels=3, size=size)
    ae = ImageAutoencoder(vae, subfolder=vae_subfolder, allow_download=allow_download)
    if size % ae.factor:
        raise MiroError(f"resolution {size} is not a multiple of the VAE's factor {ae.factor}")
    return ImageSpec("latent", size, ae.channels, size // ae.factor, vae=vae,
                     vae_subfolder=vae_subfolder, precomputed=shards.manifest.hooks.vae == vae)  # fmt: skip


class Codec:
    """Captions → text tensors; images ↔ model space. Loads frozen encoders only when needed
    (fetching them from the Hub with `allow_download`), or uses those given (a pipeline's)."""

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device,
        *,
        need_vae: bool = True,
        allow_download: bool = False,
        text_encoder: FrozenTextEncoder | None = None,
        vae: ImageAutoencoder | None = None,
    ):
        self.spec, self.device, self.allow_download = spec, device, allow_download
        text, image = spec.text, spec.image
        self.vocab = WordVocab(text.vocab, text.max_len) if text.kind == "word" else None
        self.text_encoder = text_encoder
        self.vae = vae
        if image.space == "latent" and need_vae and vae is None:
            assert image.vae is not None  # ImageSpec checks it
            self.vae = ImageAutoencoder(image.vae, image.vae_subfolder, device=device,
                                        allow_download=allow_download)  # fmt: skip
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        if image.stats is not None:
            self.mean = torch.tensor(image.stats.mean, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(image.stats.std, device=device).view(1, -1, 1, 1)

    # ---- text -------------------------------------------------------------

    def encoder(self) -> FrozenTextEncoder:
        """The frozen text encoder (kind "hf"), loaded on first use."""
        if self.text_encoder is None:
            t = self.spec.text
            assert t.name is not None  # TextSpec checks it
            self.text_encoder = FrozenTextEncoder(t.name, self.device, max_length=t.max_len,
                                                  allow_download=self.allow_download)  # fmt: skip
        return self.text_encoder

    def text(
        self, captions: Sequence[str], batch: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Word ids (B, L), or embeddings (B, L, D) with their mask."""
        if self.vocab is not None:
            ids = (
                batch["ids"]
                if batch and "ids" in batch
                else torch.from_numpy(self.vocab.encode(captions))
            )
            return ids.to(self.device, non_blocking=True), None
        if batch and "text_emb" in batch:
            mask = batch["text_mask"].to(self.device, non_blocking=True)
            return batch["text_emb"].to(self.device, non_blocking=True).float(), mask
        return self.encoder().encode(captions)

    def inputs(self, batch: dict[str, Any]) -> ConditioningInput:
        """A training batch's conditioning inputs on the device: captions and reward values."""
        text, text_mask = self.text(batch["captions"], batch)
        rewards = batch["rewards"].to(self.device, non_blocking=True)
        return ConditioningInput(rewards, text, text_mask)

    # ---- images -----------------------------------------------------------

    def raw_latents(self, batch: dict[str, Any]) -> torch.Tensor:
        if "latent" in batch:
            return batch["latent"].to(self.device, non_blocking=True).float()
        if self.vae is None:
            raise MiroError("these inputs need a VAE to encode images")
        return self.vae.encode(batch["image"].to(self.device, non_blocking=True))

    def to_model(self, batch: dict[str, Any]) -> torch.Tensor:
        """A batch's images in model space: (B, C, size, size)."""
        if self.spec.image.space == "pixel":
            return batch["image"].to(self.device, non_blocking=True).float() / 127.5 - 1.0
        z = self.raw_latents(batch)
        if self.mean is None or self.std is None:
            return z
        return (z - self.mean) / self.std

    def to_images(self, x: torch.Tensor) -> np.ndarray:
        """Model-space samples → (B, H, W, 3) uint8."""
        if self.spec.image.space == "latent":
            if self.vae is None:
                raise MiroError("decoding latents needs the VAE")
            if self.mean is not None and self.std is not None:
                x = x * self.std + self.mean
            x = self.vae.decode(x)
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    @property
    def shape(self) -> tuple[int, int, int]:
        image = self.spec.image
        return image.channels, image.size, image.size
