"""Parity: each learned reward, batched, equals its published reference on the same weights.

Tiny checkpoints of the real architectures (tests/rewards_fixtures.py) are loaded once through
the project's loaders and once through the reference code, which scores one (image, caption)
pair at a time from a PIL image, as published. Images: nine sizes and aspect ratios, from 1×1
to 17×300, one grayscale; captions: empty, short, and one that every tokenizer truncates.
Bound: relative difference ≤ 1e-4 in fp32, on scores that spread (a constant would prove
nothing).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rewards_fixtures as rf
from PIL import Image
from reference import shims

from miro_data.rewards import RewardContext, build_reward

RTOL = 1e-4

if not shims.available():
    reason = "reference packages missing: run `make reference` (.venv/reference)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> rf.TinyRewards:
    return rf.tiny_rewards(tmp_path_factory)


@pytest.fixture(scope="module")
def pairs() -> tuple[list[np.ndarray], list[str]]:
    images = rf.sample_images()
    return images, rf.sample_captions(len(images))


def ours(tiny: rf.TinyRewards, name: str, images, captions, **options) -> np.ndarray:
    ctx = RewardContext(options={name: {**tiny.options[name], **options}})
    reward = build_reward(name, ctx)
    reward.batch_size = 4  # batches of 4, 4 and 1: batching must not change a score
    scores = [
        reward.score(images[i : i + 4], captions[i : i + 4]) for i in range(0, len(images), 4)
    ]
    return np.concatenate(scores)


def check(name: str, got: np.ndarray, want: np.ndarray) -> None:
    want = np.asarray(want, dtype=np.float64)
    rel = np.abs(got - want) / np.abs(want)
    print(f"{name}: max relative difference {rel.max():.2e} over {len(want)} pairs")
    assert np.ptp(want) > 1e-2 * np.abs(want).max(), f"{name}: reference scores barely vary"
    assert rel.max() <= RTOL, f"{name}: {got} vs reference {want}"


def hub_file(tiny: rf.TinyRewards, repo: str, name: str):
    return next(
        (tiny.hf_home / "hub" / ("models--" + repo.replace("/", "--"))).glob(f"snapshots/*/{name}")
    )


def test_clip_matches_open_clip_usage(tiny, pairs):
    from reference import clip_snippet

    images, captions = pairs
    with rf.hub_at(tiny.hf_home):
        model, preprocess, tokenizer = clip_snippet.load("hf-hub:miro-test/tiny-clip")
        want = [
            clip_snippet.clip_score(model, preprocess, tokenizer, Image.fromarray(im), cap)
            for im, cap in zip(images, captions, strict=True)
        ]
    check("clip", ours(tiny, "clip", images, captions), want)


def test_aesthetic_matches_published_snippet(tiny, pairs):
    from reference import aesthetic_snippet

    images, captions = pairs
    mlp_path = hub_file(
        tiny, "camenduru/improved-aesthetic-predictor", "sac+logos+ava1-l14-linearMSE.pth"
    )
    model, model2, preprocess = aesthetic_snippet.load(
        mlp_path, rf.TINY_L14, tiny.clip_bin, embed_dim=32
    )
    want = [
        aesthetic_snippet.predict(model, model2, preprocess, Image.fromarray(im)) for im in images
    ]
    check("aesthetic", ours(tiny, "aesthetic", images, captions), want)


@pytest.mark.parametrize("version", ["2.1", "2.0"])
def test_hpsv2_matches_hpsv2_score(tiny, pairs, version):
    from reference import hpsv2_ref

    images, captions = pairs
    filename = {"2.1": "HPS_v2.1_compressed.pt", "2.0": "HPS_v2_compressed.pt"}[version]
    checkpoint = hub_file(tiny, "xswu/HPSv2", filename)
    score = hpsv2_ref.scorer(rf.TINY_H14, tiny.configs)
    want = [
        score(Image.fromarray(im), cap, checkpoint, f"v{version}")
        for im, cap in zip(images, captions, strict=True)
    ]
    check(f"hpsv2 v{version}", ours(tiny, "hpsv2", images, captions, version=version), want)


def test_pickscore_matches_published_snippet(tiny, pairs):
    from reference import pickscore_snippet

    images, captions = pairs
    with rf.hub_at(tiny.hf_home):
        processor, model = pickscore_snippet.load()
        want = [
            pickscore_snippet.calc_scores(processor, model, cap, [Image.fromarray(im)])[0]
            for im, cap in zip(images, captions, strict=True)
        ]
    check("pickscore", ours(tiny, "pickscore", images, captions), want)


def test_sciscore_matches_the_pickscore_snippet_on_sciscore_weights(tiny, pairs, monkeypatch):
    from reference import pickscore_snippet

    images, captions = pairs
    monkeypatch.setattr(pickscore_snippet, "model_pretrained_name_or_path", "Jialuo21/SciScore")
    with rf.hub_at(tiny.hf_home):
        processor, model = pickscore_snippet.load()
        want = [
            pickscore_snippet.calc_scores(processor, model, cap, [Image.fromarray(im)])[0]
            for im, cap in zip(images, captions, strict=True)
        ]
    got = ours(tiny, "sciscore", images, captions)
    check("sciscore", got, want)
    assert not np.allclose(got, ours(tiny, "pickscore", images, captions), rtol=1e-3)


def test_imagereward_matches_package_score(tiny, pairs):
    import torch
    from reference import imagereward_ref

    images, captions = pairs
    checkpoint = hub_file(tiny, "THUDM/ImageReward", "ImageReward.pt")
    with rf.hub_at(tiny.hf_home):
        model = imagereward_ref.load(
            checkpoint,
            hub_file(tiny, "THUDM/ImageReward", "med_config.json"),
            rf.BLIP_VISION["width"],
            rf.BLIP_VISION["depth"],
            rf.TEXT_WIDTH,
        )
        # The package loads with strict=False: prove it took every weight it has.
        state = torch.load(checkpoint, weights_only=True)
        ref_state = model.state_dict()
        assert set(ref_state) <= set(state), set(ref_state) - set(state)
        assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
        with torch.no_grad():
            want = [
                model.score(cap, Image.fromarray(im))
                for im, cap in zip(images, captions, strict=True)
            ]
    check("imagereward", ours(tiny, "imagereward", images, captions), want)


def test_vqascore_matches_t2v_metrics_clip_flant5(tiny, pairs, tmp_path):
    import torch
    from reference import vqascore_ref

    images, captions = pairs
    with rf.hub_at(tiny.hf_home):
        model = vqascore_ref.load(tiny.hf_home, rf.VQA_MODEL)
        # every weight the reference holds is the checkpoint's (the token embeddings and lm_head
        # shrunk to the tokenizer's length by its resize_token_embeddings)
        state = {}
        for shard in hub_file(tiny, rf.VQA_REPO, "config.json").parent.glob("*.bin"):
            state.update(torch.load(shard, weights_only=True))
        tower = "vision_tower.vision_tower."  # transformers 5 names lack `vision_model.`
        for key, value in model.model.state_dict().items():
            published = key.replace(tower, tower + "vision_model.")
            assert torch.equal(value, state[published][: len(value)]), key
        want = []
        for i, (im, cap) in enumerate(zip(images, captions, strict=True)):
            Image.fromarray(im).save(tmp_path / f"{i}.png")
            want.append(vqascore_ref.score(model, tmp_path / f"{i}.png", cap))
    check("vqascore", ours(tiny, "vqascore", images, captions), want)
