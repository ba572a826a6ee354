"""VQAScore's reference: t2v_metrics 3.0's `CLIPT5Model` (clip-flant5-xl) — tests only.

Loaded and called as `t2v_metrics.VQAScore` does (`forward([image_path], [caption])`, default
question and answer templates), from the tiny checkpoint in the HF cache. Two changes, neither
in scoring: the package casts the model to bf16 (`load_pretrained_model`) and the parity is
checked in fp32, so that one cast is skipped (the model stays in the files' fp32); and transformers 5 builds a model inside `from_pretrained` on the meta device, where the
vision tower's nested `CLIPVisionModel.from_pretrained` is refused, so the tower is built from
its config there and takes its weights from the checkpoint, which carries them (the test
checks that every weight the reference holds equals the checkpoint's).
"""

from __future__ import annotations

from pathlib import Path

import torch

from reference import shims


def load(hf_home: Path, model_name: str = "clip-flant5-xl"):
    shims.activate()
    from t2v_metrics.models.vqascore_models.clip_t5.model.language_model import clip_t5
    from t2v_metrics.models.vqascore_models.clip_t5.model.multimodal_encoder import clip_encoder
    from t2v_metrics.models.vqascore_models.clip_t5_model import CLIPT5Model

    clip_encoder.CLIPVisionTower.load_model = _load_tower
    cls = clip_t5.CLIPT5ForConditionalGeneration
    cast = cls.to

    def to_keeping_fp32(self, *args, **kwargs):
        kwargs.pop("dtype", None)
        return cast(self, *(a for a in args if not isinstance(a, torch.dtype)), **kwargs)

    cls.to = to_keeping_fp32
    try:
        model = CLIPT5Model(model_name, device="cpu", cache_dir=str(hf_home / "hub"))
    finally:
        cls.to = cast
    assert next(model.model.parameters()).dtype == torch.float32
    return model


def score(model, image_path: Path, caption: str) -> float:
    return float(model.forward([str(image_path)], [caption])[0])


def _load_tower(self) -> None:
    """CLIPVisionTower.load_model, with the model built from its config (see above)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    self.image_processor = CLIPImageProcessor.from_pretrained(self.vision_tower_name)
    self.vision_tower = CLIPVisionModel(CLIPVisionConfig.from_pretrained(self.vision_tower_name))
    self.vision_tower.requires_grad_(False)
    self.is_loaded = True
