"""`--allow-download` / `allow_download=True` (issue 17): reward and encoder weights fetched
through huggingface_hub from a LOCAL Hub endpoint on 127.0.0.1 (a threaded HTTP server that
serves tiny real checkpoints in the Hub's layout: `/{repo}/resolve/{rev}/{file}` with the
X-Repo-Commit, ETag and Content-Length headers, and the `/api/models/…` listing calls
`snapshot_download` makes), while HF_HUB_OFFLINE=1 stays set; offline stays the default."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rewards_fixtures as rf
from hub_fixtures import Hub, serving
from train_fixtures import micro_config, write_shards

from miro_data.common import MiroError

AESTHETIC_REPO = "camenduru/improved-aesthetic-predictor"
MLP = "sac+logos+ava1-l14-linearMSE.pth"


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    with serving() as hub:
        yield hub


@pytest.fixture(scope="module")
def aesthetic_files(hub, tmp_path_factory) -> dict:
    """A tiny CLIP (explicit file) and the aesthetic MLP, the MLP served as the real repo."""
    import torch

    root = tmp_path_factory.mktemp("aesthetic")
    rf.register_tiny_open_clip(root / "configs")
    clip = root / "clip.bin"
    torch.save(rf.tiny_open_clip_state(rf.TINY_L14, seed=1), clip)
    mlp = rf.aesthetic_mlp_file(root / "served" / MLP, 32, seed=2)
    hub.add(AESTHETIC_REPO, mlp.parent)
    return {"model": rf.TINY_L14, "clip_checkpoint": str(clip), "mlp": mlp}


def _ctx(files: dict, hf_home: Path, allow: bool, **extra):
    from miro_data.rewards import RewardContext

    opts = {"model": files["model"], "clip_checkpoint": files["clip_checkpoint"],
            "hf_home": str(hf_home), **extra}  # fmt: skip
    return RewardContext(options={"aesthetic": opts}, allow_download=allow)


def test_reward_weights_download_on_opt_in_and_score_as_the_same_file(
    hub, aesthetic_files, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    from miro_data.rewards import build_reward

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    home = tmp_path / "hf"
    assert constants.HF_HUB_OFFLINE  # the tests' default, as the Makefile's
    with pytest.raises(MiroError, match="--allow-download") as offline:
        build_reward("aesthetic", _ctx(aesthetic_files, home, allow=False))
    assert "\n" not in str(offline.value) and MLP in str(offline.value)
    assert not home.exists()  # offline: nothing fetched

    reward = build_reward("aesthetic", _ctx(aesthetic_files, home, allow=True))
    assert constants.HF_HUB_OFFLINE  # lifted for the download only
    cached = list((home / "hub").glob(f"models--camenduru--*/snapshots/*/{MLP}"))
    assert len(cached) == 1 and cached[0].read_bytes() == aesthetic_files["mlp"].read_bytes()
    explicit = _ctx(aesthetic_files, tmp_path / "none", allow=False,
                    checkpoint=str(aesthetic_files["mlp"]))  # fmt: skip
    images, captions = rf.sample_images()[:3], rf.sample_captions(3)
    scores = reward.score(images, captions)
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(
        scores, build_reward("aesthetic", explicit).score(images, captions)
    )
    # now in the cache: the offline default finds it
    assert reward.version == build_reward("aesthetic", _ctx(aesthetic_files, home, False)).version


@pytest.mark.parametrize(
    ("endpoint", "repo", "says"),
    [
        ("hub", "miro-test/no-such-repo", "miro-test/no-such-repo: no such repo"),
        ("hub", "miro-test/empty", f"{MLP} from http://127.0.0.1:PORT/miro-test/empty: the repo "
                                   "has no such file"),
        ("closed", AESTHETIC_REPO, "the Hub cannot be reached"),
    ],
)  # fmt: skip
def test_download_failures_are_one_line_naming_repo_file_and_cause(
    hub, aesthetic_files, tmp_path, monkeypatch, endpoint, repo, says
):
    import huggingface_hub.utils._http as hf_http

    from miro_data.rewards import build_reward

    hub.repos.setdefault("miro-test/empty", {"README.md": b"nothing here"})
    url = hub.url if endpoint == "hub" else "http://127.0.0.1:9"  # discard port: refused
    # huggingface_hub retries a refused connection 5 times, 1 to 8 s apart: the retries
    # still happen, the test only skips the waits between them
    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(MiroError) as err:
        build_reward("aesthetic", _ctx(aesthetic_files, tmp_path / "hf", True, repo=repo))
    message = str(err.value).replace(hub.url, "http://127.0.0.1:PORT")
    assert says in message and "\n" not in message, message
    assert repo in message and MLP in message


def test_encoders_download_on_opt_in_for_train_and_sample(hub, hf_models, tmp_path, monkeypatch):
    """Train on Hub ids of a text encoder and a VAE with allow_download; then, on an empty
    cache, loading refuses offline naming --allow-download, and `miro sample` with it draws."""
    from miro_train.train import TrainConfig, train

    hub.add("miro-test/tiny-t5", hf_models[0])
    hub.add("miro-test/tiny-vae", hf_models[1], prefix="vae/")
    # copies in other formats, as real repos hold: never fetched (safetensors are there)
    hub.repos["miro-test/tiny-t5"] |= {"tf_model.h5": b"tf", "pytorch_model.bin": b"pickle"}
    hub.repos["miro-test/tiny-vae"] |= {"vae/diffusion_pytorch_model.fp16.safetensors": b"x"}
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-train"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    shards = write_shards(tmp_path / "shards", n=8, per_shard=8)
    run = tmp_path / "run"
    train(TrainConfig(shards=shards, out=run, model=str(micro_config(tmp_path / "m.json")),
                      text_encoder="miro-test/tiny-t5", vae="miro-test/tiny-vae",
                      vae_subfolder="vae", resolution=32, steps=1, batch_size=4, warmup=0,
                      workers=0, allow_download=True))  # fmt: skip
    (t5_snapshot,) = (tmp_path / "hf-train" / "hub").glob("models--miro-test--tiny-t5/snapshots/*")
    assert {"config.json", "model.safetensors"} <= {p.name for p in t5_snapshot.iterdir()}
    assert not (t5_snapshot / "tf_model.h5").exists()
    assert not (t5_snapshot / "pytorch_model.bin").exists()

    from miro_train.sample import load_bundle

    # an empty cache: offline, the model's encoders are refused in one line naming the opt-in
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-sample"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(MiroError, match="--allow-download") as refused:
        load_bundle(run, "cpu")
    assert "miro-test/tiny-vae" in str(refused.value) and "\n" not in str(refused.value)
    from typer.testing import CliRunner

    from cli.main import app

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # as the Makefile sets it
    sample = ["sample", str(run), "-o", str(tmp_path / "s"), "-p", "a photo of a red circle",
              "--steps", "2", "--allow-download"]  # fmt: skip
    drawn = CliRunner().invoke(app, sample)
    assert drawn.exit_code == 0, drawn.output
    assert (tmp_path / "s" / "grid.png").is_file()
    cached = tmp_path / "hf-sample" / "hub"
    assert list(cached.glob("models--miro-test--tiny-vae/snapshots/*/vae/config.json"))


def test_snapshots_fetch_only_what_torch_reads():
    from miro_data.hub import torch_files

    files = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5",
             "flax_model.msgpack", "spiece.model", "onnx/encoder.onnx", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin",
             "vae/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin"]  # fmt: skip
    assert torch_files(files) == ["config.json", "model.safetensors", "spiece.model",
                                  "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                                  "unet/diffusion_pytorch_model.bin"]  # fmt: skip
    assert torch_files(files, "vae/") == [
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ]


def test_a_sharded_checkpoint_comes_with_its_shards_and_only_files_beside_it(
    hub, tmp_path, monkeypatch
):
    from miro_data.rewards.weights import Wanted, download_missing

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    index = {"weight_map": {"a.weight": "model-1.safetensors", "b.weight": "model-2.safetensors"}}
    hub.repos["miro-test/sharded"] = {
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-1.safetensors": b"one",
        "model-2.safetensors": b"two",
    }
    names = ("model.safetensors.index.json", "model.safetensors")
    wanted = Wanted("weights", names, repo="miro-test/sharded")
    download_missing("vqascore", [wanted], tmp_path / "hf")
    folder = wanted.find(tmp_path / "hf").parent
    assert (folder / "model-2.safetensors").read_bytes() == b"two"
    assert (folder / "model-1.safetensors").read_bytes() == b"one"

    index["weight_map"]["c.weight"] = "../../../escape.safetensors"
    hub.repos["miro-test/bad-index"] = {"model.safetensors.index.json": json.dumps(index).encode()}
    bad = Wanted("weights", names, repo="miro-test/bad-index")
    with pytest.raises(MiroError, match="not a file beside it"):
        download_missing("vqascore", [bad], tmp_path / "hf")


@pytest.mark.parametrize("name", ["/no/such/t5", "./t5", "org/name/extra"])
def test_a_missing_folder_is_not_taken_for_a_repo_to_download(name):
    from miro_data.encoders import FrozenTextEncoder, ImageAutoencoder

    with pytest.raises(MiroError, match="no such folder"):
        FrozenTextEncoder(name, allow_download=True)
    with pytest.raises(MiroError, match="no such folder"):
        ImageAutoencoder(name, allow_download=True)


def test_an_unreachable_hub_is_one_line_for_encoders_too(tmp_path, monkeypatch, capfd):
    import huggingface_hub.utils._http as hf_http

    from miro_data.encoders import FrozenTextEncoder

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)  # (retries still happen)
    with pytest.raises(MiroError) as err:
        FrozenTextEncoder("miro-test/tiny-t5", allow_download=True)
    assert str(err.value).startswith("cannot download the model from http://127.0.0.1:9/miro-test")
    assert "the Hub cannot be reached" in str(err.value) and "\n" not in str(err.value)
    assert "Retrying" not in capfd.readouterr().err  # huggingface_hub's retry noise held back
