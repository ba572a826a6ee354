"""Shapes World: palette, scenes, rendering and the caption grammar (docs/shapes-world.md).

This module is the contract's code: `sample_scene` draws a scene for a caption category,
`render` rasterises it, `caption_for` writes its caption and `parse_caption` reads a caption
back into a `Prompt` that the detector's checks (miro_data.detector) can verify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from itertools import permutations, product

import numpy as np

# ----------------------------------------------------------------------------
# The world
# ----------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 20),
}
COLORS = tuple(PALETTE)
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COUNT_WORDS = {"two": 2, "three": 3, "four": 4}
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUND_RANGE = (20, 70)


@dataclass(frozen=True)
class Obj:
    """One drawn object: centre (cx, cy) and bounding-box half-side r, in pixels."""

    shape: str
    color: str
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Scene:
    """What one image shows: a background colour and non-overlapping objects."""

    size: int
    background: tuple[int, int, int]
    objects: tuple[Obj, ...]


@dataclass(frozen=True)
class ObjSpec:
    """An object as a caption names it; `color=None` when the caption leaves it open."""

    shape: str
    color: str | None = None


@dataclass(frozen=True)
class Prompt:
    """A parsed Shapes World caption."""

    category: str
    objects: tuple[ObjSpec, ...]
    count: int = 1
    relation: str | None = None
    text: str = field(default="", compare=False)


# ----------------------------------------------------------------------------
# Captions: write and parse the six GenEval templates
# ----------------------------------------------------------------------------


def caption_for(prompt: Prompt) -> str:
    """The caption of a prompt, exactly as in SHAPES_WORLD.md's grammar."""
    objs = prompt.objects
    if prompt.category == "single_object":
        return f"a photo of a {objs[0].shape}"
    if prompt.category == "two_object":
        return f"a photo of a {objs[0].shape} and a {objs[1].shape}"
    if prompt.category == "counting":
        word = {v: k for k, v in COUNT_WORDS.items()}[prompt.count]
        return f"a photo of {word} {objs[0].shape}s"
    if prompt.category == "colors":
        return f"a photo of a {objs[0].color} {objs[0].shape}"
    if prompt.category == "position":
        return f"a photo of a {objs[0].shape} {prompt.relation} a {objs[1].shape}"
    if prompt.category == "color_attr":
        a, b = objs
        return f"a photo of a {a.color} {a.shape} and a {b.color} {b.shape}"
    raise ValueError(f"unknown category {prompt.category!r}")


_S = "(circle|square|triangle)"
_C = "(red|green|blue|yellow|purple|orange)"
_PATTERNS = [
    ("color_attr", re.compile(rf"a photo of a {_C} {_S} and a {_C} {_S}")),
    ("position", re.compile(rf"a photo of a {_S} (left of|right of|above|below) a {_S}")),
    ("two_object", re.compile(rf"a photo of a {_S} and a {_S}")),
    ("counting", re.compile(rf"a photo of (two|three|four) {_S}s")),
    ("colors", re.compile(rf"a photo of a {_C} {_S}")),
    ("single_object", re.compile(rf"a photo of a {_S}")),
]


def parse_caption(text: str) -> Prompt | None:
    """Read a caption back into a Prompt; None when it is not a Shapes World caption."""
    clean = " ".join(text.strip().lower().split())
    for category, pattern in _PATTERNS:
        m = pattern.fullmatch(clean)
        if not m:
            continue
        g = m.groups()
        if category == "color_attr":
            objs = (ObjSpec(g[1], g[0]), ObjSpec(g[3], g[2]))
            return Prompt(category, objs, text=text)
        if category == "position":
            return Prompt(category, (ObjSpec(g[0]), ObjSpec(g[2])), relation=g[1], text=text)
        if category == "two_object":
            return Prompt(category, (ObjSpec(g[0]), ObjSpec(g[1])), text=text)
        if category == "counting":
            return Prompt(category, (ObjSpec(g[1]),), count=COUNT_WORDS[g[0]], text=text)
        if category == "colors":
            return Prompt(category, (ObjSpec(g[1], g[0]),), text=text)
        return Prompt(category, (ObjSpec(g[0]),), text=text)
    return None


def sample_prompt(category: str, rng: np.random.Generator) -> Prompt:
    """A random prompt of a category, with the constraints of the grammar (distinct shapes…)."""

    def shape() -> str:
        return str(rng.choice(SHAPES))

    def two_shapes() -> tuple[str, str]:
        a, b = rng.choice(SHAPES, size=2, replace=False)
        return str(a), str(b)

    if category == "single_object":
        return Prompt(category, (ObjSpec(shape()),))
    if category == "two_object":
        a, b = two_shapes()
        return Prompt(category, (ObjSpec(a), ObjSpec(b)))
    if category == "counting":
        return Prompt(category, (ObjSpec(shape()),), count=int(rng.integers(2, 5)))
    if category == "colors":
        return Prompt(category, (ObjSpec(shape(), str(rng.choice(COLORS))),))
    if category == "position":
        a, b = two_shapes()
        return Prompt(category, (ObjSpec(a), ObjSpec(b)), relation=str(rng.choice(RELATIONS)))
    if category == "color_attr":
        a, b = two_shapes()
        ca, cb = rng.choice(COLORS, size=2, replace=False)
        return Prompt(category, (ObjSpec(a, str(ca)), ObjSpec(b, str(cb))))
    raise ValueError(f"unknown category {category!r}")


