"""Shared fixtures: one small Shapes World corpus taken through the real pipeline once per session.

synth → file:// URLs → img2dataset → annotate (weight-free rewards) → bins → reshard.
Tests that only read these artefacts share them; tests that change a database copy it first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MIRO_NO_PROGRESS", "1")

CLASSIC = ("sharpness", "noise", "colorfulness", "contrast", "shapes_alignment")


@dataclass(frozen=True)
class Pipeline:
    corpus: Path  # synth output: images/ + urls.parquet
    url_list: Path
    shards: Path  # img2dataset output
    db: Path
    edges_version: int
    train: Path  # reshard output
    n: int
    extra_urls: int  # rows added to the URL list that cannot download


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    import polars as pl

    from miro_data.annotate import AnnotateConfig, annotate
    from miro_data.bins import BinsConfig, bins
    from miro_data.download import DownloadConfig, download
    from miro_data.reshard import ReshardConfig, reshard
    from miro_data.synth import SynthConfig, synth

    root = tmp_path_factory.mktemp("pipeline")
    n = 240
    url_list = synth(SynthConfig(out=root / "corpus", n=n, size=32, seed=7))
    # Two rows that must fail: a missing file and bytes that are not an image.
    (root / "corpus" / "not-an-image.png").write_bytes(b"this is text, not a PNG")
    df = pl.read_parquet(url_list)
    bad = df.head(2).with_columns(
        pl.Series("url", ["images/missing.png", "not-an-image.png"]),
        pl.Series("index", [-1, -2]),
    )
    pl.concat([df, bad]).write_parquet(url_list)
    shards = root / "shards"
    download(
        DownloadConfig(
            url_list=url_list, out=shards, image_size=32, resize_mode="no", encode_format="png",
            processes=1, threads=8, shard_size=100,
        )
    )  # fmt: skip
    db = root / "corpus.duckdb"
    annotate(AnnotateConfig(shards=str(shards), db=db, rewards=CLASSIC))
    version = bins(BinsConfig(db=db, n_bins=8))
    train = root / "train"
    reshard(ReshardConfig(shards=str(shards), db=db, out=train, shard_size=64, shuffle_seed=3))
    return Pipeline(root / "corpus", url_list, shards, db, version, train, n, 2)


HF_WORDS = ["a", "photo", "of", "red", "blue", "circle", "square", "triangle", "and", "two"]


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random T5 encoder (with a word-level tokenizer) and a tiny AutoencoderKL, saved
    with save_pretrained: the real formats of `--text-encoder` / `--vae` / reshard hooks."""
    import torch
    from diffusers import AutoencoderKL
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("hf")
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(HF_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(vocab),
            d_model=24,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=3,
            decoder_start_token_id=0,
        )
    )
    t5.save_pretrained(root / "t5")
    fast.save_pretrained(root / "t5")
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )
    vae.save_pretrained(root / "vae")
    return root / "t5", root / "vae"
