"""The rewards built on open_clip towers: `aesthetic`, `clip` and `hpsv2`.

- `clip`: 100 × cosine(image, caption), any open_clip model (default ViT-L-14 / openai).
  Options: model, pretrained, checkpoint, quick_gelu, batch_size, hf_home.
- `aesthetic`: the LAION improved aesthetic predictor, an MLP on the L2-normalised CLIP
  ViT-L/14 image embedding (`sac+logos+ava1-l14-linearMSE.pth`). Options: model, pretrained,
  clip_checkpoint, quick_gelu, checkpoint (the MLP), repo, batch_size, hf_home.
- `hpsv2`: HPS v2.1 (or v2.0): open_clip ViT-H-14 built without pretrained weights, then the
  HPS checkpoint; cosine of the normalised embeddings; images letterboxed as HPSv2 does.
  Options: version, checkpoint, repo, model, batch_size, hf_home.

`clip` and `aesthetic` with the same CLIP weights share one loaded model and encode each image
once (`FeatureCache`). Every model is built with random initialisation and then loaded strictly
from a file found by `weights.resolve`; open_clip never downloads anything here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from torch import nn

from miro_data.common import MiroError
from miro_data.rewards import catalog, imageops
from miro_data.rewards.base import RewardContext
from miro_data.rewards.torch_reward import FeatureCache, ScoreHead, TorchReward, shared
from miro_data.rewards.weights import (
    inputs_digest,
    load_state_dict,
    load_strict,
    present,
    resolve,
    short_digest,
)

# ----------------------------------------------------------------------------
# A loaded open_clip model with its tokenizer and exact preprocessing
# ----------------------------------------------------------------------------


@dataclass
class OpenClip:
    """An open_clip CLIP in eval mode on its device, with what it takes to feed it."""

    model: Any  # an open_clip CLIP (encode_image / encode_text)
    tokenizer: Any
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str  # shortest | squash | letterbox (HPSv2)
    version: str
    device: torch.device

    def __post_init__(self) -> None:
        self.features = FeatureCache()

    @classmethod
    def from_model(
        cls,
        net: Any,  # an open_clip CLIP
        arch: str,
        preprocess: dict,
        version: str,
        device: torch.device,
        resize_mode: str | None = None,
    ) -> OpenClip:
        """Wrap a built open_clip model (weights loaded or, for benchmarks, random)."""
        net.eval().requires_grad_(False).to(device)
        size = net.visual.image_size
        return cls(
            model=net,
            tokenizer=open_clip.get_tokenizer(arch),
            size=int(size[0] if isinstance(size, tuple | list) else size),
            mean=tuple(preprocess.get("mean", imageops.OPENAI_MEAN)),
            std=tuple(preprocess.get("std", imageops.OPENAI_STD)),
            interpolation=preprocess.get("interpolation", "bicubic"),
            resize_mode=resize_mode or preprocess.get("resize_mode", "shortest"),
            version=version,
            device=device,
        )

    def pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, 3, S, S) float32 normalised pixels, as the model's reference pipeline makes them."""
        if self.resize_mode == "letterbox":
            tiles = [
                imageops.letterbox(
                    imageops.to_unit_float(imageops.to_chw(im, self.device)), self.size
                )
                for im in images
            ]
            return imageops.normalize(torch.stack(tiles), self.mean, self.std)
        resize = (
            imageops.resize_squash
            if self.resize_mode == "squash"
            else imageops.resize_shortest_center_crop
        )
        crops = [resize(im, self.size, self.interpolation, self.device) for im in images]
        batch = imageops.to_device(torch.stack(crops), self.device)
        return imageops.normalize(imageops.to_unit_float(batch), self.mean, self.std)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def image_features(self, images: list[np.ndarray]) -> torch.Tensor:
        """(n, D) L2-normalised image embeddings, each image encoded once per process."""
        return self.features.encode(images, lambda ims: self.encode_pixels(self.pixels(ims)))

    def tokens(self, captions: list[str]) -> torch.Tensor:
        return imageops.to_device(self.tokenizer(captions), self.device)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _unwrap(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the `module.` prefix a DistributedDataParallel checkpoint carries."""
    if state and all(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


class _NoRandomInitWarning(logging.Filter):
    """open_clip warns on the root logger that a model built without weights is random; ours
    get their weights right after, so the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def build_open_clip(arch: str, quick_gelu: bool = False) -> nn.Module:
    """An open_clip architecture (a built-in name or `local-dir:`), randomly initialised."""
    quiet = _NoRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        return open_clip.create_model(arch, force_quick_gelu=quick_gelu, load_weights=False)
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        raise MiroError(f"open_clip cannot build {arch!r}: {err}") from None
    finally:
        logging.getLogger().removeFilter(quiet)


def load_open_clip(
    reward: str,
    ctx: RewardContext,
    device: torch.device,
    files: list,
    model: str,
    pretrained: str | None,
    quick_gelu: bool | None = None,
    resize_mode: str | None = None,
    hf_home: str | None = None,
) -> OpenClip:
    """Resolve, build and strictly load an open_clip model, once per (weights, device)."""
    paths = resolve(reward, files, hf_home)
    weights = paths[-1]
    digest = short_digest(weights)
    key = ("open_clip", model, digest, str(device), quick_gelu, resize_mode)

    def build() -> OpenClip:
        inputs: list[Path] = []
        gelu: bool | None = None
        if model.startswith("hf-hub:"):
            arch = f"local-dir:{paths[0].parent}"  # the snapshot folder: config and tokenizer
            preprocess = json.loads(paths[0].read_text()).get("preprocess_cfg", {})
            inputs = [paths[0], *present(paths[0].parent)]  # the config holds QuickGELU
            net = build_open_clip(arch)
        else:
            arch = model
            preprocess = dict(open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {})
            gelu = preprocess.get("quick_gelu", False) if quick_gelu is None else flag(quick_gelu)
            net = build_open_clip(model, gelu)
        mode, interpolation = (
            preprocess.get("resize_mode", "shortest"),
            preprocess.get("interpolation", "bicubic"),
        )
        if mode not in ("shortest", "squash") or interpolation not in ("bicubic", "bilinear"):
            raise MiroError(
                f"reward {reward!r}: {model} preprocesses with {mode}/{interpolation}; "
                "supported: shortest or squash resizing, bicubic or bilinear"
            )
        load_strict(net, _unwrap(load_state_dict(weights, key="state_dict")), weights)
        clip = OpenClip.from_model(net, arch, preprocess, "", device, resize_mode)
        # Everything besides the weights that moves a score: the architecture (with its
        # tokenizer settings), QuickGELU, and the exact preprocessing.
        model_cfg = None if inputs else open_clip.get_model_config(model)
        values = {
            "model_cfg": model_cfg,  # a config's own quick_gelu wins over the option
            "quick_gelu": gelu and not (model_cfg or {}).get("quick_gelu", False),
            "preprocess": [clip.size, clip.mean, clip.std, clip.interpolation, clip.resize_mode],
        }
        clip.version = f"{Path(model).name}@{digest}+cfg@{inputs_digest(inputs, values)}"
        return clip

    return shared(ctx, key, build)


def flag(value: object) -> bool:
    """An on/off option given as a bool or as text (`--reward-option clip.quick_gelu=yes`)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise MiroError(f"expected true or false, got {value!r}")
    return text in ("true", "yes", "1")


# ----------------------------------------------------------------------------
# The rewards
# ----------------------------------------------------------------------------


class ClipScore(TorchReward):
    """100 × cosine similarity of CLIP image and caption embeddings."""

    name = "clip"
    OPTIONS = catalog.CLIP_OPTIONS
    CUDA_BATCH = 256

    def __init__(self, ctx: RewardContext | None = None, clip: OpenClip | None = None) -> None:
        super().__init__(ctx)
        o = self.options
        self.clip = clip or load_open_clip(
            self.name,
            self.ctx,
            self.device,
            catalog.clip_files(o),
            o.get("model", "ViT-L-14"),
            o.get("pretrained", "openai"),
            o.get("quick_gelu"),
            hf_home=self.hf_home,
        )
        self.version = self.clip.version

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        return {"pixels": self.clip.pixels(images), "tokens": self.clip.tokens(captions)}

    def forward(self, batch: dict) -> torch.Tensor:
        image = self.clip.encode_pixels(batch["pixels"])
        return 100.0 * (image * self.clip.encode_tokens(batch["tokens"])).sum(-1)

    def _score(self, images: list[np.ndarray], captions: list[str]) -> torch.Tensor:
        image = self.clip.image_features(images)  # shared with `aesthetic`
        text = self.clip.encode_tokens(self.clip.tokens(captions))
        return 100.0 * (image * text).sum(-1)


class Aesthetic(TorchReward):
    """LAION aesthetic predictor on the normalised CLIP ViT-L/14 image embedding (≈1–10)."""

    name = "aesthetic"
    OPTIONS = catalog.AESTHETIC_OPTIONS
    CUDA_BATCH = 256

    def __init__(
        self,
        ctx: RewardContext | None = None,
        clip: OpenClip | None = None,
        mlp: ScoreHead | None = None,
    ) -> None:
        super().__init__(ctx)
        if clip is not None and mlp is not None:
            self.clip, self.mlp = clip, mlp.eval().requires_grad_(False).to(self.device)
            self.version = f"{clip.version}+mlp"
            return
        o = self.options
        files = catalog.aesthetic_files(o)
        mlp_path = resolve(self.name, files, self.hf_home)[-1]
        self.clip = load_open_clip(
            self.name,
            self.ctx,
            self.device,
            files[:-1],
            o.get("model", "ViT-L-14"),
            o.get("pretrained", "openai"),
            o.get("quick_gelu"),
            hf_home=self.hf_home,
        )
        state = load_state_dict(mlp_path)
        if "layers.0.weight" not in state:
            raise MiroError(f"checkpoint {mlp_path} is not an aesthetic MLP (no layers.0.weight)")
        dim = state["layers.0.weight"].shape[1]
        embed = getattr(self.clip.model.visual, "output_dim", dim)
        if dim != embed:
            raise MiroError(
                f"aesthetic MLP {mlp_path} takes {dim}-d embeddings; the CLIP model gives {embed}"
            )
        self.mlp = ScoreHead(dim)
        load_strict(self.mlp, state, mlp_path)
        self.mlp.eval().requires_grad_(False).to(self.device)
        self.version = f"{self.clip.version}+mlp@{short_digest(mlp_path)}"

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        return {"pixels": self.clip.pixels(images)}

    def head(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return self.mlp(features.float())

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.clip.encode_pixels(batch["pixels"]))

    def _score(self, images: list[np.ndarray], captions: list[str]) -> torch.Tensor:
        return self.head(self.clip.image_features(images))  # shared with `clip`


class HPSv2(TorchReward):
    """Human Preference Score v2.x: cosine of HPS-tuned CLIP-H image and caption embeddings."""

    name = "hpsv2"
    OPTIONS = catalog.HPSV2_OPTIONS

    def __init__(self, ctx: RewardContext | None = None, clip: OpenClip | None = None) -> None:
        super().__init__(ctx)
        o = self.options
        version = catalog.hps_version(o)
        self.clip = clip or load_open_clip(
            self.name,
            self.ctx,
            self.device,
            catalog.hpsv2_files(o),
            o.get("model", "ViT-H-14"),
            None,
            resize_mode="letterbox",
            hf_home=self.hf_home,
        )
        self.version = f"v{version}@{self.clip.version.partition('@')[2]}"

    def prepare(self, images: list[np.ndarray], captions: list[str]) -> dict:
        return {"pixels": self.clip.pixels(images), "tokens": self.clip.tokens(captions)}

    def forward(self, batch: dict) -> torch.Tensor:
        image = self.clip.encode_pixels(batch["pixels"])
        return (image * self.clip.encode_tokens(batch["tokens"])).sum(-1)
