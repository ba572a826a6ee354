"""The seven learned rewards' checkpoints at REAL size, random weights, in the files users have.

`scripts/gpu-check.sh` needs every reward loadable by `miro data annotate` without the network,
so it writes each published checkpoint's files — same names, formats, parameter names and
real configs as the tiny writers of `tests/rewards_fixtures.py` — into a temporary Hugging Face
cache under the real repo ids; the project's own loaders then read them as they would the real
weights (throughput does not depend on the weights' values). Tokenizers are the tests' small
ones (the real CLIP BPE; small BERT and T5 vocabularies): tokenising is not what costs.

Models are initialised on the GPU when there is one (random init of 3 B parameters on a CPU
takes minutes). Blobs are named by a sha256 of (repo, file name): the hub names them by their
content's sha256 and the loaders trust that name, so nobody re-hashes 30 GB here either.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fixture writers

import rewards_fixtures as rf

from miro_data.rewards import catalog

# t2v_metrics' CLIP-FlanT5: FlanT5 sizes (the checkpoints' config.json) on CLIP ViT-L/14-336
FLAN_T5 = {
    "clip-flant5-xl": {"d_model": 2048, "d_ff": 5120, "num_heads": 32},
    "clip-flant5-xxl": {"d_model": 4096, "d_ff": 10240, "num_heads": 64},
}
CLIP_H = {  # PickScore_v1's and SciScore's CLIPModel: ViT-H/14 with a 1024-d text tower
    "text_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                    "num_attention_heads": 16, "hidden_act": "gelu", "eos_token_id": 2},
    "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                      "num_attention_heads": 16, "patch_size": 14, "hidden_act": "gelu"},
    "projection_dim": 1024,
}  # fmt: skip


def into_hub(hf_home: Path, repo: str, files: dict[str, Path]) -> None:
    """Move files into `$HF_HOME/hub/models--ORG--NAME/{blobs,snapshots/<commit>,refs/main}`."""
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        blob = folder / "blobs" / hashlib.sha256(f"{repo}/{name}".encode()).hexdigest()
        shutil.move(src, blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def write_openclip(work: Path, hf_home: Path, device: torch.device) -> None:
    """clip + aesthetic: OpenAI ViT-L/14 (QuickGELU) as open_clip's hub file, the LAION MLP;
    hpsv2: open_clip ViT-H/14 in HPS's `{"state_dict": …}` checkpoint."""
    from safetensors.torch import save_file

    from miro_data.rewards.openclip_rewards import build_open_clip

    with torch.device(device):
        state = _cpu_state(build_open_clip("ViT-L-14", quick_gelu=True))
    save_file(state, work / catalog.OPENCLIP_SAFE)
    repo = catalog.KNOWN_OPENCLIP[("ViT-L-14", "openai")]
    into_hub(hf_home, repo, {catalog.OPENCLIP_SAFE: work / catalog.OPENCLIP_SAFE})
    mlp = rf.aesthetic_mlp_file(work / catalog.AESTHETIC_FILE, 768, seed=2)
    into_hub(hf_home, catalog.AESTHETIC_REPO, {mlp.name: mlp})
    with torch.device(device):
        state = _cpu_state(build_open_clip("ViT-H-14"))
    name = catalog.HPS_FILES["2.1"]
    torch.save({"state_dict": state}, work / name)
    into_hub(hf_home, catalog.HPS_REPO, {name: work / name})


def write_clip_h(work: Path, hf_home: Path, device: torch.device) -> None:
    """pickscore and sciscore: one real-size CLIP-H saved as each repo's files (SciScore's
    `save_pretrained` format, for both), and the laion processor both read."""
    from transformers import CLIPConfig, CLIPModel

    with torch.device(device):
        model = CLIPModel(CLIPConfig(**CLIP_H)).eval()
    model.to("cpu")
    for repo in (catalog.PICKSCORE_REPO, catalog.SCISCORE_REPO):
        folder = work / repo.replace("/", "--")
        model.save_pretrained(folder, max_shard_size="50GB")  # one file, as published
        into_hub(hf_home, repo, {p.name: p for p in folder.iterdir()})
    del model
    into_hub(hf_home, catalog.PICKSCORE_PROCESSOR, rf.clip_processor_files(work / "laion"))


