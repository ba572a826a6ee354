"""The learned rewards as a user meets them: registry, weight lookup, loading errors, bad input.

All on the tiny checkpoints of tests/rewards_fixtures.py (real formats, real HF cache layout);
scores are checked against the reference implementations in test_rewards_parity.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rewards_fixtures as rf
import torch

from miro_data.common import MiroError
from miro_data.rewards import REGISTRY, RewardContext, build_reward
from miro_data.rewards.catalog import PICKSCORE_PROCESSOR

LEARNED = ("aesthetic", "clip", "pickscore", "hpsv2", "imagereward", "sciscore", "vqascore")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> rf.TinyRewards:
    return rf.tiny_rewards(tmp_path_factory)


def context(tiny: rf.TinyRewards, **overrides: dict) -> RewardContext:
    options = {name: dict(opts) for name, opts in tiny.options.items()}
    for name, extra in overrides.items():
        options[name].update(extra)
    return RewardContext(options=options)


def snapshot_file(tiny: rf.TinyRewards, repo: str, name: str):
    folder = tiny.hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    return next(folder.glob(f"snapshots/*/{name}"))


# ----------------------------------------------------------------------------
# Registry and weight lookup
# ----------------------------------------------------------------------------


def test_registry_lists_learned_rewards_without_importing_torch():
    code = (
        "import sys, miro_data.rewards as r\n"
        "print(sorted(n for n, s in r.REGISTRY.items() if s.learned))\n"
        "st = r.REGISTRY['hpsv2'].weights(r.RewardContext())\n"
        "print([m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    learned, heavy = out.stdout.strip().splitlines()
    assert learned == str(sorted(LEARNED))
    assert heavy == "[]"


def test_weights_say_where_and_whether(tiny, tmp_path):
    for name in LEARNED:
        found = REGISTRY[name].weights(context(tiny))
        assert found and all(s.available for s in found), (name, found)
        assert all(str(tiny.hf_home) in s.where or str(tiny.clip_bin) in s.where for s in found)
        empty = REGISTRY[name].weights(RewardContext(options={name: {"hf_home": str(tmp_path)}}))
        assert empty and not any(s.available for s in empty)
    where = [
        s.where
        for s in REGISTRY["hpsv2"].weights(
            RewardContext(options={"hpsv2": {"hf_home": str(tmp_path)}})
        )
    ]
    assert where == [
        f"HPS checkpoint: HF cache: xswu/HPSv2/HPS_v2.1_compressed.pt (under {tmp_path / 'hub'})"
    ]


def test_missing_weights_name_every_file_and_place(tmp_path):
    ctx = RewardContext(options={"imagereward": {"hf_home": str(tmp_path)}})
    with pytest.raises(MiroError) as err:
        build_reward("imagereward", ctx)
    message = str(err.value)
    for part in (
        "ImageReward.pt",
        "med_config.json",
        "vocab.txt",
        "models--THUDM--ImageReward",
        "models--bert-base-uncased",
    ):
        assert part in message
    assert "\n" not in message
    gone = tmp_path / "nowhere" / "HPS_v2.1_compressed.pt"
    with pytest.raises(MiroError, match=str(gone)):
        build_reward("hpsv2", RewardContext(options={"hpsv2": {"checkpoint": str(gone)}}))


def test_open_clip_tags_resolve_to_their_hub_files(tiny, tmp_path, monkeypatch):
    import open_clip

    from miro_data.rewards import catalog

    repo = "timm/vit_large_patch14_clip_224.openai"
    assert open_clip.get_pretrained_cfg("ViT-L-14", "openai")["hf_hub"].rstrip("/") == repo
    assert catalog.openclip_hub("ViT-L-14", "openai") == (
        repo,
        (catalog.OPENCLIP_SAFE, catalog.OPENCLIP_BIN),
    )
    assert (
        catalog.openclip_hub("ViT-B-32", "laion2b_s34b_b79k")[0]
        == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    )
    # The tag route end to end, on the tiny model: the weights found under the tag's repo id.
    weights = snapshot_file(tiny, "miro-test/tiny-clip", catalog.OPENCLIP_SAFE)
    rf.put_in_hub(tmp_path, repo, {catalog.OPENCLIP_SAFE: weights})
    monkeypatch.setitem(catalog.KNOWN_OPENCLIP, (rf.TINY_L14, "openai"), repo)
    reward = build_reward(
        "clip", RewardContext(options={"clip": {"model": rf.TINY_L14, "hf_home": str(tmp_path)}})
    )
    want = build_reward("clip", context(tiny))  # the same weights through hf-hub:
    images, captions = rf.sample_images()[:3], rf.sample_captions(3)
    np.testing.assert_allclose(
        reward.score(images, captions), want.score(images, captions), rtol=1e-5
    )


def test_hf_cache_is_found_through_hf_home(tiny, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tiny.hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    opts = {"model": rf.TINY_H14}  # no hf_home option: the environment says where
    reward = build_reward("hpsv2", RewardContext(options={"hpsv2": opts}))
    assert reward.version.startswith("v2.1@")


# ----------------------------------------------------------------------------
# Loading: safe, strict, fingerprinted, once
# ----------------------------------------------------------------------------


def test_version_is_the_checkpoint_hash(tiny):
    for name, repo, filename in (
        ("hpsv2", "xswu/HPSv2", "HPS_v2.1_compressed.pt"),
        ("imagereward", "THUDM/ImageReward", "ImageReward.pt"),
        ("pickscore", "yuvalkirstain/PickScore_v1", "pytorch_model.bin"),
    ):
        digest = hashlib.sha256(snapshot_file(tiny, repo, filename).read_bytes()).hexdigest()
        assert digest[:12] in build_reward(name, context(tiny)).version
    v20 = build_reward("hpsv2", context(tiny, hpsv2={"version": "2.0"})).version
    v21 = build_reward("hpsv2", context(tiny, hpsv2={"version": 2.1})).version
    assert v20.startswith("v2.0@") and v21.startswith("v2.1@") and v20[5:] != v21[5:]
    with pytest.raises(MiroError, match="unknown version"):
        build_reward("hpsv2", context(tiny, hpsv2={"version": "3"}))


def test_corrupt_and_truncated_checkpoints_are_named(tiny, tmp_path):
    garbage = tmp_path / "HPS_v2.1_compressed.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MiroError, match=f"cannot read checkpoint {garbage}"):
        build_reward("hpsv2", context(tiny, hpsv2={"checkpoint": str(garbage)}))
    real = snapshot_file(tiny, "THUDM/ImageReward", "ImageReward.pt").read_bytes()
    truncated = tmp_path / "ImageReward.pt"
    truncated.write_bytes(real[: len(real) // 2])
    with pytest.raises(MiroError, match=f"cannot read checkpoint {truncated}"):
        build_reward("imagereward", context(tiny, imagereward={"checkpoint": str(truncated)}))


class Payload:
    """An arbitrary object: loading it would run code, so it must be refused."""


def test_arbitrary_pickles_are_refused(tiny, tmp_path):
    path = tmp_path / "sneaky.pt"
    state = torch.load(
        snapshot_file(tiny, "xswu/HPSv2", "HPS_v2.1_compressed.pt"), weights_only=True
    )
    torch.save({"state_dict": state["state_dict"], "extra": Payload()}, path)
    with pytest.raises(MiroError, match="cannot read checkpoint"):
        build_reward("hpsv2", context(tiny, hpsv2={"checkpoint": str(path)}))


@pytest.mark.parametrize("change", ["extra", "missing", "shape"])
def test_state_dicts_load_strictly(tiny, tmp_path, change):
    state = torch.load(
        snapshot_file(tiny, "xswu/HPSv2", "HPS_v2.1_compressed.pt"), weights_only=True
    )["state_dict"]
    if change == "extra":
        state["visual.surprise"] = torch.zeros(3)
    elif change == "missing":
        del state["ln_final.weight"]
    else:
        state["ln_final.weight"] = torch.zeros(7)
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": state}, path)
    word = {"extra": "unexpected", "missing": "missing", "shape": "wrong shape"}[change]
    with pytest.raises(MiroError, match=f"does not fit the model: 1 {word}"):
        build_reward("hpsv2", context(tiny, hpsv2={"checkpoint": str(path)}))


def test_clip_and_aesthetic_share_one_model_and_one_encoding(tiny):
    ctx = context(tiny, clip={"model": rf.TINY_L14, "checkpoint": str(tiny.clip_bin)})
    clip, aesthetic = build_reward("clip", ctx), build_reward("aesthetic", ctx)
    assert clip.clip is aesthetic.clip  # the checkpoint loaded once in this process
    calls = []
    encode = clip.clip.model.encode_image
    clip.clip.model.encode_image = lambda x: calls.append(len(x)) or encode(x)
    images, captions = rf.sample_images(), rf.sample_captions(9)
    clip.score(images[:5], captions[:5])
    aesthetic.score(images, captions)  # 5 already encoded, 4 new
    clip.score(images[5:], captions[5:])
    assert calls == [5, 4]


def test_pickscore_and_sciscore_preprocess_each_image_once(tiny):
    ctx = context(tiny)
    pick, sci = build_reward("pickscore", ctx), build_reward("sciscore", ctx)
    assert pick.shared_pixels is sci.shared_pixels and pick.version != sci.version
    calls = []
    for reward in (pick, sci):
        process = reward.process
        reward.process = lambda ims, process=process: calls.append(len(ims)) or process(ims)
    images, captions = rf.sample_images(), rf.sample_captions(9)
    alone = build_reward("sciscore", context(tiny)).score(images, captions)
    pick.score(images[:5], captions[:5])
    together = sci.score(images, captions)  # 5 already processed, 4 new
    assert calls == [5, 4]
    np.testing.assert_array_equal(together, alone)


def test_vqascore_reads_unsharded_checkpoints_without_the_vision_tower(tiny, tmp_path):
    """A single-file checkpoint that leaves the vision tower to its own repo scores the same."""
    from safetensors.torch import save_file

    snap = snapshot_file(tiny, rf.VQA_REPO, "config.json").parent
    state = {}
    for shard in snap.glob("*.bin"):
        state.update(torch.load(shard, weights_only=True))
    del state["embed_tokens.weight"]  # tied aliases may be absent, as save_pretrained drops them
    del state["encoder.embed_tokens.weight"], state["decoder.embed_tokens.weight"]
    kept = {k: v.contiguous() for k, v in state.items() if not k.startswith("vision_tower.")}
    folder = tmp_path / "clip-flant5"
    folder.mkdir()
    shutil.copyfile(snap / "config.json", folder / "config.json")
    save_file(kept, folder / "model.safetensors")
    images, captions = rf.sample_images()[:4], rf.sample_captions(4)
    want = build_reward("vqascore", context(tiny)).score(images, captions)
    reward = build_reward("vqascore", context(tiny, vqascore={"model_dir": str(folder)}))
    np.testing.assert_allclose(reward.score(images, captions), want, rtol=1e-6)
    state["vision_tower.vision_tower.vision_model.pre_layrnorm.weight"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    with pytest.raises(MiroError, match="does not fit the model: 1 wrong shape"):
        build_reward("vqascore", context(tiny, vqascore={"model_dir": str(folder)}))


def test_vqascore_is_a_probability_and_reads_image_in_captions_as_text(tiny):
    reward = build_reward("vqascore", context(tiny))
    images = rf.sample_images()[:3]
    scores = reward.score(images, ["a <image> of a cat", "<image>", "a cat"])
    assert ((scores > 0) & (scores < 1)).all()
    with pytest.raises(MiroError, match="unknown model"):
        build_reward("vqascore", context(tiny, vqascore={"model": "clip-flant5-xxxl"}))


def test_options_are_checked(tiny):
    with pytest.raises(MiroError, match=r"unknown option.*modle.*accepted:.*model"):
        build_reward("clip", context(tiny, clip={"modle": "ViT-B-32"}))
    with pytest.raises(MiroError, match="batch_size must be"):
        build_reward("clip", context(tiny, clip={"batch_size": "many"}))
    assert build_reward("clip", context(tiny, clip={"batch_size": 3})).batch_size == 3
    with pytest.raises(MiroError, match="unknown reward 'vqa'"):
        build_reward("vqa", RewardContext())


def test_precision_maps_to_autocast_on_cuda_only():
    from miro_data.rewards.torch_reward import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert all(autocast_dtype(cpu, p) is None for p in ("auto", "fp32", "bf16", "fp16"))
    assert autocast_dtype(cuda, "fp16") is torch.float16
    assert autocast_dtype(cuda, "bf16") is torch.bfloat16
    assert autocast_dtype(cuda, "fp32") is None
    with pytest.raises(MiroError, match="invalid precision"):
        autocast_dtype(cpu, "fp8")


# ----------------------------------------------------------------------------
# Bad input scores or says why; it never takes the run down
# ----------------------------------------------------------------------------


def test_odd_images_and_captions_score(tiny):
    rng = np.random.default_rng(3)
    images = [
        np.full((1, 1, 3), 200, np.uint8),  # 1×1
        rng.integers(0, 256, (40, 30), dtype=np.uint8),  # grayscale as a 2-D array
        rng.integers(0, 256, (30, 40, 4), dtype=np.uint8),  # RGBA: alpha dropped
        rng.integers(0, 256, (3, 500, 3), dtype=np.uint8),  # 3 px high, 167:1
        rng.integers(0, 256, (224, 120, 3), dtype=np.uint8),  # long side exactly 224
    ]
    captions = ["", "x" * 10_000, "🙂 ünïcödé " * 300, "a cat\n\tin tabs", "  "]
    ctx = context(tiny)
    for name in LEARNED:
        scores = build_reward(name, ctx).score(images, captions)
        assert scores.shape == (5,) and np.isfinite(scores).all(), (name, scores)


def test_one_bad_image_fails_alone(tiny):
    reward = build_reward("imagereward", context(tiny))
    with pytest.raises(ValueError, match="uint8"):
        reward.score([np.zeros((8, 8, 3), np.float32)], ["a"])
    with pytest.raises(ValueError, match="captions"):
        reward.score([np.zeros((8, 8, 3), np.uint8)], ["a", "b"])
    assert reward.score([], []).shape == (0,)


def test_med_config_variants_are_refused(tiny, tmp_path):
    med = json.loads(snapshot_file(tiny, "THUDM/ImageReward", "med_config.json").read_text())
    path = tmp_path / "med_config.json"
    path.write_text(json.dumps({**med, "position_embedding_type": "relative_key"}))
    with pytest.raises(MiroError, match="absolute position embeddings"):
        build_reward("imagereward", context(tiny, imagereward={"med_config": str(path)}))


# ----------------------------------------------------------------------------
# The version covers every input the scores depend on, not only the weights
# ----------------------------------------------------------------------------


def copy_snapshot(tiny: rf.TinyRewards, repo: str, dest: Path) -> Path:
    """A plain folder with real, editable copies of the files of `repo`'s snapshot."""
    folder = tiny.hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    dest.mkdir(parents=True)
    for p in next(folder.glob("snapshots/*")).iterdir():
        shutil.copyfile(p, dest / p.name)
    return dest


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def swap_tokens(vocab: dict, a: str = "a</w>", b: str = "the</w>") -> None:
    vocab[a], vocab[b] = vocab[b], vocab[a]


