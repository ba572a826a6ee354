"""The model spec and the run folder: typed, frozen spec records that round-trip through
checkpoint.json (and read the layout older checkpoints hold), the run state that a checkpoint
saves and a resume restores, and the readers every module uses."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import tiny_spec
from typer.testing import CliRunner

from cli.main import app
from miro_data.common import MiroError
from miro_train.checkpoint import (
    META,
    RunState,
    find_checkpoint,
    is_checkpoint,
    list_checkpoints,
    log_path,
    read_log,
    read_spec,
    restore_state,
    save_checkpoint,
    save_state,
)
from miro_train.conditioning import ConditioningInput
from miro_train.dist import DistInfo
from miro_train.models import build_model
from miro_train.optim import Ema, make_optimizer
from miro_train.sample import generate, load_bundle
from miro_train.sampler import SamplerSettings
from miro_train.spec import ImageSpec, LatentStats, ModelSpec, TextSpec
from miro_train.train import train_step

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
ONE_PROCESS = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))

# checkpoint.json's "model" as the previous version wrote it (a spec dict; the registry
# config's keys as they were, so `conditioning` may lack keys that have defaults).
OLD_WORD_PIXEL = {
    "name": "unet-micro",
    "backbone": "unet",
    "backbone_args": {"channels": [16, 32], "blocks": 1, "attn_levels": [1], "heads": 2,
                      "groups": 8},
    "conditioning": {"dim": 32, "fourier_dim": 16, "hidden": 32, "registers": 2, "layers": 2,
                     "heads": 2, "pool": True},
    "text": {"kind": "word", "dim": 32, "max_len": 8,
             "vocab": ["<pad>", "<unk>", "a", "photo", "of", "red", "circle", "square", "two",
                       "squares"]},
    "image": {"space": "pixel", "resolution": 16, "channels": 3, "size": 16},
    "rewards": ["a", "b"],
    "edges_version": 1,
}  # fmt: skip
OLD_HF_LATENT = {
    "name": "custom",
    "summary": "a config of one's own",
    "backbone": "dit",
    "backbone_args": {"patch": 2, "width": 32, "depth": 1, "heads": 2},
    "conditioning": {"dim": 32, "heads": 2},
    "text": {"kind": "hf", "name": "some/t5", "dim": 64, "max_len": 12, "precomputed": True},
    "image": {"space": "latent", "resolution": 32, "vae": "some/vae", "vae_subfolder": None,
              "channels": 4, "size": 4, "precomputed": False, "mean": [0.5, -0.25, 0.0, 1.0],
              "std": [1.0, 2.0, 0.5, 3.0]},
    "rewards": ["clip"],
    "edges_version": 3,
}  # fmt: skip


def _checkpoint(run: Path, spec: ModelSpec) -> Path:
    """An untrained tiny model whose zero-initialised layers are made random."""
    torch.manual_seed(0)
    model = build_model(spec)
    for p in model.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.2)
    optimizer = torch.optim.AdamW(model.parameters())
    return save_checkpoint(run, 1, spec=spec, model=model, ema=model, optimizer=optimizer)


def test_specs_round_trip_through_json_and_stay_frozen() -> None:
    latent = ModelSpec.from_json(OLD_HF_LATENT)
    x_pred = dataclasses.replace(tiny_spec("unet"), prediction="x")
    for spec in (*(tiny_spec(b) for b in ("unet", "dit", "rin")), tiny_spec(rewards=()), latent,
                 x_pred):  # fmt: skip
        assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        latent.image.stats = None  # type: ignore[misc]
    bare = dataclasses.replace(latent, image=dataclasses.replace(latent.image, stats=None))
    assert latent.complete and not bare.complete  # a latent space needs its statistics


def test_the_previous_layout_reads_with_its_defaults() -> None:
    assert ModelSpec.from_json(OLD_WORD_PIXEL) == tiny_spec("unet")  # prediction "v"
    spec = ModelSpec.from_json(OLD_HF_LATENT)
    # the Conditioner's defaults, as the previous MiroModel filled them in
    assert (spec.conditioning.fourier_dim, spec.conditioning.registers) == (256, 16)
    assert spec.conditioning.hidden is None and spec.conditioning.pool is False
    assert spec.text == TextSpec("hf", 64, 12, name="some/t5", precomputed=True)
    assert spec.image == ImageSpec(
        "latent", 32, 4, 4, vae="some/vae",
        stats=LatentStats((0.5, -0.25, 0.0, 1.0), (1.0, 2.0, 0.5, 3.0)),
    )  # fmt: skip
    assert spec.summary == "a config of one's own" and spec.rewards == ("clip",)
    assert spec.backbone.kwargs() == {"patch": 2, "width": 32, "depth": 1, "heads": 2}


def test_a_checkpoint_of_the_previous_layout_samples_the_same_images(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run", tiny_spec("unet"))
    settings = SamplerSettings(steps=2, guidance=2.0, batch_size=1)
    prompts = ["a photo of a red circle", "two squares"]
    new = generate(load_bundle(ckpt), prompts, settings)
    meta = json.loads((ckpt / META).read_text())
    (ckpt / META).write_text(json.dumps(meta | {"model": OLD_WORD_PIXEL}))
    assert read_spec(ckpt) == tiny_spec("unet")
    np.testing.assert_array_equal(generate(load_bundle(ckpt), prompts, settings), new)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda m: m["text"].update(kind="t5"), "'text.kind' is a string, not one of word, hf"),
        (lambda m: m["text"].update(vocab=[1, 2]), "'text.vocab' is an array"),
        (lambda m: m["image"].pop("size"), "no 'image.size'"),
        (lambda m: m["image"].update(channels=0), "'image.channels' is the number 0"),
        (lambda m: m["conditioning"].update(pool="yes"), "'conditioning.pool' is a string"),
        (lambda m: m.update(rewards="a,b"), "'rewards' is a string"),
        (lambda m: m.update(backbone_args=[16]), "'backbone_args' is an array"),
        (lambda m: m.pop("image"), "no 'image'"),
        (lambda m: m.update(prediction="eps"), "'prediction' is a string, not one of v, x"),
    ],
)
def test_a_malformed_spec_is_one_line_naming_the_field(tmp_path: Path, edit, fragment) -> None:
    ckpt = _checkpoint(tmp_path / "run", tiny_spec("unet"))
    meta = json.loads((ckpt / META).read_text())
    edit(meta["model"])
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(MiroError, match="corrupt checkpoint") as err:
        read_spec(ckpt)
    assert fragment in str(err.value)
    result = runner.invoke(app, ["sample", str(ckpt), "--out", str(tmp_path / "o"), "-p", "a"])
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def _state(seed: int) -> RunState:
    torch.manual_seed(seed)
    model = build_model(tiny_spec("rin"))
    optimizer = make_optimizer("adamw", model, 1e-2, 0.01, (0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)
    return RunState(model, Ema(model, 0.9), optimizer, None, generator, torch.zeros(()))


def _step(state: RunState) -> float:
    """One training step on a fixed batch, its noise and times from the state's generator."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 16, 16, generator=g)
    cond = ConditioningInput(
        torch.rand(4, 2, generator=g), torch.randint(2, 10, (4, 8), generator=g)
    )
    loss = train_step(state.model, state.model, state.optimizer, x, cond,
                      generator=state.generator, self_cond_rate=0.5)  # fmt: skip
    state.ema.update(state.model, state.step)
    state.step += 1
    state.window += loss
    return float(loss)


