"""Weight-free rewards: image statistics that need no model, and the Shapes World checker.

Each is cheap enough to run on every image of a corpus on a CPU. They are easy to game —
variance of the Laplacian rises with noise — which is why MIRO conditions on several at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from miro_data.detector import alignment
from miro_data.rewards.base import Reward, RewardContext, RewardSpec, register
from miro_data.shapes import parse_caption

# ITU-R BT.601 luma, as OpenCV's RGB→gray.
_LUMA = np.array([0.299, 0.587, 0.114])
# Immerkær (1996), "Fast Noise Variance Estimation": the difference of two Laplacians.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ _LUMA


class PerImageReward(Reward):
    """A reward computed image by image (no batching gain on a CPU)."""

    def __init__(self, ctx: RewardContext | None = None) -> None:
        pass

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        return np.array([self.score_one(im, cap) for im, cap in zip(images, captions, strict=True)])

    def score_one(self, image: np.ndarray, caption: str) -> float:
        raise NotImplementedError


class Sharpness(PerImageReward):
    """Variance of the Laplacian of the luma (Pech-Pacheco et al., 2000)."""

    name = "sharpness"

    def score_one(self, image: np.ndarray, caption: str) -> float:
        return float(cv2.Laplacian(gray(image), cv2.CV_64F).var())


class EdgeSharpness(PerImageReward):
    """Laplacian-to-gradient energy of the luma: edge crispness, blind to colour and contrast.

    For a step edge blurred to width σ the ratio falls as 1/σ², whatever the step's height, so
    a yellow object on a dark ground scores like a blue one (variance of the Laplacian prefers
    yellow fifteen-fold on Shapes World). Noise still raises it: pair it with `noise`.
    """

    name = "edge_sharpness"

    def score_one(self, image: np.ndarray, caption: str) -> float:
        g = gray(image)
        gx = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3)
        gy = cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
        energy = float((gx**2 + gy**2).mean())
        if energy < 1e-9:  # a flat image has no edges to judge
            return float("nan")
        return float((cv2.Laplacian(g, cv2.CV_64F) ** 2).mean() / energy)


class Noise(PerImageReward):
    """Minus Immerkær's noise sigma estimate, so that cleaner images score higher."""

    name = "noise"

    def score_one(self, image: np.ndarray, caption: str) -> float:
        g = gray(image)
        h, w = g.shape
        if h < 3 or w < 3:
            return float("nan")
        response = np.abs(cv2.filter2D(g, cv2.CV_64F, _IMMERKAER)[1:-1, 1:-1]).sum()
        sigma = np.sqrt(np.pi / 2) * response / (6 * (w - 2) * (h - 2))
        return -float(sigma)


class Colorfulness(PerImageReward):
    """Hasler & Süsstrunk (2003) colourfulness M = σ_rgyb + 0.3·μ_rgyb."""

    name = "colorfulness"

    def score_one(self, image: np.ndarray, caption: str) -> float:
        r, g, b = (image[..., i].astype(np.float64) for i in range(3))
        rg, yb = r - g, 0.5 * (r + g) - b
        std = np.hypot(rg.std(), yb.std())
        mean = np.hypot(rg.mean(), yb.mean())
        return float(std + 0.3 * mean)


class Contrast(PerImageReward):
    """RMS contrast: the standard deviation of the luma, on the 0–255 scale."""

    name = "contrast"

    def score_one(self, image: np.ndarray, caption: str) -> float:
        return float(gray(image).std())


class ShapesAlignment(PerImageReward):
    """Fraction of a Shapes World caption's constraints the detector finds; NaN for other captions."""

    name = "shapes_alignment"

    def score_one(self, image: np.ndarray, caption: str) -> float:
        prompt = parse_caption(caption)
        return float("nan") if prompt is None else alignment(prompt, image)


for _cls in (Sharpness, EdgeSharpness, Noise, Colorfulness, Contrast, ShapesAlignment):
    _summary = (_cls.__doc__ or "").strip().splitlines()[0]
    register(RewardSpec(name=_cls.name, summary=_summary, factory=_cls))
