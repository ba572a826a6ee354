"""Throughput of the learned rewards: images/s per reward and for all of them, model vs end to end.

Real-size architectures at random initialisation — CLIP ViT-L/14 (shared by `clip` and
`aesthetic`, plus the aesthetic MLP), HPSv2's ViT-H/14, PickScore's and SciScore's CLIP-H
(transformers; one processor, so each image is preprocessed once for both), ImageReward's
BLIP ViT-L/16 + BERT-base, VQAScore's CLIP-FlanT5 (`--vqa-model`, xxl by default: 11.3 B
parameters) — since no weights can be downloaded here; speed does not depend on the weights'
values. The CLIP tokenizer is the real BPE; the BERT and T5 tokenizers are the tests' small
vocabularies (tokenising is not what costs).

- model-only: `forward()` on inputs prepared before the clock starts;
- end-to-end: each reward's `score()` alone from uint8 arrays of assorted sizes
  (preprocessing, tokenising, model), with nothing to reuse from another reward;
- one pass: every chosen reward's `score()` on each batch, as `miro data annotate` calls them,
  sharing what they share; the ratio printed last is its seconds over the sum of the
  single-reward passes' (goal ≤ 1).
All are timed batch by batch in turn, so that they see the same machine load (other
processes on a shared machine move every figure); the first batch only warms up. On a CPU the
clock is this process's CPU time (wall time on a GPU): on a shared machine the wall clock
moved the same computation by up to 80 % between two passes.

- `--tiny NAMES`: those rewards from the tests' tiny checkpoints (`tests/rewards_fixtures.py`,
  loaded by the project's loaders) instead of real size — for a machine whose memory or time
  does not fit them all: each still takes its turn in the one pass, so the ratio covers all k.

    python benchmarks/bench_rewards.py [--n 6] [--batch 2] [--device auto] [--precision auto]
        [--rewards clip,aesthetic,pickscore,hpsv2,imagereward,sciscore,vqascore]
        [--vqa-model clip-flant5-xxl|clip-flant5-xl] [--tiny hpsv2,vqascore]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    CLIPVisionConfig,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tokenizer helpers

import rewards_fixtures as rf

from miro_data.rewards import RewardContext
from miro_data.rewards.blip import ImageRewardNet, TextConfig, VisionConfig
from miro_data.rewards.clip_t5 import ClipT5
from miro_data.rewards.imagereward import ImageReward, ImageRewardParts, blip_tokenizer
from miro_data.rewards.openclip_rewards import (
    Aesthetic,
    ClipScore,
    HPSv2,
    OpenClip,
    build_open_clip,
)
from miro_data.rewards.pickscore import PickScore, PickScoreParts, SciScore
from miro_data.rewards.torch_reward import FeatureCache, ScoreHead, TorchReward
from miro_data.rewards.vqascore import VQAParts, VQAScore

ALL = ("clip", "aesthetic", "pickscore", "hpsv2", "imagereward", "sciscore", "vqascore")
SIZES = [
    (512, 512),
    (768, 512),
    (480, 640),
    (1024, 768),
    (256, 384),
    (333, 500),
    (900, 600),
    (640, 427),
]
CAPTION = (
    "a watercolor painting of a red fox sitting in a snowy forest at dawn, soft light, detailed"
)


def pickscore_parts(device: torch.device, work: Path) -> PickScoreParts:
    """PickScore_v1's architecture: CLIP ViT-H/14 with a 1024-d text tower."""
    config = CLIPConfig(
        text_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                     "num_attention_heads": 16, "hidden_act": "gelu", "eos_token_id": 2},
        vision_config={"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                       "num_attention_heads": 16, "patch_size": 14, "hidden_act": "gelu"},
        projection_dim=1024,
    )  # fmt: skip
    model = CLIPModel(config).eval().requires_grad_(False).to(device)
    vocab, merges = rf.clip_bpe_vocab(work / "bpe")
    tokenizer = CLIPTokenizer(vocab=str(vocab), merges=str(merges), pad_token="<|endoftext|>")
    processor_cfg = {
        k: v for k, v in rf.LAION_PREPROCESSOR.items() if k != "feature_extractor_type"
    }
    return PickScoreParts(model, CLIPImageProcessor(**processor_cfg), tokenizer, "random")


# t2v_metrics' CLIP-FlanT5: FlanT5 sizes (the checkpoint's config.json) on CLIP ViT-L/14-336
FLAN_T5 = {
    "clip-flant5-xl": {"d_model": 2048, "d_ff": 5120, "num_heads": 32},
    "clip-flant5-xxl": {"d_model": 4096, "d_ff": 10240, "num_heads": 64},
}


