"""`pickscore` and `sciscore`: CLIP-H scorers read as PickScore's published snippet reads them.

`pickscore` is PickScore v1 (Kirstain et al., 2023), a CLIP-H fine-tuned on Pick-a-Pic;
`sciscore` is SciScore (`Jialuo21/SciScore`, Science-T2I), a CLIP-H fine-tuned on scientific
images, used the same way (same processor, same formula), with its own weights.

Score = logit_scale.exp() × cosine(image, caption), as the published snippet computes before
its softmax. The model is a transformers `CLIPModel` (`yuvalkirstain/PickScore_v1`), the
processor that of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`; both are read from local folders
(the HF cache or explicit paths) and the weights are loaded strictly.

Options (both): repo, model_dir, processor, processor_dir, batch_size, hf_home.

Rewards of one process whose processor files are identical (pickscore and sciscore by default)
preprocess each image once: the pixel tensors are shared through a per-image cache.

Images go through the processor's own torchvision pipeline on tensors (on the GPU when there
is one); captions are truncated to 77 tokens as in the snippet. One departure, for images the
reference would resize to hundreds of megapixels: an aspect ratio beyond 64:1 is first
centre-cropped to 64:1 (the centre crop keeps less than that anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel

from miro_data.common import MiroError
from miro_data.rewards import catalog, imageops
from miro_data.rewards.base import RewardContext
from miro_data.rewards.torch_reward import FeatureCache, TorchReward, shared
from miro_data.rewards.weights import (
    inputs_digest,
    load_state_dict,
    load_strict,
    present,
    resolve,
    short_digest,
)

MAX_ASPECT = 64
# transformers ≥ 4.31 no longer stores these buffers; older checkpoints (PickScore's) do.
UNUSED_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


@dataclass
class PickScoreParts:
    model: CLIPModel
    image_processor: Any  # CLIPImageProcessor (torchvision backend)
    tokenizer: Any  # CLIPTokenizer
    version: str
    processor_id: str = ""  # digest of the processor files: equal → identical pixels


def load_parts(
    label: str, files: list, device: torch.device, hf_home: str | None
) -> PickScoreParts:
    config_path, weights, processor_config, _ = resolve(label.lower(), files, hf_home)
    try:
        model = CLIPModel(CLIPConfig.from_pretrained(config_path.parent))
    except (OSError, ValueError, TypeError) as err:
        raise MiroError(f"cannot build {label} from {config_path}: {err}") from None
    load_strict(model, load_state_dict(weights), weights, ignorable=UNUSED_KEYS)
    model.eval().requires_grad_(False).to(device)
    folder = processor_config.parent
    try:
        image_processor = AutoImageProcessor.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as err:
        raise MiroError(f"cannot load the {label} processor from {folder}: {err}") from None
    # the model config and every processor file change scores as the weights do
    processor_id = inputs_digest(present(folder), n=16)
    inputs = inputs_digest([config_path, *present(folder)])
    version = f"{label}@{short_digest(weights)}+cfg@{inputs}"
    return PickScoreParts(model, image_processor, tokenizer, version, processor_id)


def limit_aspect(image: np.ndarray, ratio: int = MAX_ASPECT) -> np.ndarray:
    """Centre-crop the long side of an extreme image to `ratio` × the short side."""
    h, w = image.shape[:2]
    if h > ratio * w:
        top = (h - ratio * w) // 2
        return image[top : top + ratio * w]
    if w > ratio * h:
        left = (w - ratio * h) // 2
        return image[:, left : left + ratio * h]
    return image


class SharedPixels(FeatureCache):
    """Processed pixels per image, for the rewards of one process that share a processor; only
    used once a second reward joins (one reward alone would gain nothing and hold memory)."""

    def __init__(self) -> None:
        super().__init__(capacity=512)  # ≥ annotate's batch: 512 × 3×224×224 fp32 ≈ 300 MB
        self.users = 0


class PickScore(TorchReward):
    """PickScore v1: logit scale × cosine of CLIP-H image and caption embeddings."""

    name = "pickscore"
    OPTIONS = catalog.PICKSCORE_OPTIONS
    LABEL = "PickScore"

    @staticmethod
    def files(options: dict) -> list:
        return catalog.pickscore_files(options)

    def __init__(
        self, ctx: RewardContext | None = None, parts: PickScoreParts | None = None
    ) -> None:
        super().__init__(ctx)
        if parts is None:
            files = self.files(self.options)
            key = (self.name, tuple(w.where(self.hf_home) for w in files), str(self.device))
            parts = shared(
                self.ctx, key, lambda: load_parts(self.LABEL, files, self.device, self.hf_home)
            )
        self.parts = parts
        self.version = parts.version
        processor = parts.processor_id or id(parts.image_processor)
        self.shared_pixels = shared(
            self.ctx, ("clip-h pixels", processor, str(self.device)), SharedPixels
        )
        self.shared_pixels.users += 1

    def process(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, 3, 224, 224) pixels from the processor's own torchvision pipeline."""
        tiles = [imageops.to_chw(limit_aspect(imageops.as_rgb(im)), self.device) for im in images]
        pixels = self.parts.image_processor(
            images=tiles,
            return_tensors="pt",
            input_data_format="channels_first",
            device=self.device,
        )["pixel_values"]
        return self.to_device(pixels)

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        if self.shared_pixels.users > 1:
            pixels = self.shared_pixels.encode(images, self.process)
        else:
            pixels = self.process(images)
        text = self.parts.tokenizer(
            captions, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        return {
            "pixels": pixels,
            "ids": self.to_device(text["input_ids"]),
            "mask": self.to_device(text["attention_mask"]),
        }

    def forward(self, batch: dict) -> torch.Tensor:
        model = self.parts.model
        image = model.visual_projection(
            model.vision_model(pixel_values=batch["pixels"]).pooler_output
        )
        text = model.text_model(input_ids=batch["ids"], attention_mask=batch["mask"]).pooler_output
        caption = model.text_projection(text)
        image = image.float() / image.float().norm(dim=-1, keepdim=True)
        caption = caption.float() / caption.float().norm(dim=-1, keepdim=True)
        return model.logit_scale.exp().float() * (image * caption).sum(-1)


class SciScore(PickScore):
    """SciScore: PickScore's recipe (processor, logit scale × cosine) on SciScore's CLIP-H."""

    name = "sciscore"
    OPTIONS = catalog.SCISCORE_OPTIONS
    LABEL = "SciScore"

    @staticmethod
    def files(options: dict) -> list:
        return catalog.sciscore_files(options)
