"""CLIP score the way open_clip's README computes similarities, for one image and its caption.

`create_model_and_transforms` + `get_tokenizer` from the model's hub repo (read from the HF
cache), `encode_image` / `encode_text`, L2 normalisation, `100.0 * image @ text.T` — tests only.
"""

from __future__ import annotations

import open_clip
import torch


def load(model_name: str):
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, preprocess, tokenizer


def clip_score(model, preprocess, tokenizer, pil_image, caption: str) -> float:
    image = preprocess(pil_image).unsqueeze(0)
    text = tokenizer([caption])
    with torch.no_grad():
        image_features = model.encode_image(image)
        text_features = model.encode_text(text)
        image_features /= image_features.norm(dim=-1, keepdim=True)
        text_features /= text_features.norm(dim=-1, keepdim=True)
        return float((100.0 * image_features @ text_features.T)[0, 0])
