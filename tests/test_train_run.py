"""End to end: `miro train` + `miro sample` on a tiny reshard, exact resume, bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from train_fixtures import micro_config, write_shards
from typer.testing import CliRunner

from cli.main import app
from miro_data.common import MiroError
from miro_train import train as train_module
from miro_train.checkpoint import META, find_checkpoint, list_checkpoints, read_meta
from miro_train.sample import generate, load_bundle
from miro_train.sampler import SamplerSettings
from miro_train.train import TrainConfig, train

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    shards = write_shards(root / "shards", n=48, per_shard=16)
    config = micro_config(root / "micro.json")
    return root, shards, config


def _cfg(world, out: str, **kw) -> TrainConfig:
    root, shards, config = world
    base = {
        "shards": shards,
        "out": root / out,
        "model": str(config),
        "steps": 8,
        "batch_size": 8,
        "log_every": 2,
        "ckpt_every": 4,
        "warmup": 2,
        "workers": 1,
    }
    return TrainConfig(**(base | kw))


def test_smoke_train_20_steps_then_sample(world, monkeypatch):
    root, shards, config = world
    monkeypatch.setenv("MIRO_NO_PROGRESS", "1")
    run = root / "smoke"
    result = runner.invoke(
        app,
        [
            "train",
            str(shards),
            "--out",
            str(run),
            "--model",
            str(config),
            "--steps",
            "20",
            "--batch-size",
            "8",
            "--log-every",
            "5",
            "--ckpt-every",
            "10",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in list_checkpoints(run)] == ["step_0000010", "step_0000020"]
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,steps_per_s,elapsed_s" and len(rows) == 5
    assert (run / "loss.png").stat().st_size > 0
    meta = read_meta(find_checkpoint(run))
    assert meta["model"]["rewards"] == ["sharpness", "noise"] and meta["step"] == 20
    assert meta["model"]["edges_version"] == 1 and "photo" in meta["model"]["text"]["vocab"]

    out = root / "samples"
    result = runner.invoke(
        app,
        [
            "sample",
            str(run),
            "--out",
            str(out),
            "-p",
            "a photo of a red circle",
            "-p",
            "a photo of two squares",
            "--n",
            "2",
            "--steps",
            "4",
            "--target",
            "noise=0.5",
            "--preset",
            "isolate:sharpness",
            "--guidance-interval",
            "0.3,1",  # the last of the 4 Euler steps (t = 0.25) is unguided
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["prompt"] == "a photo of a red circle"
    assert rows[0]["targets"] == {"sharpness": 1.0, "noise": 0.5}
    assert rows[0]["negatives"] == {"sharpness": 0.0, "noise": 1.0}
    assert rows[0]["guidance_interval"] == [0.3, 1.0]
    image = np.asarray(Image.open(out / rows[3]["file"]))
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    # a labelled row per prompt, its 2 images scaled from 16 to 128 px, 4 px apart
    assert Image.open(out / "grid.png").size == (244 + 2 * 132, 4 + 2 * 132)
    # The Python API redraws an image from its manifest row alone (prompt, seed, draw).
    row = rows[3]
    settings = SamplerSettings(steps=4, preset="isolate:sharpness", target="noise=0.5",
                               seed=row["seed"], guidance_interval=tuple(row["guidance_interval"]))  # fmt: skip
    again = generate(load_bundle(run), [rows[3]["prompt"]], settings, draws=[rows[3]["draw"]])
    np.testing.assert_array_equal(again[0], image)


def test_resume_reaches_the_same_losses_as_an_uninterrupted_run(world):
    # With a shift that moves every step, a resume must also pick the schedule up where it was.
    shift = {"time_shift": 3.0, "time_shift_end": 1.0}
    straight: dict[int, float] = {}
    train(_cfg(world, "straight", **shift), lambda s: straight.__setitem__(s.step, s.loss))

    def killed(info):
        if info.step == 6:  # after the step-4 checkpoint, before step 8's
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(world, "resumed", **shift), killed)
    # the training time counts on from the checkpoint's (a large one, so the sum shows)
    at_4 = world[0] / "resumed" / "checkpoints" / "step_0000004" / META
    meta = json.loads(at_4.read_text())
    assert meta["train_seconds"] > 0
    at_4.write_text(json.dumps(meta | {"train_seconds": 1e6}))
    resumed: dict[int, float] = {}
    train(_cfg(world, "resumed", resume=True), lambda s: resumed.__setitem__(s.step, s.loss))
    assert read_meta(load_bundle(world[0] / "resumed").checkpoint)["train_seconds"] > 1e6
    assert (
        read_meta(load_bundle(world[0] / "resumed").checkpoint)["config"]["time_shift_end"] == 1.0
    )
    assert sorted(resumed) == [5, 6, 7, 8]
    assert all(resumed[s] == straight[s] for s in resumed), (resumed, straight)
    a = load_bundle(world[0] / "straight").model.state_dict()
    b = load_bundle(world[0] / "resumed").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = (world[0] / "straight" / "log.csv").read_text().splitlines()
    log_b = (world[0] / "resumed" / "log.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in log_a] == [r.split(",")[:2] for r in log_b]


def test_baseline_trains_without_rewards_and_samples_unguided(world):
    ckpt = train(_cfg(world, "baseline", baseline=True, steps=2, ckpt_every=2))
    bundle = load_bundle(ckpt)
    assert bundle.rewards == [] and bundle.model.conditioner.rewards is None
    images = generate(bundle, ["a photo of a circle"], SamplerSettings(steps=2, guidance=7.0))
    assert images.shape == (1, 16, 16, 3)


def test_time_shift_is_stored_and_changes_the_training_times(world):
    root = world[0]
    stored, losses = [], set()
    runs = ((1.0, None, 1.0), (3.0, None, 1.0), (3.0, 1.0, 1.0), (3.0, None, 0.5))
    for start, end, share in runs:
        out = f"shift-{start:g}-{end}-{share:g}"
        cfg = _cfg(world, out, time_shift=start, time_shift_end=end, time_shift_share=share,
                   steps=2, ckpt_every=2)  # fmt: skip
        config = read_meta(train(cfg))["config"]
        stored.append((config["time_shift"], config["time_shift_end"], config["time_shift_share"]))
        losses.add((root / out / "log.csv").read_text().splitlines()[-1].split(",")[1])
    assert stored == list(runs)
    assert len(losses) == 4  # same seed and data: only the times differ


def test_x_prediction_comes_from_the_config_or_the_option_and_travels_with_the_checkpoint(
    world, tmp_path
):
    root, shards, config = world
    x_config = tmp_path / "micro-x.json"
    x_config.write_text(json.dumps(json.loads(config.read_text()) | {"prediction": "x"}))
    runs = {"v": {}, "x-option": {"prediction": "x"}, "x-config": {"model": str(x_config)},
            "v-option": {"model": str(x_config), "prediction": "v"}}  # fmt: skip
    found, losses = {}, {}
    for out, kw in runs.items():
        ckpt = train(_cfg(world, f"pred-{out}", steps=2, ckpt_every=2, **kw))
        bundle = load_bundle(ckpt)
        found[out] = bundle.model.spec.prediction
        losses[out] = (root / f"pred-{out}" / "log.csv").read_text().splitlines()[-1].split(",")[1]
        images = generate(bundle, ["a photo of a circle"], SamplerSettings(steps=2))
        assert images.shape == (1, 16, 16, 3)
    assert found == {"v": "v", "x-option": "x", "x-config": "x", "v-option": "v"}
    # same seed, data and weights at the start: only what the backbone's output means differs
    assert losses["x-option"] == losses["x-config"] != losses["v"] == losses["v-option"]
    bad = tmp_path / "micro-eps.json"
    bad.write_text(json.dumps(json.loads(config.read_text()) | {"prediction": "eps"}))
    for args in (["--prediction", "eps"], ["--model", str(bad)]):
        result = runner.invoke(app, ["train", str(shards), "-o", str(tmp_path / "bad"), *args])
        assert result.exit_code == 2 and "prediction must be one of v, x" in result.output
        assert "Traceback" not in result.output and not (tmp_path / "bad").exists()


def test_caption_dropout_trains_the_uncaptioned_branch_that_caption_guidance_uses(world):
    root = world[0]
    ckpt = train(_cfg(world, "dropout", caption_dropout=0.5, steps=2, ckpt_every=2))
    plain = train(_cfg(world, "no-dropout", steps=2, ckpt_every=2))
    lines = [
        (root / out / "log.csv").read_text().splitlines()[-1] for out in ("dropout", "no-dropout")
    ]
    assert lines[0].split(",")[1] != lines[1].split(",")[1]  # same seed and data: captions differ
    bundle = load_bundle(ckpt)
    assert bundle.caption_dropout == 0.5 and read_meta(ckpt)["config"]["caption_dropout"] == 0.5
    prompts = ["a photo of a red circle"] * 2
    settings = SamplerSettings(steps=2, guidance=3.0, seed=4)
    unguided = generate(bundle, prompts, settings)
    guided = generate(bundle, prompts, replace(settings, caption_guidance=5.0))
    assert guided.shape == unguided.shape == (2, 16, 16, 3)
    assert not np.array_equal(guided, unguided)  # the caption contrast moved the images
    with pytest.raises(MiroError, match="trained without caption dropout"):
        generate(load_bundle(plain), prompts, replace(settings, caption_guidance=5.0))


# ----------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing overwritten
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(world):
    return train(_cfg(world, "small", steps=2, ckpt_every=2))


def _fails(args: list[str], match: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3  # one message (rich may wrap it)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--target", "aesthetic=1"], "knows no reward 'aesthetic'"),
        (["--target", "noise=1.5"], "outside [0, 1]"),
        (["--negative", "noise=-0.1"], "outside [0, 1]"),
        (["--preset", "pair:noise,sharpness"], "pair:A,B@t"),
        (["--best-of", "2"], "--select-by"),
        (["--caption-guidance", "2"], "trained without caption dropout"),
        (["--caption-guidance", "-1"], "--caption-guidance must be"),
    ],
)
def test_bad_sampling_targets(trained, tmp_path, extra, match):
    _fails(["sample", str(trained), "--out", str(tmp_path / "o"), "-p", "a photo", *extra], match)
    assert not (tmp_path / "o").exists()


def test_corrupt_checkpoint(trained, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    (bad / "ema.safetensors").write_bytes(b"not a safetensors file")
    _fails(
        ["sample", str(bad), "--out", str(tmp_path / "o"), "-p", "a photo"], "corrupt checkpoint"
    )
    (bad / "checkpoint.json").write_text("{")
    _fails(
        ["sample", str(bad), "--out", str(tmp_path / "o"), "-p", "a photo"], "corrupt checkpoint"
    )


def test_existing_outputs_are_not_overwritten(world, trained, tmp_path):
    run = trained.parent.parent
    before = (run / "log.csv").read_text()
    _fails(
        ["train", str(world[1]), "--out", str(run), "--model", str(world[2])], "already holds a run"
    )
    assert (run / "log.csv").read_text() == before
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.jsonl").write_text("keep me\n")
    _fails(["sample", str(trained), "--out", str(out), "-p", "a photo"], "already holds samples")
    assert (out / "manifest.jsonl").read_text() == "keep me\n"


def test_resuming_on_shards_with_other_rewards_is_refused(world, trained, tmp_path):
    other = write_shards(tmp_path / "other", n=8, rewards=("contrast",))
    run = trained.parent.parent
    _fails(
        ["train", str(other), "--out", str(run), "--resume"], "carry no bins for sharpness, noise"
    )


def test_requested_rewards_must_be_in_the_shards(world, tmp_path):
    _fails(
        ["train", str(world[1]), "--out", str(tmp_path / "r"), "--rewards", "aesthetic"],
        "carry no bins for aesthetic",
    )
    _fails(
        ["train", str(world[1]), "--out", str(tmp_path / "r"), "--time-shift", "0"],
        "--time-shift must be positive",
    )
    _fails(
        ["train", str(world[1]), "--out", str(tmp_path / "r"), "--time-shift-end", "-1"],
        "--time-shift-end must be positive",
    )
    bare = write_shards(tmp_path / "bare", n=8, with_rewards=False)
    _fails(["train", str(bare), "--out", str(tmp_path / "r")], "train with --baseline")
    assert not (tmp_path / "r").exists()


def test_out_of_memory_is_one_clear_error(world, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "train_step", oom)
    with pytest.raises(MiroError, match="out of memory with 8 images per process"):
        train(_cfg(world, "oom"))
    assert list_checkpoints(world[0] / "oom") == []


def test_best_of_n_keeps_the_candidate_the_reward_scores_highest(trained, tmp_path):
    from miro_data.rewards import build_reward
    from miro_train.sample import SampleConfig, sample

    cfg = SampleConfig(
        checkpoint=trained,
        out=tmp_path / "best",
        prompts=("a photo of a circle",),
        n=2,
        sampler=SamplerSettings(steps=2),
        best_of=3,
        select_by="contrast",
    )
    rows = [json.loads(x) for x in sample(cfg).read_text().splitlines()]
    prompts = [rows[0]["prompt"]] * 6  # draws 0-2 are output 0's candidates, 3-5 output 1's
    cands = generate(load_bundle(trained), prompts, SamplerSettings(steps=2))
    scores = build_reward("contrast").score(list(cands), prompts)
    for i, row in enumerate(rows):
        window = scores[3 * i : 3 * i + 3]
        assert row["draw"] == 3 * i + int(np.argmax(window))
        assert row["score"] == pytest.approx(float(window.max()))


def test_tensorboard_is_optional(tmp_path):
    from miro_train.runlog import RunLog

    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(MiroError, match="pip install tensorboard"):
            RunLog(tmp_path, None, tensorboard=True)
    else:
        RunLog(tmp_path, None, tensorboard=True).close()
        assert (tmp_path / "tensorboard").is_dir()
