"""One sampler: the settings record, the seed convention, the image folder and JSON writers.

`miro sample` and `miro eval geneval` draw through the same path, so the same prompt, seed
and settings give bit-identical images in both, wherever the prompt sits in the run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_fixtures import tiny_spec
from typer.testing import CliRunner

from cli.main import app
from miro_data.common import MiroError, save_json
from miro_train.checkpoint import save_checkpoint
from miro_train.evaluate import GENEVAL_SAMPLER, geneval_prompts
from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings
from miro_train.imagefolder import read_manifest, read_rows, write_manifest
from miro_train.models import build_model
from miro_train.sample import generate, load_bundle
from miro_train.sampler import SamplerSettings, draw_numbers, noise_seed
from miro_train.text import WordVocab

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained micro UNet over two rewards whose zero-initialised layers are made random,
    so its images depend on the noise, the caption and the targets."""
    vocab = WordVocab.build(geneval_prompts(4), max_len=8).words
    spec = tiny_spec("unet", rewards=("a", "b"), vocab=vocab)
    torch.manual_seed(0)
    model = build_model(spec)
    for p in model.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.2)
    run = tmp_path_factory.mktemp("sampler") / "run"
    optimizer = torch.optim.AdamW(model.parameters())
    return save_checkpoint(run, 1, spec=spec, model=model, ema=model, optimizer=optimizer)


def _images_by_draw(manifest: Path) -> dict[tuple[str, int], np.ndarray]:
    rows, images = read_manifest(manifest)
    return {(r["prompt"], r["draw"]): img for r, img in zip(rows, images, strict=True)}


def test_sample_and_geneval_draw_identical_images_for_the_same_prompt_and_seed(
    checkpoint: Path, tmp_path: Path
) -> None:
    # batch size 1: an image then shares its batch with nothing, so no float kernel choice
    # depends on what else is drawn; every other setting is spelled as each command spells it
    settings = ["--seed", "5", "--steps", "2", "--guidance", "3", "--target", "a=0.5",
                "--batch-size", "1"]  # fmt: skip
    scored = tmp_path / "geneval"
    args = ["eval", "geneval", str(checkpoint), "--out", str(scored), "--prompts-per-category",
            "1", "--images-per-prompt", "2", *settings]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    from_geneval = _images_by_draw(scored / "manifest.jsonl")
    assert len(from_geneval) == 12
    # two of GenEval's prompts, in the other order and at other positions than GenEval drew them
    distinct = list(dict.fromkeys(p for p, _ in from_geneval))
    picked = [distinct[-1], distinct[-2]]
    samples = tmp_path / "samples"
    args = ["sample", str(checkpoint), "--out", str(samples), "--n", "2", *settings]
    args += [a for p in picked for a in ("-p", p)]
    assert runner.invoke(app, args).exit_code == 0
    from_sample = _images_by_draw(samples / "manifest.jsonl")
    assert sorted(from_sample) == sorted((p, k) for p in picked for k in (0, 1))
    for key, image in from_sample.items():
        np.testing.assert_array_equal(image, from_geneval[key])
    # ... and the comparison can fail: other draws, prompts and seeds are other images
    (p0, p1) = picked
    assert not np.array_equal(from_sample[(p0, 0)], from_sample[(p0, 1)])
    assert not np.array_equal(from_sample[(p0, 0)], from_sample[(p1, 0)])
    rows = read_rows(samples / "manifest.jsonl")
    assert {r["seed"] for r in rows} == {5} and rows[0]["targets"] == {"a": 0.5, "b": 1.0}
    bundle = load_bundle(checkpoint)
    other_seed = SamplerSettings(seed=6, steps=2, guidance=3, target="a=0.5", batch_size=1)
    again = generate(bundle, [p0], other_seed)[0]
    assert not np.array_equal(again, from_sample[(p0, 0)])
    # a manifest row is enough to redraw its image: prompt, seed and draw
    redrawn = generate(bundle, [p1], replace(other_seed, seed=5), draws=[1])[0]
    np.testing.assert_array_equal(redrawn, from_sample[(p1, 1)])


