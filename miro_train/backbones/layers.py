"""Building blocks shared by the backbones: embeddings, attention, MLPs, adaLN modulation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) times in [0, 1] → (B, dim) sinusoidal features (t scaled by 1000, as in DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        first: nn.Linear = self.mlp[0]  # type: ignore[assignment]  # Sequential indexes to Module
        return self.mlp(timestep_embedding(t, self.freq_dim).to(first.weight.dtype))


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """(grid², dim) fixed 2-D sine-cosine position embedding (MAE / DiT)."""
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    quarter = dim // 4
    omega = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    parts = []
    for pos in (yy.flatten(), xx.flatten()):
        out = pos[:, None] * omega[None]
        parts += [torch.sin(out), torch.cos(out)]
    return torch.cat(parts, dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) scaled and shifted by per-sample (B, D) vectors."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Mlp(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, dim: int, ratio: float = 4.0, out_dim: int | None = None) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Attention(nn.Module):
    """Multi-head attention of queries x over keys/values ctx (self-attention when ctx is None).

    `mask` (B, M) is True where a key is real; padded text tokens are False.
    """

    def __init__(self, dim: int, heads: int, ctx_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(ctx_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        ctx = x if ctx is None else ctx
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, d/h)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, M)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer layer: self-attention and MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention of x over ctx, then an MLP, each residual (RIN read/write)."""

    def __init__(self, dim: int, ctx_dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_x, self.norm_ctx, self.norm2 = (
            nn.LayerNorm(dim),
            nn.LayerNorm(ctx_dim),
            nn.LayerNorm(dim),
        )
        self.attn = Attention(dim, heads, ctx_dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm_x(x), self.norm_ctx(ctx), mask)
        return x + self.mlp(self.norm2(x))
