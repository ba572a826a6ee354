"""DiT (Peebles & Xie, 2023) with adaLN-zero, plus cross-attention to the conditioning tokens."""

from __future__ import annotations

import torch
from torch import nn

from miro_train.backbones.layers import Attention, Mlp, TimestepEmbedder, modulate, sincos_2d


class DiTBlock(nn.Module):
    """adaLN-zero self-attention, cross-attention to the conditioning, adaLN-zero MLP."""

    def __init__(self, width: int, heads: int, cond_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.cross = Attention(width, heads, cond_dim)
        self.mlp = Mlp(width, mlp_ratio)
        ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(ada.weight)  # adaLN-zero: every block starts as the identity
        nn.init.zeros_(ada.bias)
        self.ada = nn.Sequential(nn.SiLU(), ada)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(emb).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross(self.norm2(x), cond, mask)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm3(x), shift2, scale2))


class DiT(nn.Module):
    """Patchify → DiT blocks → adaLN final layer → unpatchify."""

    self_conditioning = False

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        cond_dim: int,
        patch: int = 2,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        pool_cond: bool = False,
    ) -> None:
        super().__init__()
        if input_size % patch:
            raise ValueError(f"input size {input_size} is not a multiple of patch {patch}")
        self.patch, self.channels, self.grid = patch, in_channels, input_size // patch
        self.x_embed = nn.Conv2d(in_channels, width, patch, stride=patch)
        self.register_buffer("pos", sincos_2d(width, self.grid)[None], persistent=False)
        self.t_embed = TimestepEmbedder(width)
        self.pool = nn.Linear(cond_dim, width) if pool_cond else None
        self.blocks = nn.ModuleList(
            DiTBlock(width, heads, cond_dim, mlp_ratio) for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        final_ada = nn.Linear(width, 2 * width)
        self.final_ada = nn.Sequential(nn.SiLU(), final_ada)
        self.final = nn.Linear(width, patch * patch * in_channels)
        for layer in (final_ada, self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        pooled: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        b = x.shape[0]
        h = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, W)
        emb = self.t_embed(t)  # (B, W)
        if self.pool is not None and pooled is not None:
            emb = emb + self.pool(pooled)
        for block in self.blocks:
            h = block(h, emb, cond, cond_mask)
        shift, scale = self.final_ada(emb).chunk(2, dim=1)
        h = self.final(modulate(self.final_norm(h), shift, scale))  # (B, N, p²·C)
        p, g = self.patch, self.grid
        h = h.view(b, g, g, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, self.channels, g * p, g * p), None
