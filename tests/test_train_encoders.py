"""Frozen Hugging Face text encoder and diffusers VAE (miro_data.encoders), and training in
latent space with them — on tiny randomly initialised models saved in the real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from train_fixtures import micro_config, write_shards

from miro_data.common import MiroError
from miro_data.encoders import FrozenTextEncoder, ImageAutoencoder
from miro_train.checkpoint import read_meta
from miro_train.sample import generate, load_bundle
from miro_train.sampler import SamplerSettings
from miro_train.train import TrainConfig, train

WORDS = ["a", "photo", "of", "red", "blue", "circle", "square", "triangle", "and", "two"]


@pytest.fixture(scope="module")
def models(hf_models) -> tuple[Path, Path]:
    return hf_models


def test_frozen_text_encoder_returns_token_embeddings_and_mask(models):
    enc = FrozenTextEncoder(str(models[0]), max_length=8)
    emb, mask = enc.encode(["a photo of a red circle", "a photo"])
    assert emb.shape == (2, 8, 24) and enc.dim == 24
    assert mask.sum(1).tolist() == [6, 2]
    assert not any(p.requires_grad for p in enc.model.parameters())


def test_vae_encodes_to_unscaled_latents_and_decodes_back(models):
    vae = ImageAutoencoder(str(models[1]))
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    z = vae.encode(images)
    assert z.shape == (2, 4, 16, 16) and vae.factor == 2 and vae.channels == 4
    x = vae.decode(z)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1


def test_missing_models_are_one_line_errors(tmp_path):
    with pytest.raises(MiroError, match="cannot load text encoder"):
        FrozenTextEncoder(str(tmp_path / "nope"))
    with pytest.raises(MiroError, match="cannot load VAE"):
        ImageAutoencoder(str(tmp_path / "nope"))


@pytest.mark.parametrize("precomputed", [False, True])
def test_training_in_latent_space_with_a_hf_text_encoder(models, tmp_path, precomputed):
    t5, vae = (str(p) for p in models)
    extra = {"txt_emb_dim": 24, "latent_shape": (4, 16, 16), "hooks": {"text": t5, "vae": vae}}
    shards = write_shards(tmp_path / "shards", n=16, per_shard=8, **(extra if precomputed else {}))
    cfg = TrainConfig(
        shards=shards,
        out=tmp_path / "run",
        model=str(micro_config(tmp_path / "m.json")),
        text_encoder=t5,
        vae=vae,
        resolution=32,
        steps=2,
        batch_size=4,
        ckpt_every=2,
        log_every=1,
        workers=0,
    )
    ckpt = train(cfg)
    spec = read_meta(ckpt)["model"]
    assert spec["image"]["space"] == "latent" and spec["image"]["size"] == 16
    assert (
        spec["image"]["precomputed"] is precomputed and spec["text"]["precomputed"] is precomputed
    )
    assert len(spec["image"]["mean"]) == 4 and all(s > 0 for s in spec["image"]["std"])
    images = generate(load_bundle(ckpt), ["a photo of a blue square"], SamplerSettings(steps=2))
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8
