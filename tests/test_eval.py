"""The Shapes World GenEval: prompts, scoring of right and wrong images, manifests, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cli.main import app
from miro_data.shapes import CATEGORIES, parse_caption
from miro_data.synth import clean_sample
from miro_train.evaluate import GenevalConfig, geneval, geneval_prompts, score_geneval
from miro_train.following import following
from miro_train.imagefolder import write_manifest
from miro_train.stats import Estimate

runner = CliRunner()


def _clean_images(prompts: list[str], size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([clean_sample(parse_caption(p), size, rng)[1] for p in prompts])  # type: ignore[arg-type]


def test_prompt_set_is_balanced_fixed_and_distinct() -> None:
    prompts = geneval_prompts(10, seed=3)
    assert prompts == geneval_prompts(10, seed=3) and prompts != geneval_prompts(10, seed=4)
    categories = [parse_caption(p).category for p in prompts]  # type: ignore[union-attr]
    assert [categories.count(c) for c in CATEGORIES] == [10] * 6
    assert len(set(prompts[30:40])) == 10  # colors has 18 distinct prompts
    assert len(set(prompts[:10])) == 3  # single_object has only three: they repeat in turn
    assert sorted(prompts[:10].count(p) for p in set(prompts[:10])) == [3, 3, 4]
    assert len(set(prompts[10:20])) == 6  # two_object has six


def test_clean_renders_score_100_and_wrong_images_fail() -> None:
    prompts = geneval_prompts(8, seed=0)
    clean = score_geneval(prompts, _clean_images(prompts))
    assert clean.overall == 1.0 and all(v == 1.0 for v in clean.categories.values())
    blank = np.full((len(prompts), 32, 32, 3), 40, np.uint8)
    assert score_geneval(prompts, blank).overall == 0.0
    # the right shapes for the wrong prompts: each image answers the next category's prompt
    shifted = score_geneval(prompts[8:] + prompts[:8], _clean_images(prompts))
    assert shifted.overall < 0.5


def test_shape_following_tells_the_asked_shape_from_shapes_drawn_whatever_is_asked() -> None:
    prompts = [f"a photo of a {s}" for s in ("circle", "square", "triangle") for _ in range(4)]
    right = following(prompts, _clean_images(prompts))
    assert right["following"] == Estimate(1.0, 1.0, 1.0) and right["objects"].value == 1.0
    # a model that draws a circle and a square whatever the caption says: two of three
    # single-object prompts pass, and it follows the shape word not at all
    both = _clean_images(["a photo of a circle and a square"] * len(prompts))
    assert score_geneval(prompts, both).categories["single_object"] == 2 / 3
    ignored = following(prompts, both)
    assert ignored["following"] == Estimate(0.0, 0.0, 0.0) and ignored["objects"].value == 2.0
    # one asked circle of four draws the square instead: the interval opens below the value
    mixed = _clean_images(prompts)
    mixed[0] = _clean_images(["a photo of a square"])[0]
    partial = following(prompts, mixed)["following"]
    assert partial.value == 0.875 and partial.low < 0.875 and partial.high == 1.0
    # two shapes asked are enough: a circle drawn for half the squares loses half the following
    two = _clean_images([f"a photo of a {s}" for s in ["circle"] * 6 + ["square"] * 2])
    assert following(prompts[:8], two)["following"].value == 0.5
    assert following(prompts[:4], _clean_images(prompts[:4])) == {}  # one shape: no contrast


def test_colour_following_tells_the_asked_colour_from_colours_drawn_whatever_is_asked() -> None:
    asked = ("red", "blue", "yellow")
    prompts = [f"a photo of a {c} {s}" for c in asked for s in ("circle", "square")]
    right = following(prompts, _clean_images(prompts), "color")
    assert right["following"] == Estimate(1.0, 1.0, 1.0) and right["objects"].value == 1.0
    # red and blue objects whatever is asked: the colours check passes two prompts of three
    # (shapes aside), and the colour word is not followed
    both = _clean_images(["a photo of a red circle and a blue square"] * len(prompts))
    ignored = following(prompts, both, "color")
    assert ignored["following"] == Estimate(0.0, 0.0, 0.0) and ignored["objects"].value == 2.0
    # the shape words are another attribute: these prompts say nothing of single objects
    assert following(prompts, both, "shape") == {}
    assert following(prompts[:2], _clean_images(prompts[:2]), "color") == {}  # red alone


def test_geneval_of_a_manifest_writes_results_and_grids(tmp_path: Path) -> None:
    prompts = geneval_prompts(2, seed=0)
    images = _clean_images(prompts)
    images[0] = 40  # one blank image fails
    manifest = write_manifest(tmp_path / "imgs", prompts, images, [{}] * len(prompts))
    result = geneval(GenevalConfig(out=tmp_path / "eval", manifest=manifest))
    assert result.categories["single_object"] == 0.5 and result.n_images == 12
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["overall"] == result.overall
    # every figure carries its 95 % interval: one failed image of two makes single_object's
    # wide; the categories where every image passed have none
    assert saved["intervals"]["single_object"] == [0.0, 1.0]
    assert saved["intervals"]["counting"] == [1.0, 1.0]
    assert saved["interval"][0] < saved["overall"] <= saved["interval"][1] == 1.0
    assert "[0.0, 100.0]" in (tmp_path / "eval" / "results.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "eval" / "per_image.jsonl").open()]
    assert [r["prompt"] for r in rows] == prompts and [r["passed"] for r in rows][:2] == [
        False,
        True,
    ]
    assert "| overall |" in (tmp_path / "eval" / "results.md").read_text()
    assert len(list((tmp_path / "eval").glob("grid_*.png"))) == 6
    # the blank image was the asked circle: half of the two shapes asked is followed
    assert saved["single_object_following"]["value"] == 0.5
    assert saved["colors_following"]["value"] == 1.0  # two colours asked, each drawn


def test_geneval_reports_shape_and_colour_following(tmp_path: Path) -> None:
    prompts = geneval_prompts(3, seed=0)  # single objects: each of the three shapes once
    manifest = write_manifest(tmp_path / "imgs", prompts, _clean_images(prompts), [{}] * 18)
    geneval(GenevalConfig(out=tmp_path / "eval", manifest=manifest))
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["single_object_following"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert saved["single_object_objects"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert saved["colors_following"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    text = (tmp_path / "eval" / "results.md").read_text()
    assert "shape following 100.0 [100.0, 100.0]" in text
    assert "colour prompts: colour following 100.0 [100.0, 100.0]" in text


def test_eval_cli_scores_a_manifest_and_refuses_bad_input(tmp_path: Path, monkeypatch) -> None:
    prompts = geneval_prompts(1, seed=0)
    manifest = write_manifest(tmp_path / "imgs", prompts, _clean_images(prompts), [{}] * 6)
    result = runner.invoke(
        app, ["eval", "geneval", "--manifest", str(manifest), "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 0 and "overall" in result.stdout
    result = runner.invoke(
        app, ["eval", "rewards", str(manifest), "-r", "contrast,shapes_alignment"]
    )
    assert result.exit_code == 0
    rewards = json.loads((tmp_path / "imgs" / "rewards.json").read_text())
    assert rewards["shapes_alignment"]["mean"] == 1.0 and rewards["contrast"]["n"] == 6
    assert rewards["shapes_alignment"]["low"] == rewards["shapes_alignment"]["high"] == 1.0
    assert rewards["contrast"]["low"] <= rewards["contrast"]["mean"] <= rewards["contrast"]["high"]
    monkeypatch.chdir(tmp_path / "imgs")  # the default --out, ./geneval, is relative
    bad = runner.invoke(app, ["eval", "geneval", "--manifest", str(tmp_path / "nope.jsonl")])
    assert bad.exit_code == 2 and "manifest not found" in bad.stderr
    assert not (tmp_path / "imgs" / "geneval").exists()  # bad input writes nothing
    both = runner.invoke(app, ["eval", "geneval"])
    assert both.exit_code == 2 and "one of the two" in both.stderr
