"""The LAION improved aesthetic predictor's published inference (simple_inference.py) — tests only.

As published, except: the MLP derives from `nn.Module` instead of `pl.LightningModule` (the
training hooks are not used at inference), the CLIP model comes from open_clip (the issue's
`ViT-L-14`/`openai`, here a tiny model of that family) instead of OpenAI's `clip.load`, with
the same preprocessing (`Resize(224, BICUBIC)`, `CenterCrop`, RGB, `ToTensor`, OpenAI
`Normalize` — OpenAI's `_transform`, written out below), and the device is the CPU.
"""

from __future__ import annotations

import numpy as np
import open_clip
import torch
import torch.nn as nn
from PIL import Image
from torchvision.transforms import (
    CenterCrop,
    Compose,
    InterpolationMode,
    Normalize,
    Resize,
    ToTensor,
)

BICUBIC = InterpolationMode.BICUBIC


class MLP(nn.Module):
    def __init__(self, input_size, xcol="emb", ycol="avg_rating"):
        super().__init__()
        self.input_size = input_size
        self.xcol = xcol
        self.ycol = ycol
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            # nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            # nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            # nn.ReLU(),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def normalized(a, axis=-1, order=2):
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def _convert_image_to_rgb(image):
    return image.convert("RGB")


def _transform(n_px):  # OpenAI CLIP's preprocessing, as clip.load returns it
    return Compose([
        Resize(n_px, interpolation=BICUBIC),
        CenterCrop(n_px),
        _convert_image_to_rgb,
        ToTensor(),
        Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])  # fmt: skip


def load(mlp_path, clip_model, clip_weights, embed_dim=768):
    model = MLP(embed_dim)  # CLIP embedding dim is 768 for CLIP ViT L 14
    s = torch.load(
        mlp_path
    )  # load the model you trained previously or the model available in this repo
    model.load_state_dict(s)
    model.eval()
    model2 = open_clip.create_model(clip_model, pretrained=str(clip_weights)).eval()
    return model, model2, _transform(224)


def predict(model, model2, preprocess, pil_image: Image.Image) -> float:
    image = preprocess(pil_image).unsqueeze(0)
    with torch.no_grad():
        image_features = model2.encode_image(image)
    im_emb_arr = normalized(image_features.cpu().detach().numpy())
    prediction = model(torch.from_numpy(im_emb_arr).type(torch.FloatTensor))
    return float(prediction.item())