@cache
def all_prompts(category: str) -> frozenset[str]:
    """Every caption `sample_prompt` can give for a category (single objects: 3, colour
    attribution: 180), so statistics can tell a category evaluated on all its prompts."""
    pairs = list(permutations(SHAPES, 2))
    if category == "single_object":
        specs = [Prompt(category, (ObjSpec(s),)) for s in SHAPES]
    elif category == "two_object":
        specs = [Prompt(category, (ObjSpec(a), ObjSpec(b))) for a, b in pairs]
    elif category == "counting":
        specs = [Prompt(category, (ObjSpec(s),), count=n)
                 for s, n in product(SHAPES, COUNT_WORDS.values())]  # fmt: skip
    elif category == "colors":
        specs = [Prompt(category, (ObjSpec(s, c),)) for s, c in product(SHAPES, COLORS)]
    elif category == "position":
        specs = [Prompt(category, (ObjSpec(a), ObjSpec(b)), relation=r)
                 for (a, b), r in product(pairs, RELATIONS)]  # fmt: skip
    elif category == "color_attr":
        specs = [Prompt(category, (ObjSpec(a, ca), ObjSpec(b, cb)))
                 for (a, b), (ca, cb) in product(pairs, permutations(COLORS, 2))]  # fmt: skip
    else:
        raise ValueError(f"unknown category {category!r}")
    return frozenset(caption_for(p) for p in specs)


# ----------------------------------------------------------------------------
# Scenes: place objects for a prompt
# ----------------------------------------------------------------------------


def _fits(candidate: tuple[float, float, float], placed: list[tuple[float, float, float]]) -> bool:
    # Boxes two pixels apart leave at least one full background pixel between drawn pixels.
    cx, cy, r = candidate
    return all(abs(cx - ox) >= r + orr + 2 or abs(cy - oy) >= r + orr + 2 for ox, oy, orr in placed)


def _place(
    n: int, size: int, r_range: tuple[float, float], rng: np.random.Generator, tries: int = 200
) -> list[tuple[float, float, float]] | None:
    placed: list[tuple[float, float, float]] = []
    for _ in range(tries):
        if len(placed) == n:
            break
        r = float(rng.uniform(*r_range))
        cx, cy = (float(v) for v in rng.uniform(r + 0.5, size - r - 0.5, size=2))
        if _fits((cx, cy, r), placed):
            placed.append((cx, cy, r))
    return placed if len(placed) == n else None


def _position_pair(
    relation: str, size: int, rng: np.random.Generator
) -> list[tuple[float, float, float]] | None:
    """Two boxes whose centres are ≥ 0.3·S apart along the named axis (A is first)."""
    placed = _place(2, size, (0.12 * size, 0.20 * size), rng)
    if placed is None:
        return None
    (ax, ay, _), (bx, by, _) = placed
    axis = 0 if relation in ("left of", "right of") else 1
    a_first = relation in ("left of", "above")  # A has the smaller coordinate
    da = (ax, ay)[axis] - (bx, by)[axis]
    if (a_first and da > -0.3 * size) or (not a_first and da < 0.3 * size):
        return None
    return placed


def sample_scene(prompt: Prompt, size: int, rng: np.random.Generator) -> Scene | None:
    """Objects for the prompt at random positions; None when this draw could not place them."""
    background = tuple(int(v) for v in rng.integers(*BACKGROUND_RANGE, size=3, endpoint=True))
    if prompt.category == "counting":
        specs = [prompt.objects[0]] * prompt.count
        boxes = _place(len(specs), size, (0.09 * size, 0.16 * size), rng)
    elif prompt.category == "position":
        specs = list(prompt.objects)
        boxes = _position_pair(str(prompt.relation), size, rng)
    else:
        specs = list(prompt.objects)
        boxes = _place(len(specs), size, (0.12 * size, 0.20 * size), rng)
    if boxes is None:
        return None
    objects = tuple(
        Obj(spec.shape, spec.color or str(rng.choice(COLORS)), cx, cy, r)
        for spec, (cx, cy, r) in zip(specs, boxes, strict=True)
    )
    return Scene(size, background, objects)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------


def shape_mask(obj: Obj, size: int) -> np.ndarray:
    """Boolean (size, size) mask of the pixels whose centres fall inside the shape."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xs - obj.cx, ys - obj.cy
    if obj.shape == "square":
        return (np.abs(dx) <= obj.r) & (np.abs(dy) <= obj.r)
    if obj.shape == "circle":
        return dx**2 + dy**2 <= obj.r**2
    if obj.shape == "triangle":
        # Isosceles, apex up: half-width grows from 0 at the top to r at the base.
        depth = dy + obj.r  # 0 at the apex, 2r at the base
        return (depth >= 0) & (depth <= 2 * obj.r) & (np.abs(dx) <= depth / 2)
    raise ValueError(f"unknown shape {obj.shape!r}")


def render(scene: Scene) -> np.ndarray:
    """The scene as a (S, S, 3) uint8 RGB array, with exact palette colours."""
    img = np.empty((scene.size, scene.size, 3), dtype=np.uint8)
    img[:] = scene.background
    for obj in scene.objects:
        img[shape_mask(obj, scene.size)] = PALETTE[obj.color]
    return img
