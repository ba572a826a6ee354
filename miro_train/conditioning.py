"""The conditioning sequence MIRO's backbone reads: `[reward tokens | registers | text tokens]`.

Each reward's normalised bin value goes through random Fourier features and its own MLP, plus
a learned per-reward position embedding, to become one token; a reward whose value is missing
(NaN, from a `null` in the shards) gets its learned "missing" embedding instead. The tokens,
learned registers and projected text tokens pass through two self-attention layers
(METHOD.md). The baseline model is the same with zero reward tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from miro_train.backbones.layers import SelfAttentionBlock


@dataclass(frozen=True)
class ConditioningInput:
    """What a model is conditioned on, per sample: the input of `MiroModel.condition` and of
    `flow.flow_loss`. Built by `Codec.inputs` from a training batch, by `sample.generate` from
    prompts and reward targets."""

    rewards: torch.Tensor | None  # (B, R) normalised bin values, NaN = missing; None: baseline
    text: torch.Tensor  # word ids (B, L), or frozen-encoder embeddings (B, L, D)
    text_mask: torch.Tensor | None = None  # (B, L) with embeddings; word ids make their own

    def __getitem__(self, index: slice) -> ConditioningInput:
        """Some samples of the batch, e.g. one rank's part of it."""
        mask = None if self.text_mask is None else self.text_mask[index]
        rewards = None if self.rewards is None else self.rewards[index]
        return ConditioningInput(rewards, self.text[index], mask)

    def without_caption(self, drop: torch.Tensor) -> ConditioningInput:
        """The same inputs with the caption of the samples where `drop` (B,) is true removed:
        word ids all padding, or embeddings zero and masked out. Training with caption dropout
        teaches this "no caption" input; caption guidance contrasts against it."""
        if self.text_mask is None:  # word ids: padding (id 0) is what an empty caption encodes to
            text = self.text.masked_fill(drop[:, None], 0)
            return ConditioningInput(self.rewards, text)
        keep = ~drop[:, None]  # (B, 1)
        text = self.text * keep[..., None].to(self.text.dtype)
        return ConditioningInput(self.rewards, text, self.text_mask.bool() & keep)


@dataclass
class Conditioning:
    """What the backbone reads: tokens (B, M, D), key mask (B, M), pooled summary (B, D) or None."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor | None = None

    @staticmethod
    def cat(*parts: Conditioning) -> Conditioning:
        """Stack conditionings along the batch (every CFG branch in one forward)."""
        pooled = None
        if parts[0].pooled is not None:
            pooled = torch.cat([p.pooled for p in parts])  # type: ignore[misc]
        tokens = torch.cat([p.tokens for p in parts])
        return Conditioning(tokens, torch.cat([p.mask for p in parts]), pooled)

    def detach(self) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled.detach()
        return Conditioning(self.tokens.detach(), self.mask, pooled)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar in [0, 1]: [cos 2πwv, sin 2πwv], w ~ N(0, σ²)."""

    def __init__(self, dim: int, sigma: float = 16.0) -> None:
        super().__init__()
        self.freqs: torch.Tensor
        self.register_buffer("freqs", torch.randn(dim // 2) * sigma)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        args = 2 * math.pi * v[..., None] * self.freqs  # (..., dim/2)
        return torch.cat([args.cos(), args.sin()], dim=-1)


class RewardTokens(nn.Module):
    """(B, R) reward values, NaN where missing → (B, R, D) tokens."""

    def __init__(self, n_rewards: int, dim: int, fourier_dim: int, hidden: int) -> None:
        super().__init__()
        self.fourier = FourierFeatures(fourier_dim)
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(fourier_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
            for _ in range(n_rewards)
        )
        self.position = nn.Parameter(torch.randn(n_rewards, dim) * 0.02)
        self.missing = nn.Parameter(torch.randn(n_rewards, dim) * 0.02)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        missing = values.isnan()  # (B, R)
        feats = self.fourier(values.nan_to_num(0.0).float())  # (B, R, F)
        tokens = torch.stack([mlp(feats[:, r]) for r, mlp in enumerate(self.mlps)], dim=1)
        tokens = torch.where(missing[..., None], self.missing.to(tokens.dtype), tokens)
        return tokens + self.position  # (B, R, D)


class Conditioner(nn.Module):
    """Builds the conditioning sequence and mixes it with two self-attention layers."""

    def __init__(
        self,
        n_rewards: int,
        text_dim: int,
        dim: int,
        fourier_dim: int = 256,
        hidden: int | None = None,
        registers: int = 16,
        layers: int = 2,
        heads: int = 8,
        pool: bool = False,
    ) -> None:
        super().__init__()
        self.n_rewards = n_rewards
        self.rewards = (
            RewardTokens(n_rewards, dim, fourier_dim, hidden or dim) if n_rewards else None
        )
        self.registers = nn.Parameter(torch.randn(registers, dim) * 0.02)
        self.text_proj = nn.Linear(text_dim, dim)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.pool = pool

    def forward(
        self, rewards: torch.Tensor | None, text: torch.Tensor, text_mask: torch.Tensor
    ) -> Conditioning:
        b = text.shape[0]
        parts = [self.registers.unsqueeze(0).expand(b, -1, -1)]  # (B, G, D)
        if self.rewards is not None:
            if rewards is None or rewards.shape != (b, self.n_rewards):
                raise ValueError(f"expected ({b}, {self.n_rewards}) reward values")
            parts.insert(0, self.rewards(rewards))  # (B, R, D)
        fixed = sum(p.shape[1] for p in parts)
        tokens = torch.cat([*parts, self.text_proj(text.to(self.registers.dtype))], dim=1)
        mask = torch.cat([text_mask.new_ones(b, fixed), text_mask.bool()], dim=1)  # (B, M)
        for block in self.blocks:
            tokens = block(tokens, mask)
        tokens = self.norm(tokens)
        pooled = tokens[:, :fixed].mean(dim=1) if self.pool else None  # rewards + registers
        return Conditioning(tokens, mask, pooled)
