"""CLIP-FlanT5, the VQAScore model (Lin et al., 2024), in plain torch on transformers' parts.

The network of t2v_metrics' `CLIPT5ForConditionalGeneration`: a transformers CLIP vision tower
(features of its second-to-last layer, CLS dropped), an MLP projector (Linear, GELU, Linear)
into the T5 width, and a FlanT5 encoder-decoder whose encoder reads
[system prompt tokens, image features, question tokens]. The checkpoint's parameter names are
kept: `vision_tower.vision_tower.*` and `mm_projector.*` as published, the T5 ones
(`shared.*`, `encoder.*`, `decoder.*`, `lm_head.*`) under `language_model.` (`checkpoint_key`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration

from miro_data.common import MiroError

VISION_PREFIXES = ("vision_tower.", "mm_projector.")
TOWER = "vision_tower.vision_tower."
# config.json keys that describe the file, not the T5 (the rest, mm_* included, go to T5Config
# as the published class passes them; weights are built in fp32 whatever `torch_dtype` says)
NOT_T5 = {
    "model_type",
    "architectures",
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "dtype",
}
# Aliases of `shared.weight` the published class (and transformers 4's state dicts) may carry.
EMBED_ALIASES = (
    "embed_tokens.weight",
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
)


class VisionTower(nn.Module):
    """LLaVA's CLIPVisionTower: `vision_tower.vision_tower` is the CLIPVisionModel."""

    def __init__(self, config: CLIPVisionConfig, select_layer: int, select_feature: str) -> None:
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise MiroError(f"unsupported mm_vision_select_feature {select_feature!r}")
        self.vision_tower = CLIPVisionModel(config)
        self.select_layer, self.select_feature = select_layer, select_feature

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixels, output_hidden_states=True)
        features = out.hidden_states[self.select_layer]
        return features[:, 1:] if self.select_feature == "patch" else features


def projector(kind: str, vision_width: int, width: int) -> nn.Module:
    """`mm_projector_type`: linear, or mlpNx_gelu (Linear, then (GELU, Linear) × N−1)."""
    if kind == "linear":
        return nn.Linear(vision_width, width)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match:
        raise MiroError(f"unsupported mm_projector_type {kind!r}")
    layers: list[nn.Module] = [nn.Linear(vision_width, width)]
    for _ in range(1, int(match.group(1))):
        layers += [nn.GELU(), nn.Linear(width, width)]
    return nn.Sequential(*layers)


class ClipT5(nn.Module):
    """Image + question → logits of the answer tokens (teacher-forced)."""

    def __init__(self, config: Mapping, vision: CLIPVisionConfig) -> None:
        super().__init__()
        t5 = T5Config(**{k: v for k, v in config.items() if k not in NOT_T5})
        self.language_model = T5ForConditionalGeneration(t5)
        self.vision_tower = VisionTower(
            vision,
            int(config.get("mm_vision_select_layer", -2)),
            str(config.get("mm_vision_select_feature", "patch")),
        )
        width = int(config.get("mm_hidden_size", vision.hidden_size))
        if width != vision.hidden_size:
            raise MiroError(f"mm_hidden_size {width} does not match the vision tower's width")
        self.mm_projector = projector(
            str(config.get("mm_projector_type", "linear")), width, t5.d_model
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.shared(ids)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mm_projector(self.vision_tower(pixels))

    def forward(
        self,
        prefix: torch.Tensor,  # (P,) token ids before the image, the same for every row
        pixels: torch.Tensor,  # (B, 3, S, S)
        question: torch.Tensor,  # (B, Q) token ids after the image, padded at the end
        question_mask: torch.Tensor,  # (B, Q) bool
        answer: torch.Tensor,  # (A,) token ids of the answer, the same for every row
    ) -> torch.Tensor:
        """(B, A, V) answer logits. The encoder sees [prefix, image, question, padding], with
        the padding masked, exactly the sequence the reference assembles."""
        image = self.image_features(pixels)
        batch = image.shape[0]
        head = self.embed(prefix)[None].expand(batch, -1, -1)
        embeds = torch.cat([head.to(image.dtype), image, self.embed(question).to(image.dtype)], 1)
        seen = torch.ones(batch, head.shape[1] + image.shape[1], dtype=torch.bool)
        mask = torch.cat([seen.to(question_mask.device), question_mask], 1)
        decoder_ids = self.language_model._shift_right(answer[None].expand(batch, -1))
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=mask.long(),
            decoder_input_ids=decoder_ids,
            use_cache=False,
        )
        return out.logits


def checkpoint_key(key: str) -> str:
    """A published parameter name → this module's name. transformers 5's CLIPVisionModel has
    no `vision_model.` level; the published (transformers 4) names do."""
    if key.startswith(TOWER + "vision_model."):
        return TOWER + key.removeprefix(TOWER + "vision_model.")
    return key if key.startswith(VISION_PREFIXES) else "language_model." + key


def tower_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision tower's keys, published names, from a CLIP repo's weights (a whole CLIPModel
    or a CLIPVisionModel, either generation of names)."""
    if any(k.startswith("vision_model.") for k in state):
        return {TOWER + k: v for k, v in state.items() if k.startswith("vision_model.")}
    return {TOWER + k: v for k, v in state.items() if not k.startswith(("text_", "logit_"))}


def model_state(state: dict[str, torch.Tensor], path: object) -> dict[str, torch.Tensor]:
    """The published state dict renamed for `ClipT5`, tied embeddings checked and filled in."""
    shared = state.get("shared.weight")
    if shared is None:
        raise MiroError(f"checkpoint {path} is not a CLIP-T5 model (no shared.weight)")
    for alias in EMBED_ALIASES:
        if alias in state and not torch.equal(state[alias], shared):
            raise MiroError(f"checkpoint {path}: {alias} differs from shared.weight")
    out = {checkpoint_key(k): v for k, v in state.items() if k not in EMBED_ALIASES}
    for alias in EMBED_ALIASES[1:]:
        out["language_model." + alias] = shared
    return out