# (reward, input) → (repo copied, option naming the copy, file edited, the edit)
EDITS: dict[tuple[str, str], tuple[str, str, str, Callable[[Path], None]]] = {
    ("clip", "preprocess_cfg"): (
        "miro-test/tiny-clip", "hf_home", "open_clip_config.json",
        lambda p: edit_json(p, lambda c: c["preprocess_cfg"].update(mean=[0.5, 0.5, 0.5])),
    ),
    ("pickscore", "processor"): (
        PICKSCORE_PROCESSOR, "processor_dir", "preprocessor_config.json",
        lambda p: edit_json(p, lambda c: c.update(resample=2)),  # bilinear
    ),
    ("pickscore", "tokenizer"): (
        PICKSCORE_PROCESSOR, "processor_dir", "tokenizer.json",
        lambda p: edit_json(p, lambda c: swap_tokens(c["model"]["vocab"])),
    ),
    ("imagereward", "vocab"): (
        "bert-base-uncased", "tokenizer_dir", "vocab.txt",
        lambda p: p.write_text(  # "cat" and "dog" trade ids
            p.read_text().replace("\ncat\n", "\n@\n").replace("\ndog\n", "\ncat\n").replace("\n@\n", "\ndog\n")
        ),
    ),
    ("imagereward", "tokenizer_config"): (
        "bert-base-uncased", "tokenizer_dir", "tokenizer_config.json",
        lambda p: edit_json(p, lambda c: c.update(do_lower_case=False)),
    ),
    ("imagereward", "med_config"): (
        "THUDM/ImageReward", "med_config", "med_config.json",
        lambda p: edit_json(p, lambda c: c.update(layer_norm_eps=0.5)),
    ),
    ("vqascore", "processor"): (
        rf.VQA_VISION, "vision_dir", "preprocessor_config.json",
        lambda p: edit_json(p, lambda c: c.update(image_mean=[0.5, 0.5, 0.5])),
    ),
    ("vqascore", "tokenizer"): (
        rf.VQA_TOKENIZER, "tokenizer_dir", "tokenizer.json",
        lambda p: edit_json(p, lambda c: swap_pieces(c["model"]["vocab"], "\u2581cat", "\u2581dog")),
    ),
}  # fmt: skip


