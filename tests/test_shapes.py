"""Shapes World: the grammar, the renderer, the detector and the generator (SHAPES_WORLD.md)."""

from __future__ import annotations

import numpy as np
import pytest

from miro_data.detector import check, constraints, detect
from miro_data.shapes import (
    CATEGORIES,
    PALETTE,
    Obj,
    ObjSpec,
    Prompt,
    Scene,
    all_prompts,
    caption_for,
    parse_caption,
    render,
    sample_prompt,
)
from miro_data.synth import (
    Degradations,
    SynthConfig,
    clean_sample,
    corrupt_caption,
    generate_sample,
)


@pytest.mark.parametrize("size,n", [(32, 600), (64, 240), (256, 24)])
def test_clean_renders_pass_their_own_caption(size: int, n: int) -> None:
    rng = np.random.default_rng(size)
    failures = []
    for i in range(n):
        prompt = sample_prompt(CATEGORIES[i % 6], rng)
        scene, img = clean_sample(prompt, size, rng)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert len(scene.objects) == (
            prompt.count if prompt.category == "counting" else len(prompt.objects)
        )
        if not check(prompt, img):
            failures.append(caption_for(prompt))
    assert failures == []


def test_every_caption_parses_back_to_its_prompt() -> None:
    rng = np.random.default_rng(0)
    for i in range(300):
        prompt = sample_prompt(CATEGORIES[i % 6], rng)
        text = caption_for(prompt)
        assert parse_caption(text) == prompt, text
    assert parse_caption("a photo") is None
    assert parse_caption("a dog on a skateboard") is None
    assert parse_caption("  A Photo of  a CIRCLE ") == Prompt("single_object", (ObjSpec("circle"),))


def test_all_prompts_are_exactly_what_sampling_can_give() -> None:
    rng = np.random.default_rng(3)
    for category, n in zip(CATEGORIES, (3, 6, 9, 18, 24, 180), strict=True):
        sampled = {caption_for(sample_prompt(category, rng)) for _ in range(40 * n)}
        assert sampled == all_prompts(category) and len(all_prompts(category)) == n
        assert all(parse_caption(t).category == category for t in all_prompts(category))
    with pytest.raises(ValueError, match="unknown category"):
        all_prompts("weather")


def _scene(*objects: Obj, size: int = 32) -> np.ndarray:
    return render(Scene(size, (40, 40, 40), objects))


def test_detector_reads_shapes_colours_and_centroids() -> None:
    img = _scene(
        Obj("square", "red", 8, 8, 5),
        Obj("circle", "blue", 24, 8, 5),
        Obj("triangle", "green", 16, 24, 6),
    )
    found = {(d.shape, d.color): d for d in detect(img)}
    assert set(found) == {("square", "red"), ("circle", "blue"), ("triangle", "green")}
    assert found[("square", "red")].x == pytest.approx(8, abs=0.6)
    assert found[("circle", "blue")].y == pytest.approx(8, abs=0.6)
    assert found[("triangle", "green")].y > 24  # a triangle's centroid sits below its box centre


def test_detector_ignores_background_and_specks() -> None:
    img = np.full((32, 32, 3), 70, np.uint8)
    img[3:5, 3:5] = PALETTE["red"]  # 4 px < 0.008·S² ≈ 8.2 px
    assert detect(img) == []


@pytest.mark.parametrize(
    "caption,objects,expected",
    [
        # wrong shape
        ("a photo of a circle", [Obj("square", "red", 16, 16, 6)], [False]),
        # wrong colour: the shape is there, the colour is not
        ("a photo of a blue square", [Obj("square", "red", 16, 16, 6)], [True, False]),
        # one extra object breaks "no other object" (and the count if it is the same shape)
        (
            "a photo of two circles",
            [
                Obj("circle", "red", 8, 8, 5),
                Obj("circle", "red", 24, 8, 5),
                Obj("square", "blue", 16, 24, 5),
            ],
            [True, True, False],
        ),
        (
            "a photo of two circles",
            [
                Obj("circle", "red", 8, 8, 5),
                Obj("circle", "red", 24, 8, 5),
                Obj("circle", "blue", 16, 24, 5),
            ],
            [True, False, True],
        ),
        # right objects, wrong side
        (
            "a photo of a circle left of a square",
            [Obj("square", "red", 8, 16, 5), Obj("circle", "blue", 24, 16, 5)],
            [True, True, False],
        ),
        # colours swapped between the two objects
        (
            "a photo of a red circle and a blue square",
            [Obj("circle", "blue", 8, 16, 5), Obj("square", "red", 24, 16, 5)],
            [True, True, False, False],
        ),
    ],
)
def test_wrong_images_fail_the_right_checks(
    caption: str, objects: list[Obj], expected: list[bool]
) -> None:
    prompt = parse_caption(caption)
    assert prompt is not None
    img = _scene(*objects)
    assert constraints(prompt, detect(img), 32) == expected
    assert check(prompt, img) is False


def test_generator_is_deterministic_per_seed_and_index() -> None:
    cfg = SynthConfig(out=None, n=10, seed=5)  # type: ignore[arg-type]
    a_img, a_rec = generate_sample(3, cfg)
    b_img, b_rec = generate_sample(3, cfg)
    assert np.array_equal(a_img, b_img) and a_rec == b_rec
    c_img, _ = generate_sample(3, SynthConfig(out=None, n=10, seed=6))  # type: ignore[arg-type]
    assert not np.array_equal(a_img, c_img)


def test_degradation_rates_are_respected() -> None:
    cfg = SynthConfig(
        out=None,
        n=400,
        seed=1,
        degradations=Degradations.parse("blur=1,noise=0,contrast=0,jpeg=0,caption=0"),
    )  # type: ignore[arg-type]
    records = [generate_sample(i, cfg)[1] for i in range(50)]
    assert all('"blur"' in r["degradations"] for r in records)
    assert all(r["caption"] == r["clean_caption"] for r in records)
    clean = SynthConfig(out=None, n=1, degradations=Degradations.parse("none"))  # type: ignore[arg-type]
    img, rec = generate_sample(0, clean)
    assert rec["degradations"] == "[]"
    assert check(parse_caption(rec["caption"]), img)  # type: ignore[arg-type]


def test_caption_corruption_changes_exactly_one_word_or_drops_all() -> None:
    rng = np.random.default_rng(0)
    caption = "a photo of a red circle and a blue square"
    for _ in range(50):
        new, record = corrupt_caption(caption, rng)
        if record["mode"] == "drop":
            assert new == "a photo"
        else:
            diff = [(a, b) for a, b in zip(caption.split(), new.split(), strict=True) if a != b]
            assert diff == [(record["from"], record["to"])]
