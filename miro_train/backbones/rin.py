"""RIN (Jabri, Fleet & Chen, 2023) as MIRO uses it: a patch interface, a small set of latents
where most compute happens, read/write cross-attention, and latent self-conditioning.

Each block: the latents read the conditioning sequence ([time | rewards | registers | text]),
read the interface, process with self-attention, and write back to the interface. With
self-conditioning, the latents of a previous pass (stop-gradient) initialise this pass.
"""

from __future__ import annotations

import torch
from torch import nn

from miro_train.backbones.layers import (
    CrossAttentionBlock,
    Mlp,
    SelfAttentionBlock,
    TimestepEmbedder,
)


class RINBlock(nn.Module):
    """Read conditioning → read interface → process latents → write interface."""

    def __init__(
        self, data_dim: int, latent_dim: int, layers: int, rw_heads: int, heads: int, mlp: float
    ) -> None:
        super().__init__()
        self.read_cond = CrossAttentionBlock(latent_dim, latent_dim, rw_heads, mlp)
        self.read = CrossAttentionBlock(latent_dim, data_dim, rw_heads, mlp)
        self.process = nn.ModuleList(
            SelfAttentionBlock(latent_dim, heads, mlp) for _ in range(layers)
        )
        self.write = CrossAttentionBlock(data_dim, latent_dim, rw_heads, mlp)

    def forward(
        self, data: torch.Tensor, z: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.read_cond(z, cond, mask)
        z = self.read(z, data)
        for layer in self.process:
            z = layer(z)
        return self.write(data, z), z


class RIN(nn.Module):
    """Recurrent Interface Network backbone; returns (velocity, latents for self-conditioning)."""

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        cond_dim: int,
        patch: int = 2,
        data_dim: int = 512,
        latents: int = 256,
        latent_dim: int = 1024,
        blocks: int = 4,
        layers: int = 4,
        rw_heads: int = 16,
        heads: int = 32,
        mlp_ratio: float = 4.0,
        self_conditioning: bool = True,
        pool_cond: bool = False,
    ) -> None:
        super().__init__()
        if input_size % patch:
            raise ValueError(f"input size {input_size} is not a multiple of patch {patch}")
        self.patch, self.channels, self.grid = patch, in_channels, input_size // patch
        self.self_conditioning = self_conditioning
        self.patch_in = nn.Linear(in_channels * patch * patch, data_dim)
        self.data_norm = nn.LayerNorm(data_dim)
        self.data_pos = nn.Parameter(torch.zeros(self.grid**2, data_dim))
        self.latents = nn.Parameter(torch.zeros(latents, latent_dim))
        self.t_embed = TimestepEmbedder(latent_dim)
        self.pool = nn.Linear(cond_dim, latent_dim) if pool_cond else None
        self.cond_in = nn.Linear(cond_dim, latent_dim) if cond_dim != latent_dim else nn.Identity()
        if self_conditioning:
            self.prev_norm = nn.LayerNorm(latent_dim)
            self.prev_mlp = Mlp(latent_dim, mlp_ratio)
            self.prev_out = nn.LayerNorm(latent_dim)
            nn.init.zeros_(self.prev_out.weight)  # a no-op at initialisation
            nn.init.zeros_(self.prev_out.bias)
        self.blocks = nn.ModuleList(
            RINBlock(data_dim, latent_dim, layers, rw_heads, heads, mlp_ratio)
            for _ in range(blocks)
        )
        self.out_norm = nn.LayerNorm(data_dim)
        self.out = nn.Linear(data_dim, in_channels * patch * patch)
        for p in (self.data_pos, self.latents):
            nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        pooled: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, p, g = x.shape[0], self.patch, self.grid
        patches = x.view(b, self.channels, g, p, g, p).permute(0, 2, 4, 3, 5, 1)
        data = self.data_norm(self.patch_in(patches.reshape(b, g * g, -1))) + self.data_pos
        emb = self.t_embed(t)  # (B, Dz)
        if self.pool is not None and pooled is not None:
            emb = emb + self.pool(pooled)
        z = self.latents.unsqueeze(0) + emb.unsqueeze(1)  # (B, L, Dz)
        if self.self_conditioning and state is not None:
            z = z + self.prev_out(state + self.prev_mlp(self.prev_norm(state)))
        cond = torch.cat([emb.unsqueeze(1), self.cond_in(cond)], dim=1)  # (B, 1 + M, Dz)
        mask = torch.cat([cond_mask.new_ones(b, 1), cond_mask], dim=1)
        for block in self.blocks:
            data, z = block(data, z, cond, mask)
        out = self.out(self.out_norm(data)).view(b, g, g, p, p, self.channels)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(b, self.channels, g * p, g * p), z
