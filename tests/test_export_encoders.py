"""`miro export` of a model with a Hugging Face text encoder in VAE latent space (issue 17):
the pipeline folder carries `text_encoder/`, `tokenizer/` and `vae/`, and loads in a fresh
process, with neither the run nor the encoders' own folders around, to draw `miro sample`'s
images — here fetched as a Hub repo (`from_pretrained(REPO, allow_download=True)` from a
local endpoint), loaded as diffusers users load every other model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_fixtures import serving
from PIL import Image
from train_fixtures import micro_config, write_shards

_LOAD_AND_DRAW = """
import sys, numpy as np, torch
from miro_train.pipeline import MiroPipeline
pipe = MiroPipeline.from_pretrained(sys.argv[1], allow_download=True)
out = pipe(["a photo of a blue square", "two red circle"], reward_targets={"noise": 0.5},
           negative_reward_targets={"noise": 0.0}, guidance_scale=3.0, num_inference_steps=3,
           generator=torch.Generator().manual_seed(7))
np.save(sys.argv[2], np.stack([np.asarray(im) for im in out.images]))
pipe.save_pretrained(sys.argv[3])
"""


def _miro(*args: str):
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, list(args))


def test_export_with_a_hf_text_encoder_in_latent_space_draws_miro_samples_images(
    hf_models, tmp_path
):
    from miro_train.train import TrainConfig, train

    # private copies of the encoders, removed before loading: the pipeline must hold its own
    t5, vae = tmp_path / "t5", tmp_path / "vae"
    shutil.copytree(hf_models[0], t5)
    shutil.copytree(hf_models[1], vae)
    shards = write_shards(tmp_path / "shards", n=16, per_shard=8)
    run = tmp_path / "run"
    train(TrainConfig(shards=shards, out=run, model=str(micro_config(tmp_path / "m.json")),
                      text_encoder=str(t5), vae=str(vae), resolution=32, steps=2, batch_size=4,
                      warmup=1, workers=0))  # fmt: skip
    samples = tmp_path / "samples"
    result = _miro("sample", str(run), "-o", str(samples), "-p", "a photo of a blue square",
                   "-p", "two red circle", "--steps", "3", "--guidance", "3", "--seed", "7",
                   "--target", "noise=0.5", "--negative", "noise=0")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (samples / "manifest.jsonl").read_text().splitlines()]
    expected = np.stack([np.asarray(Image.open(samples / r["file"])) for r in rows])
    assert expected.shape == (2, 32, 32, 3)

    out = tmp_path / "pipe"
    result = _miro("export", str(run), str(out))
    assert result.exit_code == 0, result.output
    assert {"text_encoder", "tokenizer", "vae", "transformer", "scheduler"} <= {
        p.name for p in out.iterdir()
    }
    index = json.loads((out / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "T5EncoderModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    vae_config = json.loads((out / "vae" / "config.json").read_text())
    spec = json.loads((out / "transformer" / "config.json").read_text())["spec"]
    assert vae_config["latents_mean"] == spec["image"]["mean"] and vae_config["scaling_factor"] == 1
    assert spec["text"]["kind"] == "hf" and spec["image"]["space"] == "latent"

    for folder in (run, t5, vae):
        shutil.rmtree(folder)
    drawn, again = tmp_path / "drawn.npy", tmp_path / "again"
    with serving() as hub:
        hub.add("miro-test/tiny-miro", out)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
               "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
        env.pop("HF_HUB_CACHE", None)
        subprocess.run([sys.executable, "-c", _LOAD_AND_DRAW, "miro-test/tiny-miro", str(drawn),
                        str(again)], check=True, env=env, cwd=tmp_path)  # fmt: skip
    assert list((tmp_path / "hf" / "hub").glob("models--miro-test--tiny-miro/snapshots/*/vae"))
    np.testing.assert_array_equal(np.load(drawn), expected)
    for name in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name

    # a damaged component is one line naming the folder, not a traceback
    from miro_data.common import MiroError
    from miro_train.pipeline import MiroPipeline

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "vae" / "config.json").write_text("{not json")
    with pytest.raises(MiroError, match="cannot load the pipeline's components"):
        MiroPipeline.from_pretrained(broken)