def vqascore_parts(name: str, work: Path) -> VQAParts:
    """CLIP-FlanT5 at real size (xl: 3.1 B parameters, xxl: 11.3 B), random weights."""
    config = {**FLAN_T5[name], "vocab_size": 32128, "d_kv": 64, "num_layers": 24,
              "num_decoder_layers": 24, "feed_forward_proj": "gated-gelu",
              "tie_word_embeddings": False, "decoder_start_token_id": 0,
              "mm_hidden_size": 1024, "mm_projector_type": "mlp2x_gelu"}  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14,
                              hidden_act="quick_gelu")  # fmt: skip
    net = ClipT5(config, vision).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(rf.tiny_t5_tokenizer(work / "t5"))
    processor = {k: v for k, v in rf.LAION_PREPROCESSOR.items() if k != "feature_extractor_type"}
    image_processor = CLIPImageProcessor(**{**processor, "crop_size": 336, "size": 336})
    return VQAParts(net, tokenizer, image_processor, 32100, "random")


def build_tiny(ctx: RewardContext, work: Path, names: list[str]) -> dict[str, TorchReward]:
    """The tests' tiny checkpoints, through the loaders `annotate` uses."""
    from miro_data.rewards import build_reward

    tiny = rf.build_tiny_rewards(work / "tiny")
    options = {name: tiny.options[name] for name in names}
    tiny_ctx = RewardContext(device=ctx.device, precision=ctx.precision, options=options)
    return {name: build_reward(name, tiny_ctx) for name in names}  # type: ignore[misc]


def build(
    ctx: RewardContext, work: Path, names: list[str], vqa: str, tiny: list[str]
) -> dict[str, TorchReward]:
    device = torch.device(ctx.device)
    out: dict[str, TorchReward] = build_tiny(ctx, work, tiny) if tiny else {}
    real = set(names) - set(tiny)
    if {"clip", "aesthetic"} & real:
        l14 = OpenClip.from_model(
            build_open_clip("ViT-L-14", quick_gelu=True), "ViT-L-14",
            open_clip.get_pretrained_cfg("ViT-L-14", "openai"), "random", device,
        )  # fmt: skip
        if "clip" in real:
            out["clip"] = ClipScore(ctx, clip=l14)
        if "aesthetic" in real:
            out["aesthetic"] = Aesthetic(ctx, clip=l14, mlp=ScoreHead(768))
    if "pickscore" in real:
        out["pickscore"] = PickScore(ctx, parts=pickscore_parts(device, work))
    if "hpsv2" in real:
        h14 = OpenClip.from_model(
            build_open_clip("ViT-H-14"), "ViT-H-14", {}, "random", device, "letterbox"
        )
        out["hpsv2"] = HPSv2(ctx, clip=h14)
    if "imagereward" in real:
        net = ImageRewardNet(VisionConfig(), TextConfig()).eval().requires_grad_(False).to(device)
        tokenizer = blip_tokenizer(rf.tiny_bert_vocab(work / "bert"))
        parts = ImageRewardParts(net, tokenizer, "random")
        out["imagereward"] = ImageReward(ctx, parts=parts)
    if "sciscore" in real:
        sci = pickscore_parts(device, work)  # SciScore is a CLIP-H of PickScore's shape
        if "pickscore" in real:  # the same processor: each image is preprocessed once for both
            sci.image_processor = out["pickscore"].parts.image_processor
        out["sciscore"] = SciScore(ctx, parts=sci)
    if "vqascore" in real:
        reward = VQAScore(ctx, parts=vqascore_parts(vqa, work))
        reward.parts.net.to(device=device, dtype=reward.dtype)
        out["vqascore"] = reward
    return {name: out[name] for name in names}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forget_features(rewards: dict[str, TorchReward]) -> None:
    """Empty every cache that lets one reward reuse another's work (image features, pixels)."""
    for reward in rewards.values():
        if hasattr(reward, "clip"):
            reward.clip.features = FeatureCache()
        if hasattr(reward, "shared_pixels"):
            reward.shared_pixels._items.clear()


def clock(device: torch.device) -> float:
    """Wall seconds on a GPU; on a CPU this process's CPU seconds, which other processes on a
    shared machine move far less than the wall clock (run with OMP_NUM_THREADS=1 there: idle
    OpenMP threads spin and count)."""
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def timed(device: torch.device, fn, *args) -> float:
    """Seconds taken by fn(*args), the GPU included."""
    sync(device)
    start = clock(device)
    fn(*args)
    sync(device)
    return clock(device) - start


