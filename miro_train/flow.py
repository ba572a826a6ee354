"""Flow matching on one screen: the objective, the Euler sampler, multi-reward CFG.

Path: x_t = (1 − t)·x + t·ε, t = 0 data, t = 1 noise; the model predicts v = ε − x (an
x-predicting backbone's clean image is turned into v inside the model: `MiroModel.velocity`).
Training draws t from a logit-normal(0, 1), optionally shifted toward noise (SD3's
t ← s·t / (1 + (s − 1)·t)), with s constant or moving linearly over training, for the
whole batch or a share of it (the rest unshifted: high noise teaches colours, low noise
shapes). Sampling integrates dx/dt = v from t = 1 to 0 with Euler steps, x ← x − v·Δt.
Guidance contrasts two reward targets of the same caption, v̂ = v(s⁺) + ω·(v(s⁺) − v(s⁻)),
and optionally the caption against none (a model trained with caption dropout):
+ ω_c·(v(s⁺) − v(s⁺, ∅)); every branch in one batched forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from miro_train.conditioning import Conditioning, ConditioningInput

# velocity(x, t, state) → (v, state); `state` carries RIN's latent self-conditioning.
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple]


def logit_normal(
    n: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    shift: float = 1.0,
    share: float = 1.0,
) -> torch.Tensor:
    """(n,) times sigmoid(N(0, 1)): most at mid noise; `shift` > 1 moves the first
    round(share·n) of them toward noise (a batch is shuffled, so which ones does not matter)."""
    t = torch.sigmoid(torch.randn(n, device=device, generator=generator))
    if shift == 1.0:
        return t
    shifted = shift * t / (1 + (shift - 1) * t)
    k = round(share * n)
    return shifted if k == n else torch.cat([shifted[:k], t[k:]])


def shift_at(step: int, total: int, start: float, end: float | None) -> float:
    """The time shift at `step` of `total`: `start` throughout, or linear from `start` to `end`."""
    if end is None or total <= 1:
        return start
    return start + (end - start) * min(1.0, step / (total - 1))


def flow_loss(
    model: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
    x: torch.Tensor,
    cond: ConditioningInput,
    *,
    generator: torch.Generator | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    self_cond_rate: float = 0.0,
    time_shift: float = 1.0,
    time_shift_share: float = 1.0,
    per_sample: bool = False,
) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity ε − x (per sample, (B,),
    with `per_sample`).

    `model(x_t, t, cond, self_cond=…)` is a `MiroModel` (or its DDP wrapper); t and noise are
    drawn from `generator` unless given (measurements that compare models at fixed t pass them).
    """
    b = x.shape[0]
    if t is None:
        t = logit_normal(b, x.device, generator, time_shift, time_shift_share)
    noise = torch.randn(x.shape, device=x.device, generator=generator) if noise is None else noise
    texp = t.view(b, *([1] * (x.ndim - 1)))
    xt = (1 - texp) * x + texp * noise
    keep = None
    if self_cond_rate > 0:
        keep = torch.rand(b, device=x.device, generator=generator) < self_cond_rate
    v, _ = model(xt, t, cond, self_cond=keep)
    error = (v.float() - (noise - x).float()).pow(2)
    return error.flatten(1).mean(1) if per_sample else error.mean()


@torch.no_grad()
def euler(velocity: Velocity, noise: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """Integrate from t = 1 (noise) to t = 0 in `steps` equal Euler steps."""
    ts = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    x, state = noise, None
    for i in range(steps):
        t = ts[i].expand(x.shape[0])
        v, state = velocity(x, t, state)
        x = x - v.to(x.dtype) * (ts[i] - ts[i + 1])
    return x


class VelocityModel(Protocol):
    """What the sampler needs of a model (MiroModel): one backbone call on built conditioning."""

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def guided_velocity(
    model: VelocityModel,
    positive: Conditioning,
    negative: Conditioning | None,
    omega: float,
    interval: Sequence[float] = (0.0, 1.0),
    *,
    uncaptioned: Conditioning | None = None,
    caption_omega: float = 0.0,
) -> Velocity:
    """v(s⁺) + ω (v(s⁺) − v(s⁻)) + ω_c (v(s⁺) − v(s⁺, no caption)) at noise levels t in
    `interval` (1 = pure noise), v(s⁺) elsewhere; every branch stacked into one forward.

    The reward contrast needs `negative`, the caption contrast `uncaptioned` (the same rewards
    without the caption, as caption dropout trains). With ω = ω_c = 0 it is the plain
    conditional velocity, one forward of the batch. Guidance limited to part of the trajectory
    (Kynkäänniemi et al., 2024) keeps what it does at the noise levels that decide the content
    and drops what it costs at the others.
    """
    contrasts = [(c, w) for c, w in ((negative, omega), (uncaptioned, caption_omega))
                 if c is not None and w != 0]  # fmt: skip
    if not contrasts:
        return lambda x, t, state: model.velocity(x, t, positive, state)
    branches = Conditioning.cat(positive, *(c for c, _ in contrasts))
    k = 1 + len(contrasts)
    low, high = interval

    def velocity(x: torch.Tensor, t: torch.Tensor, state: torch.Tensor | None) -> tuple:
        # every branch runs outside the interval too: the self-conditioning state is per branch
        v, state = model.velocity(torch.cat([x] * k), torch.cat([t] * k), branches, state)
        v_pos, *v_others = v.chunk(k)  # (B, C, H, W) each
        inside = ((t >= low) & (t <= high)).to(v_pos.dtype).view(-1, *[1] * (v_pos.ndim - 1))
        push = sum(w * (v_pos - v_o) for (_, w), v_o in zip(contrasts, v_others, strict=True))
        return v_pos + inside * push, state

    return velocity