def test_the_seed_convention_is_pinned() -> None:
    """Changing these numbers changes every image every command draws for a given --seed."""
    assert draw_numbers(["x", "y", "x", "x", "y"]) == [0, 0, 1, 2, 1]
    assert noise_seed(0, "a photo of a circle", 0) == noise_seed(0, "a photo of a circle", 0)
    assert noise_seed(0, "a photo of a circle", 0) == 4899028646473592699
    seeds = {noise_seed(s, p, k) for s in (0, 1) for p in ("a", "b") for k in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)


def test_one_settings_record_with_each_commands_defaults_and_option_names() -> None:
    assert (SamplerSettings().steps, SamplerSettings().guidance) == (50, 7.0)  # miro sample
    assert replace(GENEVAL_SAMPLER, batch_size=32) == SamplerSettings()
    assert (EXPERIMENT_SAMPLER.steps, EXPERIMENT_SAMPLER.guidance) == (25, 3.0)
    assert EvalSettings().sampler is EXPERIMENT_SAMPLER
    for kwargs, fragment in [
        ({"steps": 0}, "--steps must be positive"),
        ({"steps": 2.0}, "--steps must be an integer"),
        ({"guidance": math.nan}, "--guidance must be a finite"),
        ({"guidance_interval": (0.5,)}, "--guidance-interval: expected two noise levels"),
        ({"guidance_interval": (0.2, 1.5)}, "--guidance-interval must be in [0, 1], not 1.5"),
        ({"guidance_interval": (0.6, 0.3)}, "LO must be below HI, got 0.6,0.3"),
        ({"seed": -1}, "--seed must be 0 or more"),
        ({"preset": "pair:a@0.5"}, "write pair:A,B@t"),
        ({"target": None}, "--target must be text"),
        ({"weights": "best"}, "--weights must be one of ema, model"),
        ({"device": "gpu"}, "--device must be"),
    ]:
        with pytest.raises(MiroError, match=re.escape(fragment)):
            SamplerSettings(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(MiroError, match="--sampler-steps must be positive"):
        replace(EXPERIMENT_SAMPLER, steps=0)


def test_experiments_name_their_sampler_steps_option(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["experiment", "compare", str(tmp_path / "s"), str(tmp_path / "o"), "--sampler-steps", "0"],
    )
    assert result.exit_code == 2 and "--sampler-steps must be positive" in result.stderr
    assert not any(tmp_path.iterdir())


def test_image_folder_round_trip_and_one_line_for_bad_rows(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    rows = [{"draw": k, "score": math.nan} for k in range(3)]
    manifest = write_manifest(tmp_path / "f", ["p", "p", "q"], images, rows)
    read, pixels = read_manifest(manifest)
    assert [r["file"] for r in read] == [f"images/{i:06d}.png" for i in range(3)]
    assert [(r["prompt"], r["draw"], r["score"]) for r in read] == [
        ("p", 0, None),
        ("p", 1, None),
        ("q", 2, None),
    ]
    np.testing.assert_array_equal(np.stack(pixels), images)
    assert Image.open(tmp_path / "f" / read[2]["file"]).format == "PNG"
    bad = tmp_path / "bad.jsonl"
    for text, fragment in [
        ('{"prompt": "p", "file": "x.png"}\n\n[1, 2]\n', "bad.jsonl:3: expected a JSON object"),
        ('{"prompt": 3, "file": "x.png"}\n', "bad.jsonl:1: expected a JSON object"),
        ("\n", "is empty"),
        ('{"prompt": "p", "file": "nope.png"}\n', "bad.jsonl:1: cannot read image"),
    ]:
        bad.write_text(text)
        with pytest.raises(MiroError, match=fragment):
            read_manifest(bad)
    with pytest.raises(MiroError, match="cannot read manifest"):
        read_rows(tmp_path)


@dataclass(frozen=True)
class _Result:
    path: Path
    value: float


def test_save_json_writes_plain_json_for_configs_and_numpy(tmp_path: Path) -> None:
    payload = {"config": _Result(tmp_path / "x", math.inf), "n": np.int64(3),
               "mean": np.float32(0.5), "values": np.array([1.0, np.nan])}  # fmt: skip
    save_json(tmp_path / "r.json", payload)
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "config": {"path": str(tmp_path / "x"), "value": None},
        "n": 3,
        "mean": 0.5,
        "values": [1.0, None],
    }