def swap_pieces(vocab: list, a: str, b: str) -> None:
    """Unigram vocabularies are [piece, score] lists: swapping two entries swaps their ids."""
    i, j = ([p for p, _ in vocab].index(x) for x in (a, b))
    vocab[i], vocab[j] = vocab[j], vocab[i]


def same_and_edited(tiny, tmp_path, name: str, what: str) -> list[RewardContext]:
    """Contexts with the reward's inputs copied elsewhere unchanged, then with one edited."""
    if what == "quick_gelu":
        # TINY_H14's config has no QuickGELU of its own (TINY_L14's would override the option)
        base = {"model": rf.TINY_H14, "checkpoint": str(tiny.clip_bin), "quick_gelu": True}
        return [context(tiny, clip=base), context(tiny, clip={**base, "quick_gelu": False})]
    repo, option, file, edit = EDITS[name, what]
    contexts = []
    for label in ("same", "edit"):
        folder = copy_snapshot(tiny, repo, tmp_path / label / "files")
        if label == "edit":
            edit(folder / file)
        if option == "hf_home":
            rf.put_in_hub(tmp_path / label, repo, {p.name: p for p in folder.iterdir()})
            value = str(tmp_path / label)
        else:
            value = str(folder / file) if option == "med_config" else str(folder)
        contexts.append(context(tiny, **{name: {option: value}}))
    return contexts


