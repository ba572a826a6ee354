"""`imagereward`: ImageReward v1.0 (Xu et al., 2023), scored as its package's `score()` does.

Files: `ImageReward.pt` and `med_config.json` (HF repo THUDM/ImageReward) and the
`bert-base-uncased` tokenizer (its vocab.txt), found in the HF cache or at explicit paths.
The network (miro_data.rewards.blip) is built from the checkpoint's own sizes and loaded
strictly; the only keys allowed to go unused are BLIP's contrastive projections and the
position-id buffer, which scoring never reads.

Options: checkpoint, med_config, repo, tokenizer_dir, tokenizer_repo, batch_size, hf_home.

Images: 224 px bicubic resize of the short side, centre crop, OpenAI CLIP mean/std (as the
package's PIL pipeline, reproduced exactly on tensors). Captions: BERT tokens, padded and
truncated to 35 as the package does. Score: (MLP([CLS]) − 0.16717) / 1.03334.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import BertTokenizer

from miro_data.common import MiroError
from miro_data.rewards import catalog, imageops
from miro_data.rewards.base import RewardContext
from miro_data.rewards.blip import ImageRewardNet, TextConfig, vision_config_from
from miro_data.rewards.torch_reward import TorchReward, shared
from miro_data.rewards.weights import (
    inputs_digest,
    load_state_dict,
    load_strict,
    present,
    resolve,
    short_digest,
)

MAX_TOKENS = 35
UNUSED_KEYS = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")


@dataclass
class ImageRewardParts:
    net: ImageRewardNet
    tokenizer: BertTokenizer
    version: str


def text_config(med_config: dict, vision_width: int, path: object) -> TextConfig:
    """The BERT sizes from med_config.json, refusing variants the network does not implement."""
    if med_config.get("position_embedding_type", "absolute") != "absolute":
        raise MiroError(f"{path}: only absolute position embeddings are supported")
    if med_config.get("hidden_act", "gelu") != "gelu" or not med_config.get(
        "add_cross_attention", True
    ):
        raise MiroError(f"{path}: expected hidden_act 'gelu' and add_cross_attention true")
    fields = set(TextConfig.__dataclass_fields__) - {"encoder_width"}
    return TextConfig(
        **{k: med_config[k] for k in fields if k in med_config}, encoder_width=vision_width
    )


def blip_tokenizer(folder: str | Path) -> BertTokenizer:
    """bert-base-uncased with BLIP's two extra tokens, as ImageReward's init_tokenizer makes it."""
    tokenizer = BertTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def load_parts(files: list, device: torch.device, hf_home: str | None) -> ImageRewardParts:
    checkpoint, med_path, vocab = resolve("imagereward", files, hf_home)
    state = load_state_dict(checkpoint)
    try:
        med_config = json.loads(med_path.read_text())
        vision = vision_config_from(state)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MiroError(f"cannot read {med_path}: {err}") from None
    except (KeyError, ValueError):
        raise MiroError(f"checkpoint {checkpoint} holds no BLIP visual encoder") from None
    net = ImageRewardNet(vision, text_config(med_config, vision.width, med_path))
    load_strict(net, state, checkpoint, ignorable=UNUSED_KEYS)
    net.eval().requires_grad_(False).to(device)
    try:
        tokenizer = blip_tokenizer(vocab.parent)
    except (OSError, ValueError, TypeError) as err:
        raise MiroError(f"cannot load the BERT tokenizer from {vocab.parent}: {err}") from None
    if len(tokenizer) > net.blip.text_encoder.embeddings.word_embeddings.num_embeddings:
        raise MiroError(f"tokenizer in {vocab.parent} has more tokens than {med_path} allows")
    # med_config.json and the tokenizer's files (vocab, lower-casing) change scores too
    inputs = inputs_digest([med_path, *present(vocab.parent)])
    return ImageRewardParts(net, tokenizer, f"v1.0@{short_digest(checkpoint)}+cfg@{inputs}")


class ImageReward(TorchReward):
    """ImageReward v1.0: BLIP image-grounded caption encoding → MLP, standardised."""

    name = "imagereward"
    OPTIONS = catalog.IMAGEREWARD_OPTIONS

    def __init__(
        self, ctx: RewardContext | None = None, parts: ImageRewardParts | None = None
    ) -> None:
        super().__init__(ctx)
        if parts is None:
            files = catalog.imagereward_files(self.options)
            key = ("imagereward", tuple(w.where(self.hf_home) for w in files), str(self.device))
            parts = shared(self.ctx, key, lambda: load_parts(files, self.device, self.hf_home))
        self.parts = parts
        self.version = parts.version
        self.size = parts.net.image_size

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        crops = [
            imageops.resize_shortest_center_crop(im, self.size, "bicubic", self.device)
            for im in images
        ]
        pixels = imageops.to_unit_float(self.to_device(torch.stack(crops)))
        text = self.parts.tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        return {
            "pixels": imageops.normalize(pixels, imageops.OPENAI_MEAN, imageops.OPENAI_STD),
            "ids": self.to_device(text["input_ids"]),
            "mask": self.to_device(text["attention_mask"]),
        }

    def forward(self, batch: dict) -> torch.Tensor:
        return self.parts.net(batch["pixels"], batch["ids"], batch["mask"])
