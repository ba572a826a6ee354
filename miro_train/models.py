"""The MIRO model: text embedding, reward conditioner and backbone under one module, built
from a size registry of JSON configs (open_clip style) and a resolved, JSON-serialisable spec.

A spec is the registry config plus what the data decides: the reward names (empty for the
baseline), the text encoder (word vocabulary or Hugging Face id), and the image space (pixels,
or VAE latents with per-channel statistics). Checkpoints store the spec, so a model rebuilds
from its checkpoint alone.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from miro_data.common import MiroError
from miro_train.backbones import BACKBONES
from miro_train.conditioning import Conditioner, Conditioning
from miro_train.text import WordEmbedder

# ----------------------------------------------------------------------------
# Size registry
# ----------------------------------------------------------------------------


def list_models() -> list[str]:
    """Names of the shipped model configs (miro_train/configs/*.json)."""
    files = resources.files("miro_train").joinpath("configs").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".json"))


def model_config(name: str) -> dict[str, Any]:
    """A registry config by name, or a JSON file given by path."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.exists():
            raise MiroError(f"model config not found: {path}")
        text = path.read_text()
    elif name in list_models():
        text = resources.files("miro_train").joinpath(f"configs/{name}.json").read_text()
    else:
        raise MiroError(f"unknown model {name!r}; known: {', '.join(list_models())} (or a .json)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise MiroError(f"model config {name}: invalid JSON ({err})") from None
    if config.get("backbone") not in BACKBONES:
        raise MiroError(f"model config {name}: backbone must be one of {', '.join(BACKBONES)}")
    return {"name": Path(name).stem, **config}


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


class MiroModel(nn.Module):
    """Velocity model v(x_t, t, caption, rewards) with the MIRO conditioning sequence."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        cond, text, image = spec["conditioning"], spec["text"], spec["image"]
        self.reward_names: list[str] = list(spec["rewards"])
        self.words = (
            WordEmbedder(len(text["vocab"]), text["dim"], text["max_len"])
            if text["kind"] == "word"
            else None
        )
        self.conditioner = Conditioner(
            n_rewards=len(self.reward_names),
            text_dim=text["dim"],
            dim=cond["dim"],
            fourier_dim=cond.get("fourier_dim", 256),
            hidden=cond.get("hidden"),
            registers=cond.get("registers", 16),
            layers=cond.get("layers", 2),
            heads=cond.get("heads", 8),
            pool=cond.get("pool", False),
        )
        self.backbone = BACKBONES[spec["backbone"]](
            in_channels=image["channels"],
            input_size=image["size"],
            cond_dim=cond["dim"],
            pool_cond=cond.get("pool", False),
            **spec.get("backbone_args", {}),
        )

    @property
    def self_conditioning(self) -> bool:
        return bool(getattr(self.backbone, "self_conditioning", False))

    def condition(
        self, rewards: torch.Tensor | None, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> Conditioning:
        """Rewards (B, R) with NaN for missing; text as word ids (B, L) or embeddings (B, L, D)."""
        if self.words is not None:
            text, text_mask = self.words(text)
        assert text_mask is not None
        return self.conditioner(rewards if self.reward_names else None, text, text_mask)

    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.backbone(x, t, cond.tokens, cond.mask, cond.pooled, state)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        rewards: torch.Tensor | None,
        text: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        self_cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training forward. `self_cond` (B,) bool: which samples get a self-conditioning pass."""
        cond = self.condition(rewards, text, text_mask)
        state = None
        if self_cond is not None and self.self_conditioning:
            with torch.no_grad():  # RIN: latents of a first pass, stop-gradient
                _, state = self.velocity(x, t, cond.detach())
            state = state * self_cond.to(state.dtype)[:, None, None]  # type: ignore[union-attr]
        return self.velocity(x, t, cond, state)


def build_model(spec: dict[str, Any]) -> MiroModel:
    try:
        return MiroModel(spec)
    except (KeyError, TypeError, ValueError) as err:
        raise MiroError(f"model {spec.get('name')!r}: invalid configuration ({err})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
