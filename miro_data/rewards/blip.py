"""ImageReward's network in plain torch: BLIP's ViT, BLIP's BERT with cross-attention, an MLP.

Parameter names follow ImageReward.pt exactly (`blip.visual_encoder.…`, `blip.text_encoder.…`,
`mlp.layers.…`), so the published checkpoint loads strictly. The reference code (BLIP's vit.py
on timm 0.6 and med.py on transformers 4.15) hard-codes ViT-L; here every size comes from a
config read off the checkpoint and med_config.json, so tiny test models load too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from miro_data.rewards.torch_reward import ScoreHead

# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionConfig:
    width: int = 1024  # ViT-L/16, BLIP's 'large'
    depth: int = 24
    heads: int = 16
    patch: int = 16
    image_size: int = 224


@dataclass(frozen=True)
class TextConfig:
    """The fields of med_config.json that shape the network (BERT-base with cross-attention)."""

    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    encoder_width: int = 1024  # set to the vision width, as BLIP_Pretrain does


# ----------------------------------------------------------------------------
# BLIP ViT (timm layout: patch_embed.proj, cls_token, pos_embed, blocks.N, norm)
# ----------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) → (B, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d/h)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = ViTAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """BLIP's image encoder: all patch tokens plus CLS, final LayerNorm, no head."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        n = (cfg.image_size // cfg.patch) ** 2
        self.patch_embed = PatchEmbed(cfg.patch, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) → (B, 1 + N, D)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ----------------------------------------------------------------------------
# BLIP's BERT (med.py layout: embeddings, encoder.layer.N.{attention,crossattention,…})
# ----------------------------------------------------------------------------


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, h, L, D/h)
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        q, k, v = (
            self.split(self.query(x)),
            self.split(self.key(context)),
            self.split(self.value(context)),
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).flatten(2)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: TextConfig, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg, kv_width)
        self.output = BertSelfOutput(cfg, cfg.hidden_size)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return self.output(self.self(x, context, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # med_config's hidden_act "gelu": the exact erf form


class BertLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg, cfg.hidden_size)
        self.crossattention = BertAttention(cfg, cfg.encoder_width)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, mask)
        x = self.crossattention(x, image, None)  # every image token is attended to
        return self.output(self.intermediate(x), x)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) → (B, L, D)
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(positions))


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))


class BertModel(nn.Module):
    """med.py's BertModel without pooler, run in its 'multimodal' mode."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(
        self, ids: torch.Tensor, attention: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(ids)
        # med.py's additive mask: 0 where attended, −10000 on padding
        mask = ((1.0 - attention[:, None, None, :].to(x.dtype)) * -10000.0).to(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, mask, image)
        return x  # (B, L, D)


# ----------------------------------------------------------------------------
# ImageReward
# ----------------------------------------------------------------------------


class BLIP(nn.Module):
    def __init__(self, vision: VisionConfig, text: TextConfig) -> None:
        super().__init__()
        self.visual_encoder = VisionTransformer(vision)
        self.text_encoder = BertModel(text)


class ImageRewardNet(nn.Module):
    """BLIP encodes the caption with cross-attention to the image; the MLP scores its [CLS]."""

    MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward's standardisation

    def __init__(self, vision: VisionConfig, text: TextConfig) -> None:
        super().__init__()
        self.image_size = vision.image_size
        self.blip = BLIP(vision, text)
        self.mlp = ScoreHead(text.hidden_size)

    def forward(
        self, pixels: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        image = self.blip.visual_encoder(pixels)  # (B, 1 + N, Dv)
        cls = self.blip.text_encoder(ids, attention, image)[:, 0, :].float()  # (B, Dt)
        with torch.autocast(pixels.device.type, enabled=False):
            reward = self.mlp(cls)
        return (reward - self.MEAN) / self.STD


def vision_config_from(
    state: dict[str, torch.Tensor], prefix: str = "blip.visual_encoder."
) -> VisionConfig:
    """The ViT's sizes, read off its weights (heads: BLIP's 64-wide heads)."""
    width = state[prefix + "cls_token"].shape[-1]
    patch = state[prefix + "patch_embed.proj.weight"].shape[-1]
    n = state[prefix + "pos_embed"].shape[1] - 1
    depth = 1 + max(
        int(k[len(prefix + "blocks.") :].split(".")[0])
        for k in state
        if k.startswith(prefix + "blocks.")
    )
    return VisionConfig(
        width=width,
        depth=depth,
        heads=max(1, width // 64),
        patch=patch,
        image_size=math.isqrt(n) * patch,
    )