def test_restore_state_continues_exactly_where_save_state_stopped(tmp_path: Path) -> None:
    saved = _state(0)
    for _ in range(3):
        _step(saved)
    saved.step_log = 2
    ckpt = save_state(tmp_path / "run", saved, spec=tiny_spec("rin"), config={"lr": 0.01},
                      info=ONE_PROCESS)  # fmt: skip
    assert ckpt == find_checkpoint(tmp_path / "run") and ckpt.name == "step_0000003"
    after_save = torch.rand(3)  # the global streams a step may read are saved too

    resumed = _state(1)  # other weights, optimizer moments and streams
    restore_state(ckpt, resumed, ONE_PROCESS)
    assert (resumed.step, resumed.step_log) == (3, 2)
    assert torch.equal(resumed.window, saved.window)
    assert torch.equal(torch.rand(3), after_save)
    for a, b in ((saved.model, resumed.model), (saved.ema.model, resumed.ema.model)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
    # the next steps are bit-identical: same weights, moments, noise and self-conditioning
    assert [_step(saved) for _ in range(2)] == [_step(resumed) for _ in range(2)]
    for x, y in zip(saved.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(x, y)


def test_the_run_folder_is_read_through_checkpoint_py(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _checkpoint(run, tiny_spec("unet"))
    (run / "checkpoints" / ".step_0000002.tmp").mkdir()  # a killed save's leftovers
    (run / "checkpoints" / "step_0000003").mkdir()  # a folder without checkpoint.json
    assert list_checkpoints(run) == [first] and find_checkpoint(run) == first
    assert is_checkpoint(first) and not is_checkpoint(run)
    assert list_checkpoints(tmp_path / "nowhere") == []
    log_path(run).write_text("step,loss,lr,steps_per_s,elapsed_s\n2,0.5,1e-3,3.0,1.0\n4,0.4")
    assert [row["step"] for row in read_log(run)] == ["2"]  # a cut last row is left out


def test_prepare_does_not_import_the_training_loop() -> None:
    code = "import sys, miro_train.prepare; print('miro_train.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert out.stdout.strip() == "False"
