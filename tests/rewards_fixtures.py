"""Tiny learned-reward checkpoints in the real file formats and the real HF cache layout.

Every model here is of the real architecture family, shrunk (a few layers, narrow widths,
real tokenizers where they are small enough to build offline), randomly initialised, and
saved as the published file: open_clip weights, `{"state_dict": …}` HPS checkpoints, an
old-style `pytorch_model.bin` for PickScore, ImageReward.pt with BLIP's unused projections,
the aesthetic MLP's `layers.N` state dict. Files go into
`$HF_HOME/hub/models--ORG--NAME/{blobs,refs/main,snapshots/<commit>}` as the hub client
writes them, under the real repo ids, so the loaders are tested on what users will have.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_L14 = "miro-tiny-ViT-L-14"  # OpenAI-style: QuickGELU
TINY_H14 = "miro-tiny-ViT-H-14"
BLIP_VISION = {"width": 128, "depth": 2}  # heads = width // 64, patch 16, 224 px, as BLIP
TEXT_WIDTH = 32  # the BERT hidden size of the tiny ImageReward

_OPENCLIP_CFG = {
    TINY_L14: {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 224,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 14,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    },
    TINY_H14: {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 224,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 14,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    },
}
LAION_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


# ----------------------------------------------------------------------------
# HF cache layout
# ----------------------------------------------------------------------------


def put_in_hub(hf_home: Path, repo: str, files: dict[str, Path]) -> Path:
    """Store files as the hub client does: content-addressed blobs, snapshot symlinks, refs/main."""
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        blob = folder / "blobs" / digest
        shutil.copyfile(src, blob)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


@contextlib.contextmanager
def hub_at(hf_home: Path) -> Iterator[None]:
    """Point huggingface_hub (hence transformers and open_clip) at `hf_home`, offline."""
    from huggingface_hub import constants

    saved = (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE, os.environ.get("HF_HOME"))
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(hf_home / "hub"), True
    os.environ["HF_HOME"] = str(hf_home)
    try:
        yield
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("HF_HOME", None)
        else:
            os.environ["HF_HOME"] = saved[2]


# ----------------------------------------------------------------------------
# Tiny models
# ----------------------------------------------------------------------------


def randomize(module: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Every float parameter drawn at random (init leaves LayerNorms and CLS tokens trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(1.0 + noise if "norm" in name.lower() and name.endswith("weight") else noise)
    return module


def register_tiny_open_clip(folder: Path) -> Path:
    """Write the tiny open_clip configs and register them with open_clip."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    for name, cfg in _OPENCLIP_CFG.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return folder


def tiny_open_clip_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    import open_clip

    model = open_clip.create_model(name, pretrained=None, load_weights=False)
    randomize(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))
    return model.state_dict()


def clip_bpe_vocab(folder: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt of the real CLIP BPE, built from open_clip's bpe file."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    del open_clip
    with gzip.open(default_bpe()) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


def clip_processor_files(folder: Path) -> dict[str, Path]:
    """The laion CLIP-ViT-H-14 processor files: its preprocessor_config.json and tokenizer."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab(folder / "bpe")
    tok = CLIPTokenizer(vocab=str(vocab), merges=str(merges), pad_token="<|endoftext|>")
    # transformers 5 takes `vocab`/`merges`; given `vocab_file` it silently builds an empty BPE
    assert len(tok) == 49408 and tok("a cat")["input_ids"] == [49406, 320, 2368, 49407]
    tok.model_max_length = 77
    out = folder / "processor"
    tok.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(LAION_PREPROCESSOR))
    # the repo is also a transformers CLIP model; AutoProcessor reads its model type there
    (out / "config.json").write_text(
        json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]})
    )
    return {p.name: p for p in out.iterdir() if p.is_file()}


def tiny_clip_h(seed: int):
    """A tiny transformers CLIPModel of PickScore's / SciScore's family, logit scale 100."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                     "hidden_act": "gelu", "eos_token_id": 2},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
        projection_dim=32,
    )  # fmt: skip
    model = randomize(CLIPModel(config), seed)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))
    return model


