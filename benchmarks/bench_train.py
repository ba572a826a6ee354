"""Trainer and sampler benchmarks, measured side by side in one run.

1. Training step of `miro_train.train.train` (data pipeline, EMA, logging) vs a bare
   forward + backward + optimizer step of the same model on in-memory tensors (goal ≤ 1.10).
2. One guided sampling step (both CFG branches in one batched forward) vs two unguided
   steps (goal ≤ 1.0).
3. Parameters and FLOPs per image of `miro-360m`, against the paper's 4.16 TFLOPs per
   50-step image.
4. With --throughput: images/s of unet-tiny's bare step at batch 16 and 64, and at 64 under
   bf16 CPU autocast and torch.compile (what a CPU training minute holds; the demo's budget).

    .venv/bin/python benchmarks/bench_train.py [--steps 40] [--batch 64] [--skip-train] [--throughput]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from miro_data.rewards import build_reward
from miro_data.synth import SynthConfig, generate_sample
from miro_data.trainshards import HookModels, Manifest, ManifestSource, SampleMeta, TrainSample
from miro_data.trainshards_write import ShardWriter
from miro_train.checkpoint import find_checkpoint, read_spec
from miro_train.conditioning import ConditioningInput
from miro_train.flow import guided_velocity
from miro_train.models import build_model, count_parameters, model_config
from miro_train.optim import make_optimizer
from miro_train.spec import ModelSpec
from miro_train.train import TrainConfig, train, train_step

REWARDS = ("noise", "contrast")


def write_shards(folder: Path, n: int) -> Path:
    """Shapes World samples in the training-shard format, 8 quantile bins per reward."""
    cfg = SynthConfig(out=folder, n=n)
    samples = [generate_sample(i, cfg) for i in range(n)]
    images, caps = [s[0] for s in samples], [s[1]["caption"] for s in samples]
    bins, edges = {}, {}
    for r in REWARDS:
        scores = build_reward(r).score(images, caps)
        edges[r] = np.quantile(scores, np.linspace(0, 1, 9))
        bins[r] = np.clip(np.searchsorted(edges[r], scores, side="right") - 1, 0, 7)
    with ShardWriter(folder, n) as sink:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            meta = SampleMeta(
                key=f"{i:07d}", caption=caps[i], url=None, source_shard="synth", edges_version=1,
                scores={}, bins={r: int(bins[r][i]) for r in REWARDS},
                bin_values={r: int(bins[r][i]) / 7 for r in REWARDS}, source={},
            )  # fmt: skip
            sink.write(TrainSample(meta, caps[i], buf.getvalue(), "png"))
        manifest = Manifest(
            rewards=REWARDS, reward_versions=dict.fromkeys(REWARDS, "1"), edges_version=1,
            n_levels=dict.fromkeys(REWARDS, 8), edges=edges, shards=sink.shards, where=None,
            shuffle_seed=0, hooks=HookModels(), source=ManifestSource("synth", ""),
            created="2026-01-01T00:00:00+00:00",
        )  # fmt: skip
        sink.finish(manifest)
    return folder


# ----------------------------------------------------------------------------
# 1. Training step vs bare step
# ----------------------------------------------------------------------------


def cpu_pressure() -> str:
    """The kernel's CPU pressure (share of time some task waited for a CPU), if it tells."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"
    return line.split()[1].replace("avg10=", "") + " %"


def time_train(shards: Path, out: Path, steps: int, batch: int, warmup: int) -> float:
    """Median time between step ends of `train` (data pipeline, EMA, logging included)."""
    stamps: list[float] = []
    cfg = TrainConfig(
        shards=shards,
        out=out,
        steps=warmup + steps + 1,
        batch_size=batch,
        log_every=10_000,
        ckpt_every=10_000,
    )
    train(cfg, lambda info: stamps.append(time.perf_counter()))
    # Intervals after warmup and before the last step (which writes a checkpoint).
    intervals = [b - a for a, b in zip(stamps[warmup - 1 : -2], stamps[warmup:-1], strict=True)]
    return statistics.median(intervals)


