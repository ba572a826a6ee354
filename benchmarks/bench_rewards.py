"""Throughput of the learned rewards: images/s per reward and for all five, model vs end to end.

Real-size architectures at random initialisation — CLIP ViT-L/14 (shared by `clip` and
`aesthetic`, plus the aesthetic MLP), HPSv2's ViT-H/14, PickScore's CLIP-H (transformers),
ImageReward's BLIP ViT-L/16 + BERT-base — since no weights can be downloaded here; speed does
not depend on the weights' values. The PickScore tokenizer is the real CLIP BPE; ImageReward's
BERT tokenizer is the tests' small WordPiece vocabulary (tokenising is not what costs).

- model-only: `forward()` on inputs prepared before the clock starts;
- end-to-end: `score()` from uint8 arrays of assorted sizes (preprocessing, tokenising, model);
- all five: every reward's `score()` on each batch, as `miro data annotate` calls them, with
  `clip` and `aesthetic` sharing one image encoding; beside it, the end-to-end rate of the
  five run one after another without sharing.
All three are timed batch by batch in turn, so that they see the same machine load (other
processes on a shared machine move every figure); the first batch only warms up.

    python benchmarks/bench_rewards.py [--n 6] [--batch 2] [--device auto] [--precision auto]
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
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tokenizer helpers

import rewards_fixtures as rf

from miro_data.rewards import RewardContext
from miro_data.rewards.blip import ImageRewardNet, TextConfig, VisionConfig
from miro_data.rewards.imagereward import ImageReward, ImageRewardParts, blip_tokenizer
from miro_data.rewards.openclip_rewards import (
    Aesthetic,
    ClipScore,
    HPSv2,
    OpenClip,
    build_open_clip,
)
from miro_data.rewards.pickscore import PickScore, PickScoreParts
from miro_data.rewards.torch_reward import FeatureCache, ScoreHead, TorchReward

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


def build(ctx: RewardContext, work: Path) -> dict[str, TorchReward]:
    device = torch.device(ctx.device)
    l14 = OpenClip.from_model(
        build_open_clip("ViT-L-14", quick_gelu=True), "ViT-L-14",
        open_clip.get_pretrained_cfg("ViT-L-14", "openai"), "random", device,
    )  # fmt: skip
    h14 = OpenClip.from_model(
        build_open_clip("ViT-H-14"), "ViT-H-14", {}, "random", device, "letterbox"
    )
    net = ImageRewardNet(VisionConfig(), TextConfig()).eval().requires_grad_(False).to(device)
    tokenizer = blip_tokenizer(rf.tiny_bert_vocab(work / "bert"))
    return {
        "clip": ClipScore(ctx, clip=l14),
        "aesthetic": Aesthetic(ctx, clip=l14, mlp=ScoreHead(768)),
        "pickscore": PickScore(ctx, parts=pickscore_parts(device, work)),
        "hpsv2": HPSv2(ctx, clip=h14),
        "imagereward": ImageReward(ctx, parts=ImageRewardParts(net, tokenizer, "random")),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forget_features(rewards: dict[str, TorchReward]) -> None:
    for reward in rewards.values():
        if hasattr(reward, "clip"):
            reward.clip.features = FeatureCache()


def timed(device: torch.device, fn, *args) -> float:
    """Seconds taken by fn(*args), the GPU included."""
    sync(device)
    start = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - start


def measure(rewards, images, captions, batch, device) -> dict[str, dict[str, float]]:
    """Seconds → images/s. The measurements are interleaved batch by batch, so that all of them
    see the same machine load; the first batch only warms up."""
    chunks = [
        (images[i : i + batch], captions[i : i + batch]) for i in range(0, len(images), batch)
    ]
    model, together = dict.fromkeys(rewards, 0.0), dict.fromkeys(rewards, 0.0)
    prep = dict.fromkeys(rewards, 0.0)
    aesthetic_alone = 0.0
    for k, (ims, caps) in enumerate(chunks):
        warm = k > 0
        for name, reward in rewards.items():  # the model alone, on inputs prepared beforehand
            with torch.inference_mode(), reward.autocast():
                start = time.perf_counter()
                inputs = reward.prepare(ims, caps)
                sync(device)
                prep[name] += warm * (time.perf_counter() - start)
                model[name] += warm * timed(device, reward.forward, inputs)
        forget_features(rewards)
        for name, reward in rewards.items():  # end to end, as `miro data annotate` calls them
            together[name] += warm * timed(device, reward.score, ims, caps)
        forget_features(rewards)  # `aesthetic` alone, without `clip`'s encodings to reuse
        aesthetic_alone += warm * timed(device, rewards["aesthetic"].score, ims, caps)
        print(f"  batch {k + 1}/{len(chunks)}{'' if warm else ' (warm-up)'} done", flush=True)
    n = len(images) - len(chunks[0][0])
    rows = {
        name: {
            "params": sum(p.numel() for p in _params(reward)) / 1e6,
            "model": n / model[name],
            "prep_ms": 1000 * prep[name] / n,
            "e2e": n / (aesthetic_alone if name == "aesthetic" else together[name]),
            "together": n / together[name],
        }
        for name, reward in rewards.items()
    }
    rows["all five"] = {"together": n / sum(together.values())}
    rows["all five"]["e2e"] = 1 / sum(1 / r["e2e"] for r in rows.values() if "params" in r)
    return rows


def _params(reward: TorchReward) -> list[torch.nn.Parameter]:
    modules = [getattr(reward, "mlp", None)]
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
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)  # fmt: skip
    ctx = RewardContext(device=str(device), precision=args.precision)
    rng = np.random.default_rng(0)
    total = args.n + args.batch  # the first batch warms up
    images = [
        rng.integers(0, 256, SIZES[i % len(SIZES)] + (3,), dtype=np.uint8) for i in range(total)
    ]
    captions = [f"{CAPTION} #{i}" for i in range(total)]
    print(f"machine: {machine(device)}; device {device}, precision {args.precision}")
    print(
        f"{args.n} images of assorted sizes ({', '.join(f'{w}x{h}' for h, w in SIZES)}), batch {args.batch}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rewards = build(ctx, Path(tmp))
        print(f"built five real-size models at random init in {time.perf_counter() - start:.0f} s")
        rows = measure(rewards, images, captions, args.batch, device)
    print(
        "\n| reward | parameters | preprocessing ms/img | model-only img/s | end-to-end img/s "
        "| in the all-five loop img/s |\n|---|---|---|---|---|---|"
    )
    for name, row in rows.items():
        params = f"{row['params']:.0f} M" if "params" in row else ""
        prep = f"{row['prep_ms']:.0f}" if "prep_ms" in row else ""
        model = f"{row['model']:.3f}" if "model" in row else ""
        note = " (reuses `clip`'s image encoding)" if name == "aesthetic" else ""
        print(
            f"| {name} | {params} | {prep} | {model} | {row['e2e']:.3f} | {row['together']:.3f}{note} |"
        )
    print(
        f"load average after the run: {os.getloadavg()[0]:.1f} (other processes share these cores)"
    )


if __name__ == "__main__":
    main()