def tiny_pickscore_files(folder: Path, seed: int) -> dict[str, Path]:
    """config.json + an old-style pytorch_model.bin (with the position_ids buffers)."""
    model = tiny_clip_h(seed)
    config = model.config
    state = dict(model.state_dict())
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    n_patches = (224 // 14) ** 2 + 1
    state["vision_model.embeddings.position_ids"] = torch.arange(n_patches)[None]
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    torch.save(state, folder / "pytorch_model.bin")
    return {
        "config.json": folder / "config.json",
        "pytorch_model.bin": folder / "pytorch_model.bin",
    }


def tiny_sciscore_files(folder: Path, seed: int) -> dict[str, Path]:
    """config.json + model.safetensors, as `save_pretrained` writes a CLIPModel today."""
    tiny_clip_h(seed).save_pretrained(folder)
    return {name: folder / name for name in ("config.json", "model.safetensors")}


_WORDS = """a an the of on in with and to is photo picture painting drawing cat dog red blue green
yellow small large big circle square triangle left right above below next two three man woman
city night sky tree house car street beautiful"""
BERT_WORDS = _WORDS.split()


def tiny_bert_vocab(folder: Path) -> Path:
    """A small WordPiece vocabulary in bert-base-uncased's format (special ids as BERT's order)."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-:;()\"&/")
    tokens = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *chars,
        *("##" + c for c in chars),
        *BERT_WORDS,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512})
    )
    return folder


def tiny_imagereward_files(folder: Path, vocab_size: int, seed: int) -> dict[str, Path]:
    """med_config.json and ImageReward.pt: the state dict of ImageReward(…) with BLIP's extras."""
    from miro_data.rewards.blip import ImageRewardNet, TextConfig, VisionConfig

    med = {
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": TEXT_WIDTH, "initializer_range": 0.02,
        "intermediate_size": 64, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
        "model_type": "bert", "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 0,
        "type_vocab_size": 2, "vocab_size": vocab_size + 2, "encoder_width": 768,
        "add_cross_attention": True,
    }  # fmt: skip
    width = BLIP_VISION["width"]
    vision = VisionConfig(width=width, depth=BLIP_VISION["depth"], heads=width // 64)
    text_cfg = {k: med[k] for k in TextConfig.__dataclass_fields__ if k in med}
    net = randomize(
        ImageRewardNet(vision, TextConfig(**{**text_cfg, "encoder_width": width})), seed
    )
    with torch.no_grad():  # a head wide enough that scores spread well beyond rounding
        for layer in net.mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(6.0)
    state = dict(net.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(512)[None]
    for name, d_in in (("vision_proj", width), ("text_proj", TEXT_WIDTH)):
        state[f"blip.{name}.weight"] = torch.randn(256, d_in, generator=g)  # BLIP embed_dim
        state[f"blip.{name}.bias"] = torch.randn(256, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "med_config.json").write_text(json.dumps(med, indent=2))
    torch.save(state, folder / "ImageReward.pt")
    return {
        "ImageReward.pt": folder / "ImageReward.pt",
        "med_config.json": folder / "med_config.json",
    }


# ----------------------------------------------------------------------------
# VQAScore: CLIP-FlanT5 (t2v_metrics' format), its FlanT5 tokenizer, its CLIP vision tower
# ----------------------------------------------------------------------------

VQA_MODEL, VQA_REPO, VQA_TOKENIZER = (
    "clip-flant5-xl",
    "zhiqiulin/clip-flant5-xl",
    "google/flan-t5-xl",
)
VQA_VISION = "openai/clip-vit-large-patch14-336"
_T5_WORDS = """A chat between a curious user and an artificial intelligence assistant. The gives
helpful, detailed, polite answers to the user's questions. USER: ASSISTANT: Does this figure show
Please answer yes or no. Yes No photo of cat dog red blue green circle square triangle two next
to painting city at night man woman house drawing small YELLOW left tree"""


def tiny_t5_tokenizer(folder: Path) -> Path:
    """A FlanT5-style Unigram tokenizer (ids 0–2 pad, </s>, unk; 100 sentinels after the
    vocabulary, so the tokenizer is shorter than the model's vocabulary, as FlanT5's is)."""
    from transformers import T5Tokenizer

    words = dict.fromkeys(w.strip('.,?"') for w in _T5_WORDS.split())
    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -5.0) for w in words if w] + [(c, -8.0) for c in chars]
    vocab += [("\u2581" + c, -9.0) for c in chars]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=100)
    tokenizer.save_pretrained(folder)
    # the repo is a T5 model too; AutoTokenizer reads its model type there
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert tokenizer("Yes")["input_ids"] == [tokenizer.convert_tokens_to_ids("\u2581Yes"), 1]
    return folder


