"""The Shapes World detector and GenEval-style checks (docs/shapes-world.md).

`detect` reads an image only — never the generator's records — and returns the objects it
sees; `constraints` lists which of a prompt's requirements those objects satisfy. An image
passes its prompt when every constraint holds; the `shapes_alignment` reward is the fraction
that hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from miro_data.shapes import COLORS, PALETTE, Prompt

COLOR_DISTANCE = 80.0
MIN_AREA_FRACTION = 0.008
SQUARE_FILL, CIRCLE_FILL = 0.88, 0.64
POSITION_MARGIN = 0.1

_PALETTE = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)  # (6, 3)
_PALETTE_NORM2 = (_PALETTE**2).sum(1)


@dataclass(frozen=True)
class Detection:
    """An object found in an image: shape, colour, centroid (x right, y down), pixel area."""

    shape: str
    color: str
    x: float
    y: float
    area: int


def color_map(image: np.ndarray) -> np.ndarray:
    """(H, W) int map: index of the nearest palette colour within distance 80, else -1."""
    pixels = image.reshape(-1, 3).T.astype(np.float32)  # (3, N)
    # |p − c|² = |c|² − 2 c·p + |p|²: one BLAS product. Every term is an integer below 2^24,
    # so float32 computes it exactly; (6, N) keeps the reductions over colours vectorised.
    dist2 = _PALETTE_NORM2[:, None] - 2 * (_PALETTE @ pixels) + (pixels * pixels).sum(0)[None]
    nearest = dist2.argmin(0)
    near_enough = dist2.min(0) < COLOR_DISTANCE**2
    return np.where(near_enough, nearest, -1).reshape(image.shape[:2])


def _classify(fill: float) -> str:
    if fill >= SQUARE_FILL:
        return "square"
    if fill >= CIRCLE_FILL:
        return "circle"
    return "triangle"


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in an (H, W, 3) uint8 RGB image."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    min_area = MIN_AREA_FRACTION * h * w
    colors = color_map(image)
    found: list[Detection] = []
    for ci in np.unique(colors):
        if ci < 0:
            continue
        mask = (colors == ci).astype(np.uint8)
        n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=4)
        for i in range(1, n):  # 0 is everything else
            _, _, box_w, box_h, area = (int(v) for v in stats[i])
            if area < min_area:
                continue
            cx, cy = centroids[i] + 0.5  # pixel centres
            found.append(Detection(_classify(area / (box_w * box_h)), COLORS[ci], cx, cy, area))
    return found


# ----------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------


def _beyond(a: Detection, b: Detection, relation: str, margin: float) -> bool:
    """A's centroid at least `margin` beyond B's in the named direction (y grows downward)."""
    if relation == "left of":
        return b.x - a.x >= margin
    if relation == "right of":
        return a.x - b.x >= margin
    if relation == "above":
        return b.y - a.y >= margin
    if relation == "below":
        return a.y - b.y >= margin
    raise ValueError(f"unknown relation {relation!r}")


def constraints(prompt: Prompt, found: list[Detection], size: int) -> list[bool]:
    """Each requirement of the prompt, satisfied or not; all true ⇔ the GenEval check passes."""

    def has(shape: str, color: str | None = None) -> bool:
        return any(d.shape == shape and (color is None or d.color == color) for d in found)

    objs = prompt.objects
    if prompt.category == "single_object":
        return [has(objs[0].shape)]
    if prompt.category == "two_object":
        return [has(objs[0].shape), has(objs[1].shape)]
    if prompt.category == "counting":
        n_shape = sum(d.shape == objs[0].shape for d in found)
        return [n_shape > 0, n_shape == prompt.count, n_shape == len(found)]
    if prompt.category == "colors":
        return [has(objs[0].shape), has(objs[0].shape, objs[0].color)]
    if prompt.category == "position":
        margin = POSITION_MARGIN * size
        pairs = [
            (a, b)
            for a in found
            if a.shape == objs[0].shape
            for b in found
            if b.shape == objs[1].shape
        ]
        related = any(a is not b and _beyond(a, b, str(prompt.relation), margin) for a, b in pairs)
        return [has(objs[0].shape), has(objs[1].shape), related]
    if prompt.category == "color_attr":
        a, b = objs
        return [has(a.shape), has(b.shape), has(a.shape, a.color), has(b.shape, b.color)]
    raise ValueError(f"unknown category {prompt.category!r}")


def check(prompt: Prompt, image: np.ndarray) -> bool:
    """GenEval pass/fail of one image for one prompt."""
    return all(constraints(prompt, detect(image), image.shape[0]))


def alignment(prompt: Prompt, image: np.ndarray) -> float:
    """Fraction of the prompt's constraints the image satisfies, in [0, 1]."""
    ok = constraints(prompt, detect(image), image.shape[0])
    return sum(ok) / len(ok)
