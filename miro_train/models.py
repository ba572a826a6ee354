"""The MIRO model: text embedding, reward conditioner and backbone under one module, built
from a size registry of JSON configs (open_clip style) completed into a `spec.ModelSpec`.

The registry config says the architecture; the spec adds what the data decides (reward names,
text side, image space, bin-edge version) and is what a checkpoint stores, so a model rebuilds
from its checkpoint alone.
"""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from miro_data.checks import check_choice, check_finite, check_int, check_nonempty_text
from miro_data.common import MiroError
from miro_train.backbones import BACKBONES
from miro_train.conditioning import Conditioner, Conditioning, ConditioningInput
from miro_train.spec import PREDICTIONS, ModelSpec
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
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MiroError(f"model config {path} is not UTF-8 text") from None
    elif name in list_models():
        text = resources.files("miro_train").joinpath(f"configs/{name}.json").read_text()
    else:
        raise MiroError(f"unknown model {name!r}; known: {', '.join(list_models())} (or a .json)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise MiroError(f"model config {name}: invalid JSON ({err})") from None
    check_model_config(name, config)
    return {"name": Path(name).stem, **config}


# What a registry config may hold, section by section: key → type (None: may be null).
_SECTIONS: dict[str, dict[str, tuple]] = {
    "conditioning": {
        "dim": (int,), "fourier_dim": (int,), "hidden": (int, None), "registers": (int,),
        "layers": (int,), "heads": (int,), "pool": (bool,),
    },
    "text": {"kind": ("word", "hf"), "name": (str,), "dim": (int,), "max_len": (int,)},
    "image": {
        "space": ("pixel", "latent"), "resolution": (int,), "vae": (str, None),
        "vae_subfolder": (str, None),
    },
}  # fmt: skip
_TOP_KEYS = {"name", "summary", "backbone", "backbone_args", "prediction", *_SECTIONS}
_MAY_BE_ZERO = {"registers", "layers", "attn_levels"}  # counts that may be 0, level indices
_BUILT_IN = {"in_channels", "input_size", "cond_dim", "pool_cond"}  # set from the spec


def _backbone_types(backbone: str) -> dict[str, tuple]:
    """A backbone's own arguments, typed by their defaults."""
    params = inspect.signature(BACKBONES[backbone].__init__).parameters
    return {k: (type(p.default),) for k, p in params.items() if k != "self" and k not in _BUILT_IN}


def _check_value(where: str, key: str, value: Any, allowed: tuple) -> None:
    if value is None and None in allowed:
        return
    kind = allowed[0]
    low = 0 if key in _MAY_BE_ZERO else 1
    if isinstance(kind, str):  # a fixed set of values
        check_choice(where, value, [a for a in allowed if a is not None])
    elif kind is bool:
        if not isinstance(value, bool):
            raise MiroError(f"{where} must be true or false, not {value!r}")
    elif kind is int:
        check_int(where, value, low)
    elif kind is float:
        check_finite(where, value, 0, open_low=True)
    elif kind is tuple:
        if not isinstance(value, list) or not value:
            raise MiroError(f"{where} must be a non-empty list of integers, not {value!r}")
        for item in value:
            check_int(where, item, low)
    else:  # str
        check_nonempty_text(where, value)


def check_model_config(name: str, config: Any) -> None:
    """Types, signs and key names of a registry config, so a typo fails here in one line."""
    if not isinstance(config, dict):
        raise MiroError(f"model config {name}: expected a JSON object")
    if config.get("backbone") not in BACKBONES:
        raise MiroError(f"model config {name}: backbone must be one of {', '.join(BACKBONES)}")
    sections = {**_SECTIONS, "backbone_args": _backbone_types(config["backbone"])}
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise MiroError(f"model config {name}: unknown key(s) {', '.join(sorted(unknown))}")
    if "prediction" in config:
        check_choice(f"model config {name}: prediction", config["prediction"], PREDICTIONS)
    text = config.get("text") or {}
    if isinstance(text, dict) and text.get("kind") == "hf" and "name" not in text:
        raise MiroError(f"model config {name}: text.name is required with text.kind hf")
    if "dim" not in (config.get("conditioning") or {}):
        raise MiroError(f"model config {name}: conditioning.dim is required")
    for section, types in sections.items():
        values = config.get(section, {})
        if not isinstance(values, dict):
            raise MiroError(f"model config {name}: {section} must be a JSON object")
        for key, value in values.items():
            if key not in types:
                raise MiroError(
                    f"model config {name}: unknown key {section}.{key}; known: {', '.join(types)}"
                )
            _check_value(f"model config {name}: {section}.{key}", key, value, types[key])


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


# An x-predicting backbone's velocity is (x_t − x̂) / t, which divides its error by t: the
# clamp bounds that near the data (t → 0), as JiT does (Li & He, "Back to Basics", 2025).
X_PREDICTION_MIN_T = 0.05


class MiroModel(nn.Module):
    """Velocity model v(x_t, t, caption, rewards) with the MIRO conditioning sequence (its
    backbone predicting v, or the clean image x̂, which `velocity` turns into v)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        cond, text, image = spec.conditioning, spec.text, spec.image
        self.reward_names: list[str] = list(spec.rewards)
        self.words = (
            WordEmbedder(len(text.vocab), text.dim, text.max_len) if text.kind == "word" else None
        )
        self.conditioner = Conditioner(
            n_rewards=len(self.reward_names),
            text_dim=text.dim,
            dim=cond.dim,
            fourier_dim=cond.fourier_dim,
            hidden=cond.hidden,
            registers=cond.registers,
            layers=cond.layers,
            heads=cond.heads,
            pool=cond.pool,
        )
        self.backbone = BACKBONES[spec.backbone.kind](
            in_channels=image.channels,
            input_size=image.size,
            cond_dim=cond.dim,
            pool_cond=cond.pool,
            **spec.backbone.kwargs(),
        )

    @property
    def self_conditioning(self) -> bool:
        return bool(getattr(self.backbone, "self_conditioning", False))

    def condition(self, inputs: ConditioningInput) -> Conditioning:
        """The conditioning sequence of a batch (reward values with NaN for missing, caption)."""
        text, text_mask = inputs.text, inputs.text_mask
        if self.words is not None:
            text, text_mask = self.words(text)
        assert text_mask is not None
        return self.conditioner(inputs.rewards if self.reward_names else None, text, text_mask)

    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, state = self.backbone(x, t, cond.tokens, cond.mask, cond.pooled, state)
        if self.spec.prediction == "x":  # out is the clean image x̂; x_t = x̂ + t·v
            t_min = t.clamp_min(X_PREDICTION_MIN_T).view(-1, *([1] * (x.ndim - 1)))
            out = (x - out) / t_min
        return out, state

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        inputs: ConditioningInput,
        self_cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training forward. `self_cond` (B,) bool: which samples get a self-conditioning pass."""
        cond = self.condition(inputs)
        state = None
        if self_cond is not None and self.self_conditioning:
            with torch.no_grad():  # RIN: latents of a first pass, stop-gradient
                _, first = self.velocity(x, t, cond.detach())
            assert first is not None  # a self-conditioning backbone returns its latents
            state = first * self_cond.to(first.dtype)[:, None, None]
        return self.velocity(x, t, cond, state)


def build_model(spec: ModelSpec) -> MiroModel:
    try:
        return MiroModel(spec)
    except (KeyError, TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise MiroError(f"model {spec.name!r}: invalid configuration ({err})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
