"""The learned rewards: their options, the files each needs, and lazy factories.

Importing this module registers `aesthetic`, `clip`, `pickscore`, `hpsv2`, `imagereward`,
`sciscore` and `vqascore`
without importing torch, open_clip or transformers: the model code loads when a reward is
built. `RewardSpec.weights(ctx)` says, for each file, where it is looked for and whether it is
there (explicit path options first, else the local Hugging Face cache). Options per reward are
documented in docs/rewards.md and in each `*_OPTIONS` table below.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from miro_data.common import MiroError
from miro_data.rewards.base import Reward, RewardContext, RewardSpec, WeightStatus, register
from miro_data.rewards.weights import Wanted, download_missing, statuses

OPENCLIP_SAFE, OPENCLIP_BIN = "open_clip_model.safetensors", "open_clip_pytorch_model.bin"
# open_clip's own table maps a (model, tag) to its hub repo; the default is known without it.
KNOWN_OPENCLIP = {("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai"}

AESTHETIC_REPO, AESTHETIC_FILE = (
    "camenduru/improved-aesthetic-predictor",
    "sac+logos+ava1-l14-linearMSE.pth",
)
HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"2.0": "HPS_v2_compressed.pt", "2.1": "HPS_v2.1_compressed.pt"}
PICKSCORE_REPO, PICKSCORE_PROCESSOR = (
    "yuvalkirstain/PickScore_v1",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
)
IMAGEREWARD_REPO, BERT_REPO = "THUDM/ImageReward", "bert-base-uncased"
SCISCORE_REPO = "Jialuo21/SciScore"  # CLIP-H, scored with PickScore's processor and formula
# t2v_metrics' CLIP-FlanT5 models: name → (checkpoint repo, tokenizer repo)
VQA_MODELS = {
    "clip-flant5-xxl": ("zhiqiulin/clip-flant5-xxl", "google/flan-t5-xxl"),
    "clip-flant5-xl": ("zhiqiulin/clip-flant5-xl", "google/flan-t5-xl"),
}
VQA_DEFAULT, VQA_VISION = "clip-flant5-xxl", "openai/clip-vit-large-patch14-336"

CLIP_OPTIONS = {
    "model": "open_clip architecture, or hf-hub:ORG/NAME (default ViT-L-14)",
    "pretrained": "open_clip pretrained tag (default openai)",
    "checkpoint": "explicit CLIP weights file (.safetensors/.bin/.pt), instead of the HF cache",
    "quick_gelu": "with `checkpoint`: the weights expect QuickGELU (default: as the tag says)",
}
AESTHETIC_OPTIONS = {
    "model": CLIP_OPTIONS["model"],
    "pretrained": CLIP_OPTIONS["pretrained"],
    "clip_checkpoint": CLIP_OPTIONS["checkpoint"],
    "quick_gelu": CLIP_OPTIONS["quick_gelu"],
    "checkpoint": f"explicit path of {AESTHETIC_FILE}",
    "repo": f"HF repo holding {AESTHETIC_FILE} (default {AESTHETIC_REPO})",
}
HPSV2_OPTIONS = {
    "version": "2.1 (default) or 2.0",
    "checkpoint": "explicit path of HPS_v2.1_compressed.pt / HPS_v2_compressed.pt",
    "repo": f"HF repo holding the checkpoints (default {HPS_REPO})",
    "model": "open_clip architecture the checkpoint fits (default ViT-H-14)",
}
PICKSCORE_OPTIONS = {
    "repo": f"HF repo of the model (default {PICKSCORE_REPO})",
    "model_dir": "explicit folder with config.json and model.safetensors or pytorch_model.bin",
    "processor": f"HF repo of the processor (default {PICKSCORE_PROCESSOR})",
    "processor_dir": "explicit folder with preprocessor_config.json and the tokenizer files",
}
SCISCORE_OPTIONS = {
    **PICKSCORE_OPTIONS,
    "repo": f"HF repo of the model (default {SCISCORE_REPO})",
}
VQASCORE_OPTIONS = {
    "model": f"{' or '.join(VQA_MODELS)} (default {VQA_DEFAULT})",
    "repo": "HF repo of the CLIP-FlanT5 checkpoint (default: the model's)",
    "model_dir": "explicit folder with config.json and the weights (sharded or not)",
    "tokenizer": "HF repo of the FlanT5 tokenizer (default: the model's)",
    "tokenizer_dir": "explicit folder with the FlanT5 tokenizer.json",
    "vision_tower": f"HF repo of the CLIP vision tower (default {VQA_VISION})",
    "vision_dir": "explicit folder with the vision tower's config.json and preprocessor_config.json",
}
IMAGEREWARD_OPTIONS = {
    "checkpoint": "explicit path of ImageReward.pt",
    "med_config": "explicit path of med_config.json",
    "repo": f"HF repo holding both (default {IMAGEREWARD_REPO})",
    "tokenizer_dir": "explicit folder with the bert-base-uncased vocab.txt",
    "tokenizer_repo": f"HF repo of the BERT tokenizer (default {BERT_REPO})",
}


# ----------------------------------------------------------------------------
# Which files each reward needs
# ----------------------------------------------------------------------------


def openclip_hub(model: str, pretrained: str) -> tuple[str, tuple[str, ...]]:
    """(repo, candidate filenames) of an open_clip (model, pretrained tag) in the HF hub."""
    if (model, pretrained) in KNOWN_OPENCLIP:
        return KNOWN_OPENCLIP[model, pretrained], (OPENCLIP_SAFE, OPENCLIP_BIN)
    import open_clip  # only for a non-default pair: its table imports torch

    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg or not cfg.get("hf_hub"):
        raise MiroError(
            f"open_clip knows no Hugging Face source for {model}/{pretrained}; "
            "give the weights file as the `checkpoint` option"
        )
    repo, filename = os.path.split(cfg["hf_hub"].strip())
    if not filename:
        return repo, (OPENCLIP_SAFE, OPENCLIP_BIN)
    return repo, (os.path.splitext(filename)[0] + ".safetensors", filename)


def openclip_wanted(
    label: str, model: str, pretrained: str, checkpoint: str | None
) -> list[Wanted]:
    """The weights (and, for hf-hub: models, the config) of an open_clip model."""
    explicit = str(checkpoint) if checkpoint else None
    if model.startswith("hf-hub:"):
        repo = model.removeprefix("hf-hub:")
        return [
            Wanted(f"{label} config", ("open_clip_config.json",), repo=repo),
            Wanted(label, (OPENCLIP_SAFE, OPENCLIP_BIN), repo=repo, explicit=explicit),
        ]
    if explicit:
        return [Wanted(label, explicit=explicit)]
    repo, filenames = openclip_hub(model, pretrained)
    return [Wanted(label, filenames, repo=repo)]


def clip_files(opts: dict) -> list[Wanted]:
    model, tag = opts.get("model", "ViT-L-14"), opts.get("pretrained", "openai")
    return openclip_wanted("CLIP weights", model, tag, opts.get("checkpoint"))


def aesthetic_files(opts: dict) -> list[Wanted]:
    model, tag = opts.get("model", "ViT-L-14"), opts.get("pretrained", "openai")
    mlp = Wanted(
        "aesthetic MLP",
        (AESTHETIC_FILE,),
        repo=opts.get("repo", AESTHETIC_REPO),
        explicit=opts.get("checkpoint"),
    )
    return [*openclip_wanted("CLIP weights", model, tag, opts.get("clip_checkpoint")), mlp]


def hps_version(opts: dict) -> str:
    version = str(opts.get("version", "2.1")).lower().removeprefix("v")
    version = {"2": "2.0"}.get(version, version)
    if version not in HPS_FILES:
        raise MiroError(f"hpsv2: unknown version {opts['version']!r}; use 2.1 or 2.0")
    return version


def hpsv2_files(opts: dict) -> list[Wanted]:
    name = HPS_FILES[hps_version(opts)]
    repo = opts.get("repo", HPS_REPO)
    return [Wanted("HPS checkpoint", (name,), repo=repo, explicit=opts.get("checkpoint"))]


def pickscore_files(
    opts: dict, label: str = "PickScore", repo: str = PICKSCORE_REPO
) -> list[Wanted]:
    repo, folder = opts.get("repo", repo), opts.get("model_dir")
    proc, proc_dir = opts.get("processor", PICKSCORE_PROCESSOR), opts.get("processor_dir")
    return [
        Wanted(f"{label} config", ("config.json",), repo=repo, folder=folder),
        Wanted(
            f"{label} weights",
            ("model.safetensors", "pytorch_model.bin"),
            repo=repo,
            folder=folder,
        ),
        Wanted("processor config", ("preprocessor_config.json",), repo=proc, folder=proc_dir),
        Wanted("processor tokenizer", ("tokenizer.json", "vocab.json"), repo=proc, folder=proc_dir),
    ]


def sciscore_files(opts: dict) -> list[Wanted]:
    return pickscore_files(opts, "SciScore", SCISCORE_REPO)


def vqa_model(opts: dict) -> tuple[str, str]:
    name = str(opts.get("model", VQA_DEFAULT))
    if name not in VQA_MODELS:
        raise MiroError(f"vqascore: unknown model {name!r}; use {' or '.join(VQA_MODELS)}")
    return VQA_MODELS[name]


def vqascore_files(opts: dict) -> list[Wanted]:
    repo, tokenizer = vqa_model(opts)
    repo, folder = opts.get("repo", repo), opts.get("model_dir")
    vision, vision_dir = opts.get("vision_tower", VQA_VISION), opts.get("vision_dir")
    weights = ("model.safetensors.index.json", "pytorch_model.bin.index.json",
               "model.safetensors", "pytorch_model.bin")  # fmt: skip
    return [
        Wanted("CLIP-FlanT5 config", ("config.json",), repo=repo, folder=folder),
        Wanted("CLIP-FlanT5 weights", weights, repo=repo, folder=folder),
        Wanted(
            "FlanT5 tokenizer",
            ("tokenizer.json",),
            repo=opts.get("tokenizer", tokenizer),
            folder=opts.get("tokenizer_dir"),
        ),
        Wanted(
            "vision tower processor", ("preprocessor_config.json",), repo=vision, folder=vision_dir
        ),
        Wanted("vision tower config", ("config.json",), repo=vision, folder=vision_dir),
    ]


def vqascore_vision_weights(opts: dict) -> Wanted:
    """The vision tower's own weights: needed only when the checkpoint does not carry them."""
    return Wanted(
        "vision tower weights",
        ("model.safetensors", "pytorch_model.bin"),
        repo=opts.get("vision_tower", VQA_VISION),
        folder=opts.get("vision_dir"),
    )


