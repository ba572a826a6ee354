"""What `keep_freed_memory` buys: the same work under glibc's default allocator, then kept.

glibc hands every freed block above its mmap threshold back to the OS, so image-sized numpy
temporaries and CPU activations page-fault afresh each time. Both measurements run in one
process, default first (the setting cannot be undone), on fresh arrays each round.

    python benchmarks/bench_malloc.py [--images 500] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from bench_data import REWARDS as SCORING  # the weight-free rewards annotate is timed with
from bench_train import REWARDS as TRAIN_REWARDS
from bench_train import time_bare

from miro_data.common import keep_freed_memory
from miro_data.rewards import build_reward
from miro_data.synth import SynthConfig, generate_sample
from miro_train.models import model_config
from miro_train.spec import ModelSpec


def time_scoring(images: list[np.ndarray], captions: list[str], rounds: int = 3) -> float:
    """Best seconds to score fresh copies of the images with the weight-free rewards."""
    rewards = [build_reward(name) for name in SCORING]
    best = float("inf")
    for _ in range(rounds):
        fresh = [im.copy() for im in images]  # new memory, as decoding gives each time
        t0 = time.perf_counter()
        for reward in rewards:
            reward.score(fresh, captions)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    cfg = SynthConfig(out=Path("unused"), n=args.images, size=256, seed=0)
    samples = [generate_sample(i, cfg) for i in range(args.images)]
    images, captions = [img for img, _ in samples], [rec["caption"] for _, rec in samples]
    spec = ModelSpec.from_json(
        model_config("unet-tiny")
        | {
            "rewards": list(TRAIN_REWARDS),
            "text": {"kind": "word", "dim": 128, "max_len": 16, "vocab": ["<pad>", "<unk>", *"ab"]},
            "image": {"space": "pixel", "resolution": 32, "channels": 3, "size": 32},
        }
    )
    results = {}
    for setting in ("default", "kept"):
        if setting == "kept":
            keep_freed_memory()
        score_s = time_scoring(images, captions)
        step_s = time_bare(spec, args.steps, 64, warmup=5)
        results[setting] = (score_s, step_s)
        print(
            f"{setting:8s} scoring {len(images)} images at 256 px: {score_s:6.2f} s | "
            f"unet-tiny train step, batch 64: {step_s:.3f} s",
            flush=True,
        )
    (s0, t0), (s1, t1) = results["default"], results["kept"]
    print(f"speed-up: scoring {s0 / s1:.2f}x, train step {t0 / t1:.2f}x ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
