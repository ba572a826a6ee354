"""Image preprocessing on tensors that reproduces each reward model's own pipeline exactly.

The reference pipelines resize PIL images (CLIP, the aesthetic predictor, ImageReward) or
float tensors (HPSv2). A plain `torch.nn.functional.interpolate` differs from PIL by ±1 grey
level on some pixels, enough to move scores past the 1e-4 the parity tests demand, so
`resize_crop` re-implements Pillow's fixed-point separable resampling (libImaging/Resample.c
of Pillow 13, the pinned version: coefficients in double, 22-bit integer taps, two passes each
rounded to uint8) on tensors, for the GPU and for extreme aspect ratios: it computes only the
output pixels that survive the centre crop, so a 1×5000 image costs what a square one does.
On a CPU, Pillow itself is the fastest exact resampler, so ordinary images go through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as tvF
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_PRECISION_BITS = 32 - 8 - 2  # Pillow's PRECISION_BITS for 8-bit images


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 (alpha dropped)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape[:2]:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[..., :3]


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host → device; to CUDA through pinned memory, so the copy overlaps the GPU's work."""
    device = torch.device(device)
    if tensor.device == device:
        return tensor
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_chw(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 array → (3, H, W) uint8 tensor on `device`."""
    arr = np.ascontiguousarray(as_rgb(image))
    return to_device(torch.from_numpy(arr), device).permute(2, 0, 1)


# ----------------------------------------------------------------------------
# Pillow-exact resampling
# ----------------------------------------------------------------------------


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


def _pil_taps(in_size: int, out_size: int, outputs: range, kind: str):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for the output indices `outputs`.

    Returns (index (n, k) int64, weight (n, k) int64): output i = Σ_j in[index[i, j]] · weight[i, j].
    """
    filt, support = _FILTERS[kind]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    ksize = math.ceil(support) * 2 + 1
    centers = (np.asarray(outputs, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C casts truncate
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    w = filt((taps[None, :] + xmin[:, None] - centers[:, None] + 0.5) / filterscale)
    w = np.where(taps[None, :] < xmax[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0)
    fixed = np.where(w < 0, -0.5 + w * (1 << _PRECISION_BITS), 0.5 + w * (1 << _PRECISION_BITS))
    index = np.minimum(xmin[:, None] + taps[None, :], in_size - 1)
    return torch.from_numpy(index), torch.from_numpy(fixed.astype(np.int64))  # trunc like (int)


def _pass(x: torch.Tensor, dim: int, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One 8-bit resampling pass along `dim` (1 = rows, 2 = columns) of a (C, H, W) int64 tensor."""
    index, weight = index.to(x.device), weight.to(x.device)
    n, k = index.shape
    if dim == 2:  # columns: (C, H, W) → (C, H, n)
        taps = x[:, :, index.reshape(-1)].reshape(x.shape[0], x.shape[1], n, k)
        acc = (taps * weight).sum(-1)
    else:  # rows: (C, H, W) → (C, n, W)
        taps = x[:, index.reshape(-1), :].reshape(x.shape[0], n, k, x.shape[2])
        acc = (taps * weight[:, :, None]).sum(2)
    acc = (acc + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS
    return acc.clamp_(0, 255)


def resize_crop(
    image: torch.Tensor,
    size: tuple[int, int],
    crop: tuple[int, int, int, int],
    kind: str = "bicubic",
) -> torch.Tensor:
    """`PIL.Image.resize(size=(h, w))` then `.crop(top, left, height, width)`, bit for bit.

    `image` is (3, H, W) uint8; returns (3, height, width) uint8. Only the kept pixels are
    computed: each output pixel of Pillow's resampling depends on its own taps alone.
    """
    out_h, out_w = size
    top, left, crop_h, crop_w = crop
    _, in_h, in_w = image.shape
    x = image.to(torch.int64)
    # Pillow 13 runs the vertical pass first when the height shrinks over twice as much.
    vertical_first = (in_h - out_h) > 0 and (in_h - out_h) > (in_w - out_w) * 2
    for dim in (1, 2) if vertical_first else (2, 1):
        n_in, n_out, start, n = (
            (in_h, out_h, top, crop_h) if dim == 1 else (in_w, out_w, left, crop_w)
        )
        if n_out != n_in:  # Pillow skips a pass whose size does not change
            x = _pass(x, dim, *_pil_taps(n_in, n_out, range(start, start + n), kind))
        else:
            x = x.narrow(dim, start, n)
    return x.to(torch.uint8)


def shortest_side_size(h: int, w: int, side: int) -> tuple[int, int]:
    """torchvision `Resize(side)`: the short side becomes `side`, the long one scales (floored)."""
    if w <= h:
        return int(side * h / w), side
    return side, int(side * w / h)


_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _resize_crop_any(
    image: np.ndarray,
    size: tuple[int, int],
    crop: tuple[int, int, int, int],
    kind: str,
    device: torch.device | str,
) -> torch.Tensor:
    """Pillow on a CPU for ordinary shapes, the tensor twin elsewhere; (3, h, w) uint8 on `device`."""
    image = as_rgb(image)
    (out_h, out_w), (top, left, crop_h, crop_w) = size, crop
    if torch.device(device).type == "cpu" and out_h * out_w <= 4 * crop_h * crop_w:
        pil = Image.fromarray(np.ascontiguousarray(image))
        if (out_w, out_h) != pil.size:
            pil = pil.resize((out_w, out_h), _PIL_FILTERS[kind])
        arr = np.asarray(pil.crop((left, top, left + crop_w, top + crop_h)))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return resize_crop(to_chw(image, device), size, crop, kind)


def resize_shortest_center_crop(
    image: np.ndarray, side: int, kind: str = "bicubic", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """torchvision `Resize(side)` + `CenterCrop(side)` on a PIL image → (3, side, side) uint8."""
    h, w = image.shape[:2]
    out_h, out_w = shortest_side_size(h, w, side)
    top = round((out_h - side) / 2.0)
    left = round((out_w - side) / 2.0)
    return _resize_crop_any(image, (out_h, out_w), (top, left, side, side), kind, device)


def resize_squash(
    image: np.ndarray, side: int, kind: str = "bicubic", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """torchvision `Resize((side, side))` on a PIL image (aspect ratio not kept)."""
    return _resize_crop_any(image, (side, side), (0, 0, side, side), kind, device)


# ----------------------------------------------------------------------------
# Float-tensor pipelines and normalisation
# ----------------------------------------------------------------------------


def letterbox(image: torch.Tensor, side: int) -> torch.Tensor:
    """HPSv2's `ResizeMaxSize`: float (3, H, W) in [0, 1], longest side → `side`, zero padding.

    Same torchvision calls as the reference. Two departures, both where the reference breaks:
    a short side that would round to 0 pixels is kept at 1, and an image whose long side is
    already `side` is padded to a square instead of being passed on non-square.
    """
    _, h, w = image.shape
    scale = side / float(max(h, w))
    if scale != 1.0:
        new_h, new_w = (max(1, round(dim * scale)) for dim in (h, w))
        image = tvF.resize(image, [new_h, new_w], tvF.InterpolationMode.BICUBIC)
    _, h, w = image.shape
    pad_h, pad_w = side - h, side - w
    if pad_h or pad_w:
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        image = tvF.pad(image, padding=padding, fill=0)
    return image


def to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [0, 1] exactly as `ToTensor` does (divide by 255)."""
    return batch.to(torch.float32).div(255)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`Normalize(mean, std)` on a (B, 3, H, W) float batch: (x − mean) / std, in that order."""
    m = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return batch.sub(m).div(s)