def time_bare(spec: ModelSpec, steps: int, batch: int, warmup: int, mode: str = "fp32") -> float:
    """Median time of forward + backward + optimizer step of the same model on fixed tensors
    (mode: fp32; bf16, under CPU autocast; compile, the model through torch.compile)."""
    torch.manual_seed(0)
    model = build_model(spec)
    net = torch.compile(model) if mode == "compile" else model
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else None
    optimizer = make_optimizer("adamw", model, 1e-3, 0.01, (0.9, 0.99))
    x = torch.randn(batch, 3, 32, 32)
    ids = torch.randint(2, len(spec.text.vocab), (batch, spec.text.max_len))
    cond = ConditioningInput(torch.rand(batch, len(REWARDS)), ids)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        train_step(net, model, optimizer, x, cond, amp=amp)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_loading(shards: Path, spec: ModelSpec, batches: int, batch: int) -> float:
    """Median time to read, decode and collate one batch in this process (no overlap)."""
    from miro_train.data import BatchSpec, make_loader, open_shards
    from miro_train.text import WordVocab

    bspec = BatchSpec(
        rewards=REWARDS,
        batch_size=batch,
        vocab=WordVocab(spec.text.vocab, spec.text.max_len),
    )
    it = iter(make_loader(open_shards(shards), bspec, workers=0))
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


# ----------------------------------------------------------------------------
# 2. Guided step vs two unguided steps
# ----------------------------------------------------------------------------


@torch.no_grad()
def time_guidance(spec: ModelSpec, batch: int, repeats: int) -> tuple[float, float]:
    model = build_model(spec).eval()
    ids = torch.randint(2, len(spec.text.vocab), (batch, 12))
    pos = model.condition(ConditioningInput(torch.ones(batch, len(REWARDS)), ids))
    neg = model.condition(ConditioningInput(torch.zeros(batch, len(REWARDS)), ids))
    guided = guided_velocity(model, pos, neg, 7.0)
    x, t = torch.randn(batch, 3, 32, 32), torch.full((batch,), 0.5)
    g_times, u_times = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        t0 = time.perf_counter()
        guided(x, t, None)
        t1 = time.perf_counter()
        model.velocity(x, t, pos)
        model.velocity(x, t, neg)
        t2 = time.perf_counter()
        g_times.append(t1 - t0)
        u_times.append(t2 - t1)
    return statistics.median(g_times), statistics.median(u_times)


# ----------------------------------------------------------------------------
# 3. miro-360m size and FLOPs
# ----------------------------------------------------------------------------


def miro_360m_flops() -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    config = model_config("miro-360m")
    spec = ModelSpec.from_json(
        config
        | {
            "rewards": [
                "aesthetic",
                "clip",
                "pickscore",
                "hpsv2",
                "imagereward",
                "vqa",
                "sciscore",
            ],
            "image": config["image"] | {"channels": 4, "size": 32},
        }
    )
    with torch.device("meta"):
        model = build_model(spec)
        text, mask = torch.randn(1, 128, 2048), torch.ones(1, 128, dtype=torch.bool)
        x, t = torch.randn(1, 4, 32, 32), torch.rand(1)
        with FlopCounterMode(display=False) as cond_count:
            cond = model.condition(ConditioningInput(torch.rand(1, 7), text, mask))
        with FlopCounterMode(display=False) as step_count:
            model.velocity(x, t, cond, torch.randn(1, 256, 1024))
    return {
        "params": count_parameters(model),
        "params_backbone": count_parameters(model.backbone),
        "params_conditioner": count_parameters(model.conditioner),
        "cond_flops": cond_count.get_total_flops(),
        "step_flops": step_count.get_total_flops(),
    }


