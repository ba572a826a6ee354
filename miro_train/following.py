"""Does a model draw what its words ask, or what it draws whatever they say?

GenEval's single-object and colours checks pass an image with *at least one* object of the
asked kind, so a model that draws several shapes in random colours passes them without reading
its caption. `following` tells the two apart on the same images: for each shape (or colour)
asked, its presence when asked minus its presence when another is asked, averaged over the
values asked (1: the image has the asked value and no other; 0: the word is ignored), and the
objects the detector finds per image. `miro eval geneval` reports both beside its table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from miro_data.detector import detect
from miro_data.shapes import COLORS, SHAPES, parse_caption
from miro_train.stats import N_BOOT, Estimate, fmt

Attribute = Literal["shape", "color"]


@dataclass(frozen=True)
class Word:
    """One kind of caption word: the GenEval category that asks it alone, and its values."""

    category: str
    values: tuple[str, ...]
    noun: str  # the word's name in results.md, the CLI and the report
    prompts: str  # how they name the prompts
    stream: int  # the bootstrap's random stream (shape's is the figures' since 2026-12-03)


WORDS: dict[Attribute, Word] = {
    "shape": Word("single_object", SHAPES, "shape", "single-object prompts", 2_020),
    "color": Word("colors", COLORS, "colour", "colour prompts", 2_021),
}


def following(
    prompts: Sequence[str],
    images: Sequence[np.ndarray] | np.ndarray,
    attribute: Attribute = "shape",
    seed: int = 0,
) -> dict[str, Estimate]:
    """ "following" and "objects" (per image) of one kind of word, from the images of the
    category that asks it alone (single objects for shapes, colours for colours), with 95 %
    intervals from each asked value's images resampled. Empty unless two values are asked."""
    word = WORDS[attribute]
    present: dict[str, list[list[float]]] = {v: [] for v in word.values}
    counts: dict[str, list[int]] = {v: [] for v in word.values}
    for text, image in zip(prompts, images, strict=True):
        prompt = parse_caption(text)
        if prompt is None or prompt.category != word.category:
            continue
        found = detect(image)
        drawn = {getattr(d, attribute) for d in found}
        asked = getattr(prompt.objects[0], attribute)
        present[asked].append([float(v in drawn) for v in word.values])
        counts[asked].append(len(found))
    asked = [i for i, v in enumerate(word.values) if present[v]]
    if len(asked) < 2:
        return {}
    # per value asked: (images, values asked) presence, and (images,) objects found
    groups = [(np.array(present[word.values[i]])[:, asked], np.array(counts[word.values[i]],
               dtype=np.float64)) for i in asked]  # fmt: skip
    rng = np.random.default_rng([seed, word.stream])

    def resampled() -> tuple[float, float]:  # each asked value's images drawn with replacement
        picks = [rng.integers(0, len(n), len(n)) for _, n in groups]
        return _statistics([(p[i], n[i]) for (p, n), i in zip(groups, picks, strict=True)])

    boot = np.array([resampled() for _ in range(N_BOOT)])
    point = _statistics(groups)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return {name: Estimate(point[j], float(low[j]), float(high[j]))
            for j, name in enumerate(("following", "objects"))}  # fmt: skip


def _statistics(groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Following and objects per image of (presence, counts) groups, one per value asked."""
    rates = np.stack([present.mean(0) for present, _ in groups])  # (asked, present)
    asked = np.diag(rates)
    others = (rates.sum(0) - asked) / (len(groups) - 1)
    return float(np.mean(asked - others)), float(np.mean([n.mean() for _, n in groups]))


def following_line(attribute: Attribute, figures: Mapping[str, Estimate | dict]) -> str:
    """The sentence results.md, the CLI and the report give `following`'s figures in
    (Estimates, or their dicts as results.json keeps them)."""
    word = WORDS[attribute]
    noun = word.noun
    f, n = figures["following"], figures["objects"]
    return (f"{word.prompts}: {noun} following {fmt(f, 100)} points (the asked {noun}'s "
            f"presence minus the other {noun}s'; 0 = the {noun} word is ignored), "
            f"{fmt(n, 1, '.2f')} objects an image")  # fmt: skip
