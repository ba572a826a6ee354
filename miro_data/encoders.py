"""Frozen encoders shared by the reshard hooks and the trainer: captions → token embeddings,
images ↔ VAE latents.

`FrozenTextEncoder` wraps any Hugging Face text encoder (T5 / FLAN-T5 encoder like MIRO,
CLIP text, BERT…) and returns per-token embeddings with their padding mask.
`ImageAutoencoder` wraps a diffusers `AutoencoderKL` (e.g. the SDXL VAE) and works in
*unscaled* latents: `encode` returns the posterior mean as the VAE produces it and `decode`
takes the same; the trainer applies its own per-channel normalisation on top. Both load with
`from_pretrained`, so a Hugging Face id (resolved from the local cache when offline) or a
local folder works; failures become one-line `MiroError`s.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miro_data.common import MiroError, first_line
from miro_data.hub import OPT_IN, local_model

log = logging.getLogger(__name__)


def _load_error(what: str, name: str, err: Exception, allow_download: bool) -> MiroError:
    first = first_line(err)
    hint = ""
    if not allow_download and not Path(name).expanduser().exists():
        hint = f" (a Hub id missing from the local cache? {OPT_IN})"
    return MiroError(f"cannot load {what} {name!r}: {first}{hint}")


class FrozenTextEncoder:
    """A Hugging Face text encoder in eval mode without gradients: captions → (B, L, D)."""

    def __init__(
        self,
        name: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_length: int = 77,
        allow_download: bool = False,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel

        model: Any  # one of transformers' encoder classes
        source = local_model(name, allow_download)
        try:
            config = AutoConfig.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
            if config.model_type in ("t5", "mt5", "umt5"):
                model = T5EncoderModel.from_pretrained(source, dtype=dtype)
            elif config.model_type in ("clip", "clip_text_model"):
                model = CLIPTextModel.from_pretrained(source, dtype=dtype)
            else:
                model = AutoModel.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError, KeyError) as err:
            raise _load_error("text encoder", name, err, allow_download) from None
        self._setup(name, model, tokenizer, device, max_length)

    @classmethod
    def of(
        cls, name: str, model: Any, tokenizer: Any, device: str | torch.device, max_length: int
    ) -> FrozenTextEncoder:
        """An encoder around an already loaded model and tokenizer (a pipeline's components)."""
        self = cls.__new__(cls)
        self._setup(name, model, tokenizer, device, max_length)
        return self

    def _setup(
        self, name: str, model: Any, tokenizer: Any, device: str | torch.device, max_length: int
    ) -> None:
        self.name, self.max_length, self.device = name, max_length, torch.device(device)
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval().requires_grad_(False)
        hidden = getattr(self.model.config, "d_model", None) or self.model.config.hidden_size
        self.dim = int(hidden)

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) last hidden states and (B, L) bool mask (True for real tokens)."""
        batch = self.tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state, batch["attention_mask"].bool()


class ImageAutoencoder:
    """A frozen diffusers AutoencoderKL: uint8 images ↔ unscaled latents."""

    def __init__(
        self,
        name: str,
        subfolder: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        allow_download: bool = False,
    ) -> None:
        from diffusers import AutoencoderKL

        source = local_model(name, allow_download, subfolder)
        try:
            with warnings.catch_warnings():  # diffusers passes huggingface_hub a retired argument
                warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks")
                # low_cpu_mem_usage=False: plain loading, no `accelerate` needed (nor its warning)
                vae = AutoencoderKL.from_pretrained(source, subfolder=subfolder, torch_dtype=dtype,
                                                    low_cpu_mem_usage=False)  # fmt: skip
        except (OSError, ValueError, KeyError) as err:
            raise _load_error("VAE", name, err, allow_download) from None
        self._setup(name, vae, device, dtype)

    @classmethod
    def of(
        cls, name: str, vae: Any, device: str | torch.device, dtype: torch.dtype = torch.float32
    ) -> ImageAutoencoder:
        """An autoencoder around an already loaded AutoencoderKL (a pipeline's `vae`)."""
        self = cls.__new__(cls)
        self._setup(name, vae, device, dtype)
        return self

    def _setup(self, name: str, vae: Any, device: str | torch.device, dtype: torch.dtype) -> None:
        self.name, self.device, self.dtype = name, torch.device(device), dtype
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.channels = int(vae.config.latent_channels)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) or (B, 3, H, W) images → (B, C, H/f, W/f) posterior means."""
        # a copy: arrays decoded by PIL are read-only, which torch warns about
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        x = x.to(self.device, self.dtype) / 127.5 - 1.0
        return self.vae.encode(x).latent_dist.mean.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) unscaled latents → (B, 3, H, W) images in [-1, 1]."""
        return self.vae.decode(latents.to(self.device, self.dtype)).sample.float().clamp(-1, 1)