def print_throughput(spec: ModelSpec, steps: int) -> None:
    """Images a second of unet-tiny's bare step by batch size and mode, side by side twice."""
    cases = [(16, "fp32"), (64, "fp32"), (64, "bf16"), (64, "compile")]
    rounds = [[b / time_bare(spec, steps, b, warmup=8, mode=m) for b, m in cases] for _ in "12"]
    print(f"\n4. bare training step, unet-tiny, images/s (median of {steps} steps; 2 rounds)")
    for i, (b, m) in enumerate(cases):  # each round's rate against its own batch-64 fp32
        ratio = statistics.mean(r[i] / r[1] for r in rounds)
        print(f"   batch {b:2d} {m:7s} " + " | ".join(f"{r[i]:6.1f}" for r in rounds)
              + f" | vs batch 64 fp32 {ratio:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--throughput", action="store_true", help="also section 4 (minutes)")
    args = parser.parse_args()
    os.environ.setdefault("MIRO_NO_PROGRESS", "1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    if not args.skip_train:
        with tempfile.TemporaryDirectory() as tmp:
            shards = write_shards(Path(tmp) / "shards", 1024)
            runs = []
            for i in range(2):  # train, bare, train, bare: side by side against drifting load
                psi = cpu_pressure()
                train_s = time_train(
                    shards, Path(tmp) / f"run{i}", args.steps, args.batch, warmup=5
                )
                spec = read_spec(find_checkpoint(Path(tmp) / f"run{i}"))
                bare_s = time_bare(spec, args.steps, args.batch, warmup=5)
                runs.append((train_s, bare_s, psi, cpu_pressure()))
            load_s = time_loading(shards, spec, 20, args.batch)
            print(
                f"\n1. training step, {spec.name}, batch {args.batch}, 32 px, median of "
                f"{args.steps} steps, 2 rounds (CPU pressure = time some task waited for a core)"
            )
            for i, (tr, ba, p0, p1) in enumerate(runs):
                print(
                    f"   round {i + 1}: miro train {tr:.3f} s/step | bare fwd+bwd+opt {ba:.3f} s/step | "
                    f"ratio {tr / ba:.3f} | CPU pressure {p0} -> {p1}"
                )
            ratio = statistics.mean(tr / ba for tr, ba, *_ in runs)
            print(
                f"   mean ratio {ratio:.3f} (goal <= 1.10); reading + decoding one batch alone: "
                f"{load_s * 1e3:.1f} ms ({load_s / statistics.mean(r[1] for r in runs):.1%} of a bare step)"
            )

    spec = ModelSpec.from_json(
        model_config("unet-tiny")
        | {
            "rewards": list(REWARDS),
            "text": {
                "kind": "word",
                "dim": 128,
                "max_len": 16,
                "vocab": ["<pad>", "<unk>", *"abcdefghij"],
            },
            "image": {"space": "pixel", "resolution": 32, "channels": 3, "size": 32},
        }
    )
    guided, unguided = time_guidance(spec, batch=32, repeats=15)
    print(
        f"\n2. sampling step, unet-tiny, batch 32: guided (one batched forward of 64) {guided * 1e3:.1f} ms"
        f" | two unguided forwards of 32 {unguided * 1e3:.1f} ms | ratio {guided / unguided:.3f} (goal <= 1.0)"
    )

    if args.throughput:
        print_throughput(spec, args.steps)

    f = miro_360m_flops()
    per_image_guided = 2 * 50 * f["step_flops"] + 2 * f["cond_flops"]
    per_image_plain = 50 * f["step_flops"] + f["cond_flops"]
    print(
        f"\n3. miro-360m: {f['params'] / 1e6:.1f} M parameters (backbone {f['params_backbone'] / 1e6:.1f} M, "
        f"conditioner + text projection {f['params_conditioner'] / 1e6:.1f} M; paper: 360 M)"
    )
    print(
        f"   FLOPs (2 per multiply-add): one backbone forward {f['step_flops'] / 1e9:.1f} G, "
        f"conditioning sequence {f['cond_flops'] / 1e9:.2f} G (once per image and branch)"
    )
    print(
        f"   per 50-step image: {per_image_plain / 1e12:.2f} TFLOPs unguided, "
        f"{per_image_guided / 1e12:.2f} TFLOPs with CFG (two branches)"
    )
    # The paper's 4.16 T matches one unguided 50-step image counted in multiply-adds
    # (fvcore's convention, one "flop" per MAC): FLOPs / 2.
    print(
        f"   in multiply-adds: {per_image_plain / 2e12:.2f} T unguided, {per_image_guided / 2e12:.2f} T "
        f"with CFG; paper: 4.16 T per 50-step image -> ratio {per_image_plain / 2 / 4.16e12:.3f} (unguided MACs)"
    )


if __name__ == "__main__":
    main()
