"""miro_train.stats with known answers: bootstrap intervals, paired differences, the speed-up."""

from __future__ import annotations

import numpy as np
import pytest

from miro_data.common import MiroError
from miro_train.evaluate import geneval_prompts
from miro_train.stats import Estimate, bootstrap, fmt, layout_of, speedup

PER_PROMPT = 4
PROMPTS = [p for p in geneval_prompts(8) for _ in range(PER_PROMPT)]  # 48 prompts × 4 images


def _passes(rate: float, seed: int, n: int = len(PROMPTS)) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(float)


def test_constant_data_gives_a_zero_width_interval() -> None:
    est = bootstrap({"geneval": np.ones(len(PROMPTS)), "reward/x": np.full(len(PROMPTS), 0.25)},
                    PROMPTS)  # fmt: skip
    assert est["geneval"] == Estimate(1.0, 1.0, 1.0)
    assert est["geneval/counting"] == Estimate(1.0, 1.0, 1.0)
    assert est["reward/x"].high - est["reward/x"].low == pytest.approx(0, abs=1e-15)


def test_intervals_cover_the_estimate_and_are_exactly_reproducible() -> None:
    values = {"geneval": _passes(0.3, 1), "reward/x": np.random.default_rng(2).normal(size=192)}
    values["reward/x"][::7] = np.nan  # undefined scores are left out, as in reward means
    first, again = bootstrap(values, PROMPTS), bootstrap(values, PROMPTS)
    assert first == again
    for e in first.values():
        assert e.low < e.value < e.high
    # the overall score is the mean of the six categories, as score_geneval has it
    cats = [first[f"geneval/{c}"].value for c in
            ("single_object", "two_object", "counting", "colors", "position", "color_attr")]  # fmt: skip
    assert first["geneval"].value == pytest.approx(np.mean(cats))
    assert first["reward/x"].value == pytest.approx(np.nanmean(values["reward/x"]))
    # 192 images of a 30 % pass rate: the overall interval is several points wide
    assert 0.05 < first["geneval"].high - first["geneval"].low < 0.3
    assert bootstrap(values, PROMPTS, seed=1) != first  # the seed is what fixes them


def test_more_training_seeds_narrow_the_interval() -> None:
    one = bootstrap({"geneval": _passes(0.4, 3)}, PROMPTS)["geneval"]
    three = bootstrap({"geneval": np.stack([_passes(0.4, s) for s in (3, 4, 5)])}, PROMPTS)
    assert three["geneval"].high - three["geneval"].low < one.high - one.low


def test_paired_difference_cancels_what_both_sides_share() -> None:
    base = np.random.default_rng(6).normal(size=192) * 10  # prompts differ a lot…
    diff = bootstrap({"reward/x": base + 0.5}, PROMPTS, baseline={"reward/x": base})["reward/x"]
    assert diff.value == pytest.approx(0.5) and diff.high - diff.low < 1e-9  # …but not the shift
    unpaired = bootstrap({"reward/x": base + 0.5}, PROMPTS)["reward/x"]
    assert unpaired.high - unpaired.low > 1.0


def test_a_large_shift_establishes_the_speed_up() -> None:
    base_final = _passes(0.10, 7)
    miro = [_passes(rate, 8 + i) for i, rate in enumerate((0.05, 0.5, 0.6))]
    steps = [500, 1000, 1500]
    est = [bootstrap({"geneval": m}, PROMPTS)["geneval"] for m in miro]
    diffs = [bootstrap({"geneval": m}, PROMPTS, baseline={"geneval": base_final})["geneval"]
             for m in miro]  # fmt: skip
    base = bootstrap({"geneval": base_final}, PROMPTS)["geneval"]
    result = speedup(steps, est, diffs, base, 1500)
    assert result["established"] and result["step"] == 1000 and result["speedup"] == 1.5
    assert not result["lower_bound"]


def test_the_issues_example_is_not_established() -> None:
    # issue 20: MIRO 11.5 at its first evaluation vs the baseline's final 10.2, on
    # 16 prompts per category × 4 images: the difference's interval spans zero
    base = Estimate(0.102, 0.07, 0.135)
    est = [Estimate(0.115, 0.08, 0.15), Estimate(0.117, 0.08, 0.15), Estimate(0.094, 0.06, 0.13)]
    diffs = [
        Estimate(0.013, -0.03, 0.055),
        Estimate(0.015, -0.03, 0.06),
        Estimate(-0.008, -0.05, 0.03),
    ]
    result = speedup([500, 1000, 1500], est, diffs, base, 1500)
    assert result == {"established": False, "step": None, "speedup": None, "lower_bound": False,
                      "difference": diffs[-1].to_dict()}  # fmt: skip
    # and from per-image data of that size: 1.3 points apart is well inside the noise
    prompts = [p for p in geneval_prompts(16) for _ in range(4)]
    a, b = _passes(0.102, 11, len(prompts)), _passes(0.115, 12, len(prompts))
    diff = bootstrap({"geneval": b}, prompts, baseline={"geneval": a})["geneval"]
    assert diff.low < 0 < diff.high


def test_a_category_with_all_its_prompts_keeps_them() -> None:
    # Shapes World has three single-object prompts: geneval_prompts(8) asks each of them, so
    # they are the category's whole population and only images and seeds are resampled. The
    # colours have 18 prompts, 8 of them asked: a sample, so the prompts are resampled too.
    layout = layout_of(PROMPTS)
    assert layout.complete == {"single_object", "two_object"}
    by_prompt = {text: float(i % 2) for i, text in enumerate(dict.fromkeys(PROMPTS))}
    passes = np.array([by_prompt[p] for p in PROMPTS])  # each prompt always or never passes
    est = bootstrap({"geneval": passes}, PROMPTS)
    single = est["geneval/single_object"]
    assert single.low == single.value == single.high  # nothing unknown: every draw is known
    colours = est["geneval/colors"]
    assert colours.high - colours.low > 0.3  # which prompts were asked is the uncertainty
    # the same data under prompts that are not all of the category's: resampled again
    sample = [p for p in PROMPTS if p != "a photo of a triangle"]
    part = bootstrap({"geneval": np.array([by_prompt[p] for p in sample])}, sample)
    assert "single_object" not in layout_of(sample).complete
    assert part["geneval/single_object"].high > part["geneval/single_object"].low


def test_mismatched_inputs_are_one_clear_error() -> None:
    with pytest.raises(MiroError, match="do not match"):
        bootstrap({"geneval": np.ones(5)}, PROMPTS)
    with pytest.raises(MiroError, match="same images"):
        bootstrap({"geneval": np.ones(192)}, PROMPTS, baseline={"geneval": np.ones((2, 192))})
    with pytest.raises(MiroError, match="no images"):
        layout_of([])


def test_a_bound_that_rounds_to_zero_is_printed_without_a_sign() -> None:
    # a paired difference's lower bound of -1e-17 is zero, not "below zero"
    assert fmt(Estimate(0.484, -1e-17, 0.809), 100) == "48.4 [0.0, 80.9]"
    assert fmt(Estimate(-0.5, -0.7, -0.3), digits=".4g") == "-0.5 [-0.7, -0.3]"
