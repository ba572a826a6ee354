"""Reshard hooks precompute caption embeddings and VAE latents that the trainer then reads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from miro_data.common import MiroError
from miro_data.decode import decode_image
from miro_data.encoders import FrozenTextEncoder, ImageAutoencoder
from miro_data.hooks import build_hooks
from miro_data.reshard import ReshardConfig, reshard
from miro_train.checkpoint import read_meta
from miro_train.train import TrainConfig, train


@pytest.fixture(scope="module")
def hooked(pipeline, hf_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    t5, vae = hf_models
    out = tmp_path_factory.mktemp("hooked") / "train"
    reshard(ReshardConfig(shards=str(pipeline.shards), db=pipeline.db, out=out, shard_size=120,
                          hooks=(f"text={t5}", f"vae={vae}"), hook_batch_size=16))  # fmt: skip
    return out


def test_hooks_store_exactly_what_the_encoders_compute(hooked: Path, hf_models) -> None:
    t5, vae = (str(p) for p in hf_models)
    manifest = json.loads((hooked / "manifest.json").read_text())
    assert manifest["hooks"] == {"text": t5, "vae": vae}
    text, ae = FrozenTextEncoder(t5), ImageAutoencoder(vae)
    samples = list(wds.WebDataset(str(hooked / "000000.tar"), shardshuffle=False))[:6]
    for sample in samples:
        emb = np.load(io.BytesIO(sample["txt_emb.npy"]))
        latent = np.load(io.BytesIO(sample["latent.npy"]))
        assert emb.dtype == latent.dtype == np.float16
        ref, mask = text.encode([sample["txt"].decode()])
        expected = ref[0][mask[0]].numpy()
        assert emb.shape == expected.shape  # padding dropped: one row per real token
        np.testing.assert_allclose(emb, expected, atol=2e-3, rtol=2e-3)
        image = decode_image(sample["png"])
        ref_latent = ae.encode(image[None]).numpy()[0]
        assert latent.shape == (4, 16, 16)
        np.testing.assert_allclose(latent, ref_latent, atol=2e-2, rtol=1e-2)


def test_the_trainer_reads_the_precomputed_tensors(hooked: Path, hf_models, tmp_path: Path) -> None:
    from train_fixtures import micro_config

    t5, vae = (str(p) for p in hf_models)
    torch.manual_seed(0)
    ckpt = train(TrainConfig(shards=hooked, out=tmp_path / "run", model=str(micro_config(tmp_path / "m.json")),
                             text_encoder=t5, vae=vae, resolution=32, steps=2, batch_size=4,
                             ckpt_every=2, log_every=1, workers=0,
                             rewards=("shapes_alignment", "noise")))  # fmt: skip
    spec = read_meta(ckpt)["model"]
    assert spec["text"]["precomputed"] and spec["image"]["precomputed"]


def test_bad_hook_specs_are_refused() -> None:
    for spec in ("text", "clip=foo", "vae="):
        with pytest.raises(MiroError, match="expected text=MODEL or vae=MODEL"):
            build_hooks([spec])