@pytest.mark.parametrize(("name", "what"), [("clip", "quick_gelu"), *EDITS])
def test_version_changes_with_every_input_that_changes_scores(tiny, tmp_path, name, what):
    images, captions = rf.sample_images()[:3], ["A Photo of a CAT", "a dog", "the red circles"]
    base = build_reward(name, context(tiny)).version
    (v_same, s_same), (v_edit, s_edit) = (
        (r.version, r.score(images, captions))
        for r in (build_reward(name, ctx) for ctx in same_and_edited(tiny, tmp_path, name, what))
    )
    if what != "quick_gelu":  # the same files in another place: the same version
        assert v_same == base
    assert not np.allclose(s_same, s_edit, rtol=1e-6), "the edit must move the scores"
    assert v_same != v_edit, f"{name}: {what} changed the scores but not the version {v_same}"


def test_annotate_scores_all_seven_learned_rewards_in_one_pass(tiny, tmp_path):
    """`miro data annotate --rewards aesthetic,clip,pickscore,hpsv2,imagereward,sciscore,
    vqascore` on a real WebDataset shard of JPEGs: every image scored by all seven, each
    reward's version stored, and the scores those of the rewards called directly."""
    import io
    import tarfile

    import duckdb
    from PIL import Image

    from miro_data.annotate import AnnotateConfig, annotate

    images, captions = rf.sample_images()[:5], rf.sample_captions(5)
    (tmp_path / "shards").mkdir()
    with tarfile.open(tmp_path / "shards" / "00000.tar", "w") as tar:
        for i, (im, cap) in enumerate(zip(images, captions, strict=True)):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, "PNG")  # lossless: the same pixels reach the rewards
            for ext, data in (("png", buf.getvalue()), ("txt", cap.encode())):
                info = tarfile.TarInfo(f"{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    names = ("aesthetic", "clip", "pickscore", "hpsv2", "imagereward", "sciscore", "vqascore")
    options = {name: dict(tiny.options[name]) for name in names}
    db = tmp_path / "scores.duckdb"
    cfg = AnnotateConfig(str(tmp_path / "shards"), db, names, decode_workers=0, device="cpu",
                         reward_options=options)  # fmt: skip
    annotate(cfg)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT reward, key, version, value FROM scores ORDER BY key").fetchall()
    ctx = context(tiny)
    for name in names:
        reward = build_reward(name, ctx)
        got = [(v, value) for r, _, v, value in rows if r == name]
        assert len(got) == 5 and {v for v, _ in got} == {reward.version}, name
        np.testing.assert_allclose(
            [value for _, value in got], reward.score(images, captions), rtol=1e-5
        )
