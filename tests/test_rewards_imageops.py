"""The tensor preprocessing equals the reference pipelines pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from miro_data.rewards import imageops

SHAPES = [
    (300, 200),
    (97, 131),
    (224, 224),
    (225, 224),
    (1, 1),
    (2, 3000),
    (3000, 2),
    (768, 1024),
    (5, 1000),
]
MODES = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["bicubic", "bilinear"])
@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_resize_and_crop_match_pil_exactly(h, w, kind):
    a = image(h, w)
    pil = Image.fromarray(a)
    crop = T.Compose([T.Resize(224, interpolation=MODES[kind]), T.CenterCrop(224)])
    want = np.asarray(crop(pil))
    # both code paths: Pillow itself (CPU, ordinary shapes) and the tensor twin (GPU, extreme shapes)
    got = imageops.resize_shortest_center_crop(a, 224, kind).permute(1, 2, 0).numpy()
    out_h, out_w = imageops.shortest_side_size(h, w, 224)
    box = (round((out_h - 224) / 2), round((out_w - 224) / 2), 224, 224)
    twin = (
        imageops.resize_crop(imageops.to_chw(a), (out_h, out_w), box, kind).permute(1, 2, 0).numpy()
    )
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(twin, want)
    squash = np.asarray(T.Resize((224, 224), interpolation=MODES[kind])(pil))
    twin = imageops.resize_crop(imageops.to_chw(a), (224, 224), (0, 0, 224, 224), kind)
    np.testing.assert_array_equal(twin.permute(1, 2, 0).numpy(), squash)


def test_letterbox_pads_to_a_centred_square():
    x = torch.ones(3, 100, 50)
    out = imageops.letterbox(x, 224)
    assert out.shape == (3, 224, 224)
    assert out[:, :, :56].abs().max() == 0 and out[:, :, 168:].abs().max() == 0  # 56 px each side
    assert torch.allclose(out[:, 10:-10, 60:-60], torch.ones(1), atol=1e-5)
    # where the reference passes a non-square image on (long side already 224), pad it too
    assert imageops.letterbox(torch.ones(3, 224, 120), 224).shape == (3, 224, 224)
    assert imageops.letterbox(torch.ones(3, 1, 5000), 224).shape == (3, 224, 224)


def test_as_rgb_accepts_what_decoders_produce():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert imageops.as_rgb(gray).shape == (3, 4, 3)
    assert imageops.as_rgb(gray[..., None]).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert imageops.as_rgb(rgba).shape == (3, 4, 3)
    for bad in (
        np.zeros((3, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((3, 4, 2), np.uint8),
    ):
        with pytest.raises(ValueError):
            imageops.as_rgb(bad)