def measure(rewards, images, captions, batch, device) -> dict[str, dict[str, float]]:
    """Seconds → images/s. The measurements are interleaved batch by batch, so that all of them
    see the same machine load; the first batch only warms up. `together`: every reward in one
    pass as annotate calls them (sharing what they share); `e2e`: each reward alone."""
    chunks = [
        (images[i : i + batch], captions[i : i + batch]) for i in range(0, len(images), batch)
    ]
    zero = dict.fromkeys(rewards, 0.0)
    model, together, alone, prep = dict(zero), dict(zero), dict(zero), dict(zero)
    for k, (ims, caps) in enumerate(chunks):
        warm = k > 0
        for name, reward in rewards.items():  # the model alone, on inputs prepared beforehand
            forget_features(rewards)
            with torch.inference_mode(), reward.autocast():
                start = clock(device)
                inputs = reward.prepare(ims, caps)
                sync(device)
                prep[name] += warm * (clock(device) - start)
                model[name] += warm * timed(device, reward.forward, inputs)
        forget_features(rewards)
        for name, reward in rewards.items():  # one pass, as `miro data annotate` calls them
            together[name] += warm * timed(device, reward.score, ims, caps)
        for name, reward in rewards.items():  # each alone: nothing to reuse
            forget_features(rewards)
            alone[name] += warm * timed(device, reward.score, ims, caps)
        print(f"  batch {k + 1}/{len(chunks)}{'' if warm else ' (warm-up)'} done", flush=True)
    n = len(images) - len(chunks[0][0])
    rows = {
        name: {
            "params": sum(p.numel() for p in _params(reward)) / 1e6,
            "model": n / model[name],
            "prep_ms": 1000 * prep[name] / n,
            "e2e": n / alone[name],
            "together": n / together[name],
        }
        for name, reward in rewards.items()
    }
    rows[f"all {len(rewards)}"] = {
        "together": n / sum(together.values()),
        "e2e": n / sum(alone.values()),
        "ratio": sum(together.values()) / sum(alone.values()),
    }
    return rows


def _params(reward: TorchReward) -> list[torch.nn.Parameter]:
    modules = [getattr(reward, "mlp", None)]  # vqascore's net is parts.net
    for part in (getattr(reward, "clip", None), getattr(reward, "parts", None)):
        modules += [getattr(part, "model", None), getattr(part, "net", None)]
    return [p for m in modules if isinstance(m, torch.nn.Module) for p in m.parameters()]


def machine(device: torch.device) -> str:
    cpu = platform.processor() or "cpu"
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
    text = f"{cpu} ({len(names)} cores), {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=6, help="images timed (one more batch warms up)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rewards", default=",".join(ALL), help=f"subset of {','.join(ALL)}")
    parser.add_argument("--vqa-model", default="clip-flant5-xxl", choices=sorted(FLAN_T5))
    parser.add_argument("--tiny", default="", help="rewards built from the tiny test checkpoints")
    args = parser.parse_args()
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    tiny = [n.strip() for n in args.tiny.split(",") if n.strip()]
    if not names or set(names) - set(ALL) or set(tiny) - set(names):
        parser.error(f"--rewards: choose from {', '.join(ALL)}; --tiny: some of --rewards")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)  # fmt: skip
    ctx = RewardContext(device=str(device), precision=args.precision)
    rng = np.random.default_rng(0)
    total = args.n + args.batch  # the first batch warms up
    images = [
        rng.integers(0, 256, SIZES[i % len(SIZES)] + (3,), dtype=np.uint8) for i in range(total)
    ]
    captions = [f"{CAPTION} #{i}" for i in range(total)]
    what = "wall seconds" if device.type == "cuda" else "this process's CPU seconds"
    print(
        f"machine: {machine(device)}; device {device}, precision {args.precision}; timed in {what}"
    )
    print(
        f"{args.n} images of assorted sizes ({', '.join(f'{w}x{h}' for h, w in SIZES)}), batch {args.batch}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rewards = build(ctx, Path(tmp), names, args.vqa_model, tiny)
        print(
            f"built {len(rewards)} models at random init in {time.perf_counter() - start:.0f} s "
            f"({', '.join(rewards)}; tiny: {', '.join(tiny) or 'none'}, the others real size)"
        )
        rows = measure(rewards, images, captions, args.batch, device)
    print(
        "\n| reward | parameters | preprocessing ms/img | model-only img/s | end-to-end img/s "
        "| in the one-pass loop img/s |\n|---|---|---|---|---|---|"
    )
    for name, row in rows.items():
        params = f"{row['params']:.0f} M" if "params" in row else ""
        prep = f"{row['prep_ms']:.0f}" if "prep_ms" in row else ""
        model = f"{row['model']:.3f}" if "model" in row else ""
        note = " (reuses `clip`'s image encoding)" if name == "aesthetic" and "clip" in rows else ""
        note += " (tiny)" if name in tiny else ""
        print(
            f"| {name} | {params} | {prep} | {model} | {row['e2e']:.3f} | {row['together']:.3f}{note} |"
        )
    ratio = rows[f"all {len(rewards)}"]["ratio"]
    print(
        f"one pass with all {len(rewards)} / sum of the {len(rewards)} single-reward passes "
        f"(seconds, same images): {ratio:.3f}"
    )
    print(
        f"load average after the run: {os.getloadavg()[0]:.1f} (other processes share these cores)"
    )
    print(
        f"goal: one pass <= the sum of the single-reward passes: {'met' if ratio <= 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
