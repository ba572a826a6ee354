"""`miro eval text-reliance`: zero for a model that cannot read its captions, positive for one
that does, reproducible, and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from miro_train.checkpoint import save_checkpoint
from miro_train.data import iter_captions, open_shards
from miro_train.models import build_model
from miro_train.text import WordVocab
from miro_train.text_reliance import TextRelianceConfig, text_reliance
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


def test_cli_prints_table_and_rejects_bad_input(shards: Path, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run", shards, reads_text=True)
    args = ["eval", "text-reliance", str(ckpt), "--shards", str(shards), "--samples", "16",
            "--batch-size", "8", "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [*args, "--times", "0.5"])
    assert result.exit_code == 0, result.output
    assert "t = 0.5" in result.output and "step_0000010" in result.output
    for bad, message in [
        (["--times", "0.5,x"], "--times"),
        (["--times", "1.0"], "strictly between 0 and 1"),
        (["--batch-size", "1"], "at least 2"),
    ]:
        result = runner.invoke(app, [*args, *bad])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    missing = runner.invoke(app, ["eval", "text-reliance", str(tmp_path / "nope"), "--shards",
                                  str(shards)])  # fmt: skip
    assert missing.exit_code == 2 and "Traceback" not in missing.output
