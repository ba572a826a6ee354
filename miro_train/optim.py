"""Optimisers (AdamW, LAMB), the warmup + cosine schedule and the EMA of the weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from miro_data.common import MiroError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and embeddings; none on biases and norm gains (MIRO's recipe)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2020): Adam moments, update scaled per tensor by ‖w‖ / ‖update‖."""

    def __init__(
        self,
        params: list[dict] | list[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        # The fused kernel runs on CPU and CUDA, one pass over all tensors instead of ~10.
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas)
    raise MiroError(f"unknown optimizer {name!r}; use adamw or lamb")


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to `min_ratio`·base at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Ema:
    """Exponential moving average of a model's parameters, with the usual warmup of the decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema: list[torch.Tensor] = list(self.model.parameters())
        src = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, src, 1 - decay)