def write_imagereward(work: Path, hf_home: Path, device: torch.device) -> None:
    """ImageReward.pt (BLIP ViT-L/16 + BERT-base with cross-attention, and BLIP's unused
    projections) and med_config.json at ImageReward's sizes; a small BERT vocabulary."""
    from miro_data.rewards.blip import ImageRewardNet, TextConfig, VisionConfig

    bert = rf.tiny_bert_vocab(work / "bert")
    into_hub(hf_home, catalog.BERT_REPO, {p.name: p for p in bert.iterdir()})
    vision, text = VisionConfig(), TextConfig()
    with torch.device(device):
        state = _cpu_state(ImageRewardNet(vision, text))
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(512)[None]
    for name, d_in in (("vision_proj", vision.width), ("text_proj", text.hidden_size)):
        state[f"blip.{name}.weight"] = torch.randn(256, d_in) * 0.02  # BLIP's embed_dim
        state[f"blip.{name}.bias"] = torch.zeros(256)
    med = {"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
           "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1,
           "initializer_range": 0.02, "type_vocab_size": 2, "add_cross_attention": True,
           **{k: getattr(text, k) for k in TextConfig.__dataclass_fields__}}  # fmt: skip
    folder = work / "imagereward"
    folder.mkdir()
    (folder / "med_config.json").write_text(json.dumps(med, indent=2))
    torch.save(state, folder / "ImageReward.pt")
    into_hub(hf_home, catalog.IMAGEREWARD_REPO, {p.name: p for p in folder.iterdir()})


def write_vqascore(work: Path, hf_home: Path, device: torch.device, model: str) -> None:
    """CLIP-FlanT5 (xl: 3.1 B parameters, xxl: 11.3 B) in t2v_metrics' published format: a
    two-shard pytorch_model.bin with its index, transformers-4 names; the CLIP ViT-L/14-336
    tower's repo (config, processor); a small FlanT5-style tokenizer."""
    from transformers import CLIPVisionConfig

    from miro_data.rewards.clip_t5 import ClipT5

    repo, tokenizer_repo = catalog.VQA_MODELS[model]
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
    tower = work / "clip-vit-336"
    tower.mkdir()
    vision.to_json_file(tower / "config.json")
    processor = {**rf.LAION_PREPROCESSOR, "crop_size": 336, "size": 336}
    (tower / "preprocessor_config.json").write_text(json.dumps(processor))
    into_hub(hf_home, catalog.VQA_VISION, {p.name: p for p in tower.iterdir()})
    t5_tok = rf.tiny_t5_tokenizer(work / "flan-t5")
    into_hub(hf_home, tokenizer_repo, {p.name: p for p in t5_tok.iterdir()})
    config = {
        "model_type": "clip_t5", "architectures": ["CLIPT5ForConditionalGeneration"],
        **FLAN_T5[model], "vocab_size": 32128, "d_kv": 64, "num_layers": 24,
        "num_decoder_layers": 24, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "is_encoder_decoder": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        "mm_vision_tower": catalog.VQA_VISION, "mm_hidden_size": 1024,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "use_mm_proj": True,
    }  # fmt: skip
    with torch.device(device):
        net = ClipT5(config, vision)
    prefix = "vision_tower.vision_tower."  # published (transformers 4) names: `vision_model.`
    state = {
        k.removeprefix("language_model.").replace(prefix, prefix + "vision_model."): v
        for k, v in _cpu_state(net).items()
    }
    del net
    state["embed_tokens.weight"] = state["shared.weight"]
    folder = work / "clip-flant5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = sorted(state)
    weight_map = {}
    for i, keys in enumerate((names[::2], names[1::2])):
        shard = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({k: state[k] for k in keys}, folder / shard)
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    into_hub(hf_home, repo, {p.name: p for p in folder.iterdir()})


def write_real_rewards(
    root: Path, names: list[str], vqa_model: str, device: torch.device
) -> tuple[Path, dict[str, dict]]:
    """Every chosen reward's files at real size; returns (HF home, per-reward options)."""
    hf_home, work = root / "hf", root / "work"
    work.mkdir(parents=True)
    if {"clip", "aesthetic", "hpsv2"} & set(names):
        write_openclip(work, hf_home, device)
    if {"pickscore", "sciscore"} & set(names):
        write_clip_h(work, hf_home, device)
    if "imagereward" in names:
        write_imagereward(work, hf_home, device)
    if "vqascore" in names:
        write_vqascore(work, hf_home, device, vqa_model)
    shutil.rmtree(work)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    options = {name: {"hf_home": str(hf_home)} for name in names}
    if "vqascore" in options:
        options["vqascore"]["model"] = vqa_model
    return hf_home, options


def write_tiny_rewards(root: Path, names: list[str]) -> tuple[Path, dict[str, dict]]:
    """--dry-run: the tests' tiny checkpoints (same formats, same cache layout, same loaders)."""
    tiny = rf.build_tiny_rewards(root)
    return tiny.hf_home, {name: dict(tiny.options[name]) for name in names}
