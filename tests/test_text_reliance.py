"""`miro eval text-reliance`: zero for a model that cannot read its captions, positive for one
that does, reproducible, and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from miro_data.shapes import COLORS, SHAPES
from miro_train.checkpoint import save_checkpoint
from miro_train.data import iter_captions, open_shards
from miro_train.models import build_model
from miro_train.text import WordVocab
from miro_train.text_reliance import TextRelianceConfig, next_word, summarise, text_reliance
from tests.train_fixtures import tiny_spec, write_shards

runner = CliRunner()
REWARDS = ("sharpness", "noise")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), n=48, rewards=REWARDS)


def _checkpoint(run: Path, shards: Path, *, reads_text: bool) -> Path:
    """An untrained micro UNet whose zero-initialised layers are made random, so its output
    depends on the image and t; with `reads_text`, on the conditioning tokens too."""
    captions = iter_captions(open_shards(shards), 1000)
    vocab = WordVocab.build(captions, max_len=8).words
    # without pooling, the backbone reads the text by attention only
    spec = tiny_spec("unet", rewards=REWARDS, vocab=vocab, pool=False)
    torch.manual_seed(0)
    model = build_model(spec)
    for name, p in model.backbone.named_parameters():
        is_attention_out = ".attn.proj." in name
        if (p.abs().sum() == 0 and not is_attention_out) or (is_attention_out and reads_text):
            torch.nn.init.normal_(p, std=0.2)
    optimizer = torch.optim.AdamW(model.parameters())
    return save_checkpoint(run, 10, spec=spec, model=model, ema=model, optimizer=optimizer)


def test_blind_model_scores_zero_and_reading_model_rises(shards: Path, tmp_path: Path) -> None:
    blind = _checkpoint(tmp_path / "blind", shards, reads_text=False)
    reader = _checkpoint(tmp_path / "reader", shards, reads_text=True)
    out = tmp_path / "reliance.json"
    # More samples than the shards hold: each is read once (batches of 20, 20 and 8).
    cfg = TextRelianceConfig(checkpoints=(blind, reader), shards=shards, samples=1000,
                             times=(0.5, 0.9), batch_size=20, device="cpu", out=out)  # fmt: skip
    results = text_reliance(cfg)
    assert [r["step"] for r in results] == [10, 10] and results[0]["samples"] == 48
    for row in results[0]["times"]:  # the attention to the text is zero: captions change nothing
        assert row["loss"] > 0 and row["loss_shifted"] == row["loss"] and row["rise"] == 0
    for row in results[1]["times"]:
        assert row["loss"] > 0 and row["loss_shifted"] != row["loss"]
    assert results[1]["mean_rise"] != 0
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(results))
    assert saved["config"]["checkpoints"] == [str(blind), str(reader)]
    assert text_reliance(cfg) == results  # same seed: the same samples and noise
    assert results[0]["low"] == results[0]["high"] == 0  # no rise in any resample either
    assert results[1]["low"] <= results[1]["mean_rise"] <= results[1]["high"]


def test_next_word_changes_only_the_named_words() -> None:
    colour, shape = next_word(COLORS), next_word(SHAPES)
    caption = "a photo of a red circle left of an orange square"
    assert colour(caption) == "a photo of a green circle left of an red square"
    assert shape(caption) == "a photo of a red square left of an orange triangle"
    assert shape("a photo of three triangles") == "a photo of three circles"  # plurals too
    assert colour("a photo of three triangles") == "a photo of three triangles"
    assert colour("a reddish circle") == "a reddish circle"  # whole words only


@pytest.mark.parametrize("swap, words", [("colour", COLORS), ("shape", SHAPES)])
def test_word_swap_measures_the_captions_that_name_a_word(
    shards: Path, tmp_path: Path, swap: str, words: tuple[str, ...]
) -> None:
    blind = _checkpoint(tmp_path / "blind", shards, reads_text=False)
    reader = _checkpoint(tmp_path / "reader", shards, reads_text=True)
    cfg = TextRelianceConfig(checkpoints=(blind, reader), shards=shards, samples=48,
                             times=(0.5, 0.9), batch_size=20, device="cpu", swap=swap)  # fmt: skip
    results = text_reliance(cfg)
    captions = list(iter_captions(open_shards(shards), 48))
    naming = sum(any(w in c.split() or f"{w}s" in c.split() for w in words) for c in captions)
    assert naming > 0
    assert [r["samples"] for r in results] == [naming, naming]
    assert results[0]["mean_rise"] == results[0]["low"] == results[0]["high"] == 0
    assert results[1]["mean_rise"] != 0 and results[1]["swap"] == swap


def test_summarise_is_a_ratio_of_sums_with_its_interval() -> None:
    own = np.random.default_rng(1).random((2, 64)) + 1.0  # (T, N)
    same = summarise(np.stack([own, own], axis=1), (0.5, 0.9), seed=0)
    assert same["mean_rise"] == same["low"] == same["high"] == 0
    tenth = summarise(np.stack([own, 1.1 * own], axis=1), (0.5, 0.9), seed=0)
    assert tenth["mean_rise"] == pytest.approx(0.1) and tenth["samples"] == 64
    assert tenth["low"] == pytest.approx(0.1) and tenth["high"] == pytest.approx(0.1)
    rise = np.stack([own, own + np.random.default_rng(2).normal(0.1, 0.5, own.shape)], axis=1)
    spread = summarise(rise, (0.5, 0.9), seed=0)
    assert spread["low"] < spread["mean_rise"] < spread["high"]


def test_cli_prints_table_and_rejects_bad_input(shards: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run", shards, reads_text=True)
    args = ["eval", "text-reliance", str(ckpt), "--shards", str(shards), "--samples", "16",
            "--batch-size", "8", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [*args, "--times", "0.5"])
    assert result.exit_code == 0, result.output
    assert "t = 0.5" in result.output and "step_0000010" in result.output
    result = runner.invoke(app, [*args, "--times", "0.5", "--swap", "colour"])
    assert result.exit_code == 0 and "colour words changed" in result.output, result.output
    for bad, message in [
        (["--times", "0.5,x"], "--times"),
        (["--times", "1.0"], "strictly between 0 and 1"),
        (["--batch-size", "1"], "at least 2"),
        (["--swap", "size"], "--swap must be one of caption, colour, shape"),
    ]:
        result = runner.invoke(app, [*args, *bad])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    missing = runner.invoke(app, ["eval", "text-reliance", str(tmp_path / "nope"), "--shards",
                                  str(shards)])  # fmt: skip
    assert missing.exit_code == 2 and "Traceback" not in missing.output