def imagereward_files(opts: dict) -> list[Wanted]:
    repo = opts.get("repo", IMAGEREWARD_REPO)
    return [
        Wanted(
            "ImageReward checkpoint",
            ("ImageReward.pt",),
            repo=repo,
            explicit=opts.get("checkpoint"),
        ),
        Wanted(
            "ImageReward med_config",
            ("med_config.json",),
            repo=repo,
            explicit=opts.get("med_config"),
        ),
        Wanted(
            "BERT tokenizer",
            ("vocab.txt",),
            repo=opts.get("tokenizer_repo", BERT_REPO),
            folder=opts.get("tokenizer_dir"),
        ),
    ]


# ----------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------


def _lazy(module: str, cls: str) -> Callable[[RewardContext], Reward]:
    def factory(ctx: RewardContext) -> Reward:
        return getattr(importlib.import_module(module), cls)(ctx)

    return factory


def _weights(
    name: str, files: Callable[[dict], list[Wanted]]
) -> Callable[[RewardContext], list[WeightStatus]]:
    def weights(ctx: RewardContext) -> list[WeightStatus]:
        opts = ctx.options_for(name)
        return statuses(files(opts), opts.get("hf_home"))

    return weights


def _download(name: str, files: Callable[[dict], list[Wanted]]) -> Callable[[RewardContext], None]:
    def download(ctx: RewardContext) -> None:
        opts = ctx.options_for(name)
        download_missing(name, files(opts), opts.get("hf_home"))

    return download