def tiny_clip_vision(folder: Path, seed: int):
    """The CLIP ViT-L/14-336 vision tower's repo, shrunk: config, weights, processor."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=2, image_size=336, patch_size=14,
                              projection_dim=32, hidden_act="quick_gelu")  # fmt: skip
    model = randomize(CLIPVisionModel(config), seed)
    folder.mkdir(parents=True, exist_ok=True)
    config.to_json_file(folder / "config.json")
    # the published repo holds a whole CLIPModel, saved by transformers 4: `vision_model.*` names
    # (a text tower too, which the vision tower never reads: one tensor of it stands for it here)
    state = {f"vision_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["text_model.final_layer_norm.weight"] = torch.ones(8)
    save_file(state, folder / "model.safetensors")
    processor = {**LAION_PREPROCESSOR, "crop_size": 336, "size": 336}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


def tiny_vqascore_files(folder: Path, vision: torch.nn.Module, vocab: int, seed: int) -> dict:
    """config.json + a two-shard pytorch_model.bin with its index, published names: T5 keys at
    the top (with the tied `embed_tokens` aliases the published class saves), the vision tower
    (the same weights as its repo) and the projector."""
    from miro_data.rewards.clip_t5 import ClipT5

    config = {
        "model_type": "clip_t5", "architectures": ["CLIPT5ForConditionalGeneration"],
        "vocab_size": vocab + 28, "d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 2,
        "num_decoder_layers": 2, "num_heads": 2, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "is_encoder_decoder": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        "mm_vision_tower": VQA_VISION, "mm_hidden_size": 64, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "use_mm_proj": True,
    }  # fmt: skip
    net = randomize(ClipT5(config, vision.config), seed, std=0.3)
    net.vision_tower.vision_tower.load_state_dict(vision.state_dict())
    tower = "vision_tower.vision_tower."  # published (transformers 4) names: `vision_model.`
    state = {
        k.removeprefix("language_model.").replace(tower, tower + "vision_model."): v
        for k, v in net.state_dict().items()
    }
    state["embed_tokens.weight"] = state["shared.weight"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = sorted(state)
    shards = {
        "pytorch_model-00001-of-00002.bin": names[::2],
        "pytorch_model-00002-of-00002.bin": names[1::2],
    }
    weight_map = {}
    for shard, keys in shards.items():
        torch.save({k: state[k].clone() for k in keys}, folder / shard)
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return {p.name: p for p in folder.iterdir()}


def aesthetic_mlp_file(path: Path, dim: int, seed: int) -> Path:
    from miro_data.rewards.torch_reward import ScoreHead

    mlp = randomize(ScoreHead(dim), seed, std=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mlp.state_dict(), path)
    return path


# ----------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyRewards:
    hf_home: Path  # HF cache with every repo the rewards look for
    configs: Path  # the tiny open_clip model configs
    clip_bin: Path  # explicit-path open_clip weights of TINY_L14 (torch format)
    options: dict  # per-reward options that select the tiny models


def build_tiny_rewards(root: Path) -> TinyRewards:
    hf_home, work = root / "hf", root / "work"
    configs = register_tiny_open_clip(root / "open_clip_configs")

    # clip: an open_clip hub repo (config + safetensors), loaded as hf-hub:
    from safetensors.torch import save_file

    state = tiny_open_clip_state(TINY_L14, seed=1)
    (work / "clip").mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, work / "clip" / "open_clip_model.safetensors"
    )
    preprocess = {"mean": LAION_PREPROCESSOR["image_mean"], "std": LAION_PREPROCESSOR["image_std"],
                  "interpolation": "bicubic", "resize_mode": "shortest"}  # fmt: skip
    cfg = {"model_cfg": _OPENCLIP_CFG[TINY_L14], "preprocess_cfg": preprocess}
    (work / "clip" / "open_clip_config.json").write_text(json.dumps(cfg))
    put_in_hub(hf_home, "miro-test/tiny-clip", {p.name: p for p in (work / "clip").iterdir()})
    # the same weights as an explicit torch file, for aesthetic's clip_checkpoint
    clip_bin = work / "open_clip_pytorch_model.bin"
    torch.save(state, clip_bin)

    mlp = aesthetic_mlp_file(work / "sac+logos+ava1-l14-linearMSE.pth", 32, seed=2)
    put_in_hub(hf_home, "camenduru/improved-aesthetic-predictor", {mlp.name: mlp})

    for version, seed in (("HPS_v2.1_compressed.pt", 3), ("HPS_v2_compressed.pt", 4)):
        torch.save({"state_dict": tiny_open_clip_state(TINY_H14, seed)}, work / version)
    put_in_hub(
        hf_home,
        "xswu/HPSv2",
        {n: work / n for n in ("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt")},
    )

    put_in_hub(
        hf_home, "yuvalkirstain/PickScore_v1", tiny_pickscore_files(work / "pickscore", seed=5)
    )
    put_in_hub(
        hf_home, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", clip_processor_files(work / "laion")
    )
    put_in_hub(hf_home, "Jialuo21/SciScore", tiny_sciscore_files(work / "sciscore", seed=7))

    bert = tiny_bert_vocab(work / "bert")
    put_in_hub(hf_home, "bert-base-uncased", {p.name: p for p in bert.iterdir()})
    vocab_size = len((bert / "vocab.txt").read_text().split())
    put_in_hub(
        hf_home,
        "THUDM/ImageReward",
        tiny_imagereward_files(work / "imagereward", vocab_size, seed=6),
    )

    vision = tiny_clip_vision(work / "clip-vit-336", seed=8)
    put_in_hub(hf_home, VQA_VISION, {p.name: p for p in (work / "clip-vit-336").iterdir()})
    t5_tok = tiny_t5_tokenizer(work / "flan-t5")
    put_in_hub(hf_home, VQA_TOKENIZER, {p.name: p for p in t5_tok.iterdir()})
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(t5_tok))
    put_in_hub(hf_home, VQA_REPO, tiny_vqascore_files(work / "clip-flant5", vision, vocab, seed=9))

    home = str(hf_home)
    options = {
        "clip": {"model": "hf-hub:miro-test/tiny-clip", "hf_home": home},
        "aesthetic": {"model": TINY_L14, "clip_checkpoint": str(clip_bin), "hf_home": home},
        "hpsv2": {"model": TINY_H14, "hf_home": home},
        "pickscore": {"hf_home": home},
        "sciscore": {"hf_home": home},
        "vqascore": {"model": VQA_MODEL, "hf_home": home},
        "imagereward": {"hf_home": home},
    }
    return TinyRewards(hf_home, configs, clip_bin, options)


# ----------------------------------------------------------------------------
# Test inputs
# ----------------------------------------------------------------------------

LONG_CAPTION = " ".join(
    ["a beautiful painting of a small red circle above a large blue square"] * 12
)


def sample_images(seed: int = 0) -> list[np.ndarray]:
    """Assorted sizes and aspect ratios: portrait, landscape, tiny, square, extreme, gray."""
    rng = np.random.default_rng(seed)
    shapes = [(300, 200), (97, 131), (224, 224), (17, 300), (512, 384), (1, 1), (640, 64), (50, 50)]
    images = []
    for h, w in shapes:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w, 1), yy * 255 // max(h, 1), (xx + yy) % 256], axis=-1)
        noise = rng.integers(0, 64, (h, w, 3))
        images.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    gray = rng.integers(0, 256, (120, 90), dtype=np.uint8)
    images.append(np.repeat(gray[..., None], 3, axis=2))  # a grayscale image, decoded to RGB
    return images


def sample_captions(n: int) -> list[str]:
    base = ["a photo of a cat", "", "two red circles next to a blue square", LONG_CAPTION,
            "a painting of a city at night", "a dog", "Small YELLOW triangle, left of a tree!",
            "a house", "a drawing of a man and a woman"]  # fmt: skip
    return [base[i % len(base)] for i in range(n)]


_BUILT: dict[str, TinyRewards] = {}


def tiny_rewards(tmp_path_factory: pytest.TempPathFactory) -> TinyRewards:
    """The tiny checkpoints, built once per test session whichever module asks first."""
    if "tiny" not in _BUILT:
        _BUILT["tiny"] = build_tiny_rewards(tmp_path_factory.mktemp("tiny_rewards"))
    return _BUILT["tiny"]
