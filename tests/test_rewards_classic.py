"""Weight-free rewards: each measures what it says, including the ways it can be gamed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from miro_data.rewards import REGISTRY, build_reward
from miro_data.shapes import Obj, Scene, render

CLASSIC = ("sharpness", "edge_sharpness", "noise", "colorfulness", "contrast", "shapes_alignment")


def _scene(color: str = "red", background: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    objects = (Obj("square", color, 9, 9, 5), Obj("circle", color, 22, 20, 6))
    return render(Scene(32, background, objects))


def _blur(img: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    return np.clip(ndimage.gaussian_filter(img.astype(float), (sigma, sigma, 0)), 0, 255).astype(
        np.uint8
    )


def _noisy(img: np.ndarray, sigma: float = 20.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def score(
    name: str, img: np.ndarray, caption: str = "a photo of a red square and a red circle"
) -> float:
    return float(build_reward(name).score([img], [caption])[0])


def test_all_weight_free_rewards_are_registered() -> None:
    assert set(CLASSIC) <= set(REGISTRY)
    assert not any(REGISTRY[n].learned for n in CLASSIC)


def test_sharpness_falls_with_blur_and_rises_with_noise_and_yellow() -> None:
    img = _scene()
    assert (
        score("sharpness", _blur(img)) < score("sharpness", img) < score("sharpness", _noisy(img))
    )
    # the variance of the Laplacian rewards luminance steps: yellow on dark beats blue on dark
    assert score("sharpness", _scene("yellow")) > 5 * score("sharpness", _scene("blue"))


def test_edge_sharpness_ignores_colour_and_contrast_but_not_blur_or_noise() -> None:
    base = score("edge_sharpness", _scene("red"))
    assert base == pytest.approx(1.0, abs=0.02)  # a crisp step: Sobel peak 4h over a step h
    for color in ("yellow", "blue", "green"):
        assert score("edge_sharpness", _scene(color)) == pytest.approx(base, rel=0.02)
    faded = (_scene().astype(float) * 0.4 + 0.6 * 45).astype(np.uint8)
    assert score("edge_sharpness", faded) == pytest.approx(base, rel=0.05)
    blurred = [score("edge_sharpness", _blur(_scene(), s)) for s in (0.6, 1.0, 1.5)]
    assert base > blurred[0] > blurred[1] > blurred[2]
    # version 1 rose with noise, so its top bin was noisy images: now noise lowers the score
    for color in ("yellow", "blue"):
        noisy = [score("edge_sharpness", _noisy(_scene(color), s)) for s in (5, 10, 20, 30)]
        assert base > noisy[0] > noisy[1] > noisy[2] > noisy[3]
    assert np.isnan(score("edge_sharpness", np.full((32, 32, 3), 50, np.uint8)))


def test_noise_is_higher_for_cleaner_images() -> None:
    img = _scene()
    clean, light, heavy = (score("noise", x) for x in (img, _noisy(img, 8), _noisy(img, 30)))
    assert clean > light > heavy
    # the estimate recovers the sigma of the luma: per-channel noise σ gives σ·|luma weights|
    assert heavy == pytest.approx(-30 * np.linalg.norm([0.299, 0.587, 0.114]), rel=0.1)


def test_noise_ignores_colour_and_edges() -> None:
    # version 1 (the mean response) read a yellow object's edges as noise: "clean" meant blue
    assert {score("noise", _scene(c)) for c in ("red", "yellow", "blue", "green")} == {0.0}
    noisy = {c: score("noise", _noisy(_scene(c), 15)) for c in ("yellow", "blue")}
    assert noisy["yellow"] == pytest.approx(noisy["blue"], rel=0.1)


def test_colorfulness_and_contrast() -> None:
    gray = np.repeat(np.linspace(0, 255, 32 * 32).reshape(32, 32, 1), 3, axis=2).astype(np.uint8)
    assert score("colorfulness", gray) == pytest.approx(0, abs=1e-9)
    assert score("colorfulness", _scene()) > 10
    assert score("contrast", np.full((8, 8, 3), 99, np.uint8)) == 0
    assert score("contrast", _scene()) > score("contrast", _blur(_scene(), 3))


def test_shapes_alignment_reads_the_caption() -> None:
    img = _scene()
    assert score("shapes_alignment", img, "a photo of a red square and a red circle") == 1.0
    assert score("shapes_alignment", img, "a photo of a square and a triangle") == 0.5
    assert np.isnan(score("shapes_alignment", img, "a photo"))
    assert np.isnan(score("shapes_alignment", img, "a dog on a skateboard"))


@pytest.mark.parametrize("name", CLASSIC)
def test_odd_images_and_captions_never_crash(name: str) -> None:
    reward = build_reward(name)
    images = [np.zeros((1, 1, 3), np.uint8), np.full((2, 300, 3), 7, np.uint8), _scene()]
    values = reward.score(images, ["", "x" * 10_000, "a photo of a circle"])
    assert values.shape == (3,) and values.dtype == np.float64