_OPENCLIP = "miro_data.rewards.openclip_rewards"
_SPECS = [
    ("aesthetic", "LAION improved aesthetic predictor (MLP on CLIP ViT-L/14 embeddings), ≈1–10",
     aesthetic_files, _OPENCLIP, "Aesthetic"),
    ("clip", "CLIP score: 100 × cosine of image and caption embeddings (open_clip, ViT-L/14)",
     clip_files, _OPENCLIP, "ClipScore"),
    ("pickscore", "PickScore v1: logit scale × cosine, CLIP-H fine-tuned on Pick-a-Pic",
     pickscore_files, "miro_data.rewards.pickscore", "PickScore"),
    ("hpsv2", "Human Preference Score v2.1 (v2.0 selectable): cosine, CLIP-H fine-tuned on HPDv2",
     hpsv2_files, _OPENCLIP, "HPSv2"),
    ("imagereward", "ImageReward v1.0: BLIP ViT-L + BERT cross-attention + MLP, standardised",
     imagereward_files, "miro_data.rewards.imagereward", "ImageReward"),
    ("sciscore", "SciScore: logit scale × cosine, CLIP-H fine-tuned on scientific images (Science-T2I)",
     sciscore_files, "miro_data.rewards.pickscore", "SciScore"),
    ("vqascore", "VQAScore: P(\"Yes\") from CLIP-FlanT5 (xxl) asked whether the image shows the caption",
     vqascore_files, "miro_data.rewards.vqascore", "VQAScore"),
]  # fmt: skip


def _vqascore_download_files(opts: dict) -> list[Wanted]:
    """What a download fetches for vqascore: also the vision tower's own weights, which
    loading reads only when the checkpoint lacks the tower (known only once it is read)."""
    return [*vqascore_files(opts), vqascore_vision_weights(opts)]


_DOWNLOADS = {"vqascore": _vqascore_download_files}  # where a download fetches more than `files`

for _name, _summary, _files, _module, _cls in _SPECS:
    _fetch = _DOWNLOADS.get(_name, _files)
    register(RewardSpec(_name, _summary, _lazy(_module, _cls), _weights(_name, _files),
                        _download(_name, _fetch)))  # fmt: skip
