"""GPU check: the seven learned rewards and `miro train --model miro-360m`, at real size.

    scripts/gpu-check.sh [--out DIR] [--dry-run] [--n 1024] [--vqa-model clip-flant5-xl]
        [--rewards aesthetic,clip,…] [--train-batch 256] [--train-steps 20] [--skip-train]

1. Rewards — each published checkpoint's files at its real configuration, random weights,
   written to a temporary Hugging Face cache under the real repo ids (`gpu_weights.py`), so
   the project's loaders read them as users' real files. A WebDataset shard of 256 px JPEGs
   (--n images; a warm-up shard of --n-warmup is scored first) goes through `miro data annotate`
   (`annotate()`, what the CLI calls) with all chosen rewards in one pass; each reward's
   end-to-end images/s is the timed shard's images over its ledger seconds (decoded uint8
   image → score: preprocessing, tokenising, transfer, model). Then each reward alone, loaded
   the same way: model-only images/s (`forward()` on inputs prepared off the clock), at its
   default CUDA batch size, with its peak GPU memory and the batch an 80 GB GPU would hold
   (weights + per-image peak, linear in the batch). Goal: end to end / model-only ≥ 0.9.
2. Training — `miro train --model miro-360m` (`train()`) on shards of precomputed 4×32×32
   latents and FLAN-T5-XL-width caption embeddings (a real-size SDXL-VAE config at random
   init gives the latent space's factor), bf16: steps/s (median step after a warm-up) and
   model FLOPs utilisation = analytic FLOPs per step (`FlopCounterMode` on the meta device:
   3 × (conditioning + backbone) for forward and backward, + one forward-only backbone pass
   for RIN's self-conditioning) × steps/s / the GPU's dense bf16 peak (H200/H100/A100 known;
   another GPU is flagged and gets no MFU). Goal ≥ 40 %.

--dry-run: the tests' tiny checkpoints, a tiny latent RIN, a few images, on the CPU — the
same code paths, in well under a minute. Offline (HF_HUB_OFFLINE=1); writes only under
--out (default: a new temporary folder), and removes its work folder at the end: only
gpu_check.json stays.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REWARDS = ("aesthetic", "clip", "pickscore", "hpsv2", "imagereward", "sciscore", "vqascore")
GOAL_RATIO, GOAL_MFU = 0.9, 0.4
# Dense bf16 tensor-core peaks (NVIDIA datasheets, without sparsity), by device-name marker.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)
GIB = 2**30
WARMUP, TIMED = "0-warmup", "1-timed"  # shard names


def offline_env(work: Path) -> None:
    """No network, and every cache this run could write under `work`."""
    for var, sub in (("HF_HOME", "hf"), ("MPLCONFIGDIR", "mpl"), ("XDG_CACHE_HOME", "cache")):
        os.environ[var] = str(work / sub)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MIRO_NO_PROGRESS="1")


def peak_flops(device_name: str) -> float | None:
    upper = device_name.upper()
    return next((peak for marker, peak in PEAK_BF16 if marker in upper), None)


# ----------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------


def jpeg_shard(path: Path, n: int, side: int, seed: int) -> None:
    """A WebDataset tar of n side×side JPEGs (gradients + noise) with captions."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            base = np.stack([xx + i, yy * 2, xx + yy], axis=-1) % 256
            image = np.clip(base + rng.integers(-24, 24, base.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=90)
            caption = f"a photo of a red circle next to a blue square, number {i}"
            meta = json.dumps({"url": f"synthetic/{i}.jpg", "caption": caption})
            for ext, data in (("jpg", buf.getvalue()), ("txt", caption.encode()),
                              ("json", meta.encode())):  # fmt: skip
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def read_shard(path: Path) -> tuple[list, list[str]]:
    """Decoded images and captions of a shard, by the decoder annotate uses."""
    from miro_data.decode import decode_image

    members: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for info in tar:
            key, ext = info.name.split(".", 1)
            members.setdefault(key, {})[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]
    samples = [members[k] for k in sorted(members)]
    return [decode_image(s["jpg"]) for s in samples], [s["txt"].decode() for s in samples]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> int:
    """Bytes allocated now; the peak counter starts again from here."""
    import torch

    if not device.startswith("cuda"):
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_bytes(device: str) -> int | None:
    import torch

    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def release(device: str) -> None:
    """Give back the GPU memory of models no longer referenced."""
    import gc

    import torch

    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()


def annotate_pass(shards: Path, db: Path, names: list[str], options: dict, device: str) -> dict:
    """`miro data annotate` with every reward in one pass; per-reward seconds of the timed shard."""
    import duckdb

    from miro_data.annotate import AnnotateConfig, annotate

    reset_peak(device)
    cfg = AnnotateConfig(str(shards), db, tuple(names), device=device, reward_options=options,
                         decode_workers=0 if device == "cpu" else 4)  # fmt: skip
    start = time.perf_counter()
    annotate(cfg)
    wall = time.perf_counter() - start
    peak = peak_bytes(device)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT reward, n_scored, seconds FROM ledger WHERE shard = ?", [TIMED]
        ).fetchall()
    seconds = {reward: (n, s) for reward, n, s in rows}
    missing = set(names) - set(seconds)
    if missing or any(n == 0 for n, _ in seconds.values()):
        raise SystemExit(f"annotate scored nothing for {sorted(missing) or seconds}")
    return {"wall_s": wall, "peak": peak, "seconds": seconds}


def forward_seconds(reward, b: int, warm: tuple, timed: tuple, device: str) -> float:
    """Seconds of forward() alone over the timed images in batches of b, after a warm-up."""
    import torch

    images, captions = timed
    seconds = 0.0
    with torch.inference_mode(), reward.autocast():
        reward.forward(reward.prepare(warm[0][:b], warm[1][:b]))  # kernels chosen, caches warm
        for i in range(0, len(images), b):
            inputs = reward.prepare(images[i : i + b], captions[i : i + b])
            sync(device)
            start = time.perf_counter()
            reward.forward(inputs)
            sync(device)
            seconds += time.perf_counter() - start
    return seconds


def model_only(name: str, options: dict, device: str, warm: tuple, timed: tuple) -> dict:
    """One reward alone, loaded as annotate loads it: forward() images/s at its default batch
    size (halved on out-of-memory, as annotate does), weights and peak memory."""
    import torch

    from miro_data.rewards import RewardContext, build_reward

    base = reset_peak(device)
    reward = build_reward(name, RewardContext(device=device, options={name: options}))
    weights = (torch.cuda.memory_allocated() - base) if device.startswith("cuda") else None
    b, halved = reward.batch_size, 0
    while True:
        reset_peak(device)
        try:
            seconds = forward_seconds(reward, b, warm, timed, device)
            break
        except torch.cuda.OutOfMemoryError:
            if b == 1:
                raise
            b, halved = b // 2, halved + 1
            torch.cuda.empty_cache()
    peak = peak_bytes(device)
    reward.close()
    row: dict = {"batch_size": b, "default_batch": reward.batch_size, "halved": halved,
                 "model_img_s": len(timed[0]) / seconds, "weights_gib": None, "peak_gib": None,
                 "per_image_mib": None, "batch_80gb": None}  # fmt: skip
    if peak is not None and weights is not None:
        per_image = max(peak - base - weights, 1) / min(b, len(timed[0]))
        row.update(weights_gib=weights / GIB, peak_gib=(peak - base) / GIB,
                   per_image_mib=per_image / 2**20,
                   batch_80gb=int((0.95 * 80e9 - weights) // per_image))  # fmt: skip
    return row


def reward_check(work: Path, args: argparse.Namespace, names: list[str], device: str) -> dict:
    """Weights, shards, the one annotate pass, then each reward alone."""
    import gpu_weights
    import torch

    start = time.perf_counter()
    if args.dry_run:
        _, options = gpu_weights.write_tiny_rewards(work / "weights", names)
    else:
        build = torch.device("cuda" if device.startswith("cuda") else "cpu")
        _, options = gpu_weights.write_real_rewards(work / "weights", names, args.vqa_model, build)
    written = time.perf_counter() - start
    print(f"  reward checkpoints written in {written:.0f} s", flush=True)
    # annotate reads shards in name order: the warm-up one first
    jpeg_shard(work / "shards" / f"{WARMUP}.tar", args.n_warmup, args.side, seed=1)
    jpeg_shard(work / "shards" / f"{TIMED}.tar", args.n, args.side, seed=2)
    one = annotate_pass(work / "shards", work / "scores.duckdb", names, options, device)
    print(f"  annotate, {len(names)} rewards in one pass: {one['wall_s']:.0f} s", flush=True)
    release(device)
    warm, timed = (
        read_shard(work / "shards" / f"{WARMUP}.tar"),
        read_shard(work / "shards" / f"{TIMED}.tar"),
    )
    rows = {}
    for name in names:
        row = model_only(name, options[name], device, warm, timed)
        n, seconds = one["seconds"][name]
        row["e2e_img_s"] = n / seconds
        row["ratio"] = row["e2e_img_s"] / row["model_img_s"]
        rows[name] = row
        print(f"  {name}: {rate(row['model_img_s'])} img/s model-only", flush=True)
        release(device)  # the next reward's figures without this one's weights
    total = sum(s for _, s in one["seconds"].values())
    summary = {"img_s": args.n / total, "annotate_wall_s": one["wall_s"],
               "peak_gib": None if one["peak"] is None else one["peak"] / GIB,
               "weights_written_s": written}  # fmt: skip
    return {"rewards": rows, "one_pass": summary}


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def rate(value: float) -> str:
    """Images/s to read: one decimal from 10 up, three significant digits below (CPU runs)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def print_report(result: dict) -> None:
    print(f"\nmachine: {result['device_name']}, torch {result['torch']}; "
          f"{result['images']} JPEGs of {result['image_side']} px; vqascore = {result['vqa_model']}")  # fmt: skip
    print("\n| reward | batch | model-only img/s | end-to-end img/s | e2e / model | "
          f"weights GiB | peak GiB | MiB / image | batch in 80 GB |\n|{'---|' * 9}")  # fmt: skip
    for name, r in result.get("rewards", {}).items():
        flag = "" if r["ratio"] >= GOAL_RATIO else " (below 0.9)"
        halved = f" (halved {r['halved']}× from {r['default_batch']})" if r["halved"] else ""
        print(f"| {name} | {r['batch_size']}{halved} | {rate(r['model_img_s'])} | {rate(r['e2e_img_s'])} | "
              f"{r['ratio']:.2f}{flag} | {fmt(r['weights_gib'])} | {fmt(r['peak_gib'])} | "
              f"{fmt(r['per_image_mib'], '.0f')} | {fmt(r['batch_80gb'], 'd')} |")  # fmt: skip
    if {"clip", "aesthetic"} <= set(result.get("rewards", {})):
        print("(clip and aesthetic share one CLIP encoding in the pass: whichever runs second "
              "reuses it, so read their ratios together)")  # fmt: skip
    one = result.get("one_pass")
    if one:
        print(f"\nall {len(result['rewards'])} in one annotate pass: {rate(one['img_s'])} img/s "
              f"(scoring time), peak {fmt(one['peak_gib'])} GiB, annotate wall "
              f"{one['annotate_wall_s']:.0f} s with loading")  # fmt: skip
    t = result.get("train")
    if t:
        mfu = ("n/a (unknown GPU peak: add it to PEAK_BF16)" if t["mfu"] is None and
               result["device"] != "cpu" else fmt(t["mfu"], ".1%"))  # fmt: skip
        print(f"\ntrain {t['model']} ({fmt(t['params_m'], '.1f')} M), batch {t['batch_size']}, "
              f"{t['resolution']} px → latents {t['latent_shape']}, {t['precision']}: "
              f"{t['steps_s']:.2f} steps/s ({t['img_s']:.0f} img/s), "
              f"{t['flops_per_step'] / 1e12:.2f} TFLOPs/step, {t['achieved_tflops']:.1f} TFLOP/s, "
              f"MFU {mfu} (goal ≥ {GOAL_MFU:.0%}), peak {fmt(t['peak_gib'])} GiB")  # fmt: skip
    print(f"\n{result['seconds']:.0f} s in all; JSON: {result['json']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json (default: a temp one)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, help="timed images (default 1024; dry run 8)")
    parser.add_argument("--n-warmup", type=int, help="images scored first (128; dry run 4)")
    parser.add_argument("--side", type=int, default=256, help="JPEG side in pixels")
    parser.add_argument("--rewards", default=",".join(REWARDS))
    parser.add_argument("--vqa-model", default="clip-flant5-xl",
                        choices=("clip-flant5-xl", "clip-flant5-xxl"))  # fmt: skip
    parser.add_argument("--train-batch", type=int, help="default 256; dry run 4")
    parser.add_argument("--train-steps", type=int, help="timed steps (default 20; dry run 2)")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    if set(names) - set(REWARDS):
        parser.error(f"--rewards: choose from {', '.join(REWARDS)}")
    args.names = names
    small = args.dry_run
    args.n = args.n or (8 if small else 1024)
    args.n_warmup = args.n_warmup or (4 if small else 128)
    args.train_batch = args.train_batch or (4 if small else 256)
    args.train_steps = args.train_steps or (2 if small else 20)
    return args


def run_phase(result: dict, phase: str, fn, *args) -> None:
    """One phase's figures into `result`; a failure is recorded (and printed), not fatal, so
    one failing phase does not cost the other's figures on a lent GPU."""
    try:
        result.update(fn(*args))
    except Exception as err:  # reported in the JSON and on stderr
        traceback.print_exc()
        result.setdefault("errors", {})[phase] = f"{type(err).__name__}: {err}"


def save(result: dict, start: float) -> None:
    """Write the JSON now (again after each phase: a run cut short keeps what it measured)."""
    result["seconds"] = time.perf_counter() - start
    Path(result["json"]).write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="miro-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".gpu-check-work-", dir=out))  # never a user's folder
    offline_env(work)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    device = args.device if args.device != "auto" else "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    start = time.perf_counter()
    result: dict = {"device": device, "device_name": name, "dry_run": args.dry_run,
                    "torch": torch.__version__, "images": args.n, "image_side": args.side,
                    "vqa_model": args.vqa_model, "goals": {"e2e_over_model": GOAL_RATIO,
                    "mfu": GOAL_MFU}, "json": str(out / "gpu_check.json")}  # fmt: skip
    try:
        if args.names:
            print(f"rewards ({', '.join(args.names)}) on {name}", flush=True)
            run_phase(result, "rewards", reward_check, work, args, args.names, device)
            save(result, start)
        if not args.skip_train:
            print("training", flush=True)
            from gpu_train_check import train_check

            run_phase(result, "train", lambda: {"train": train_check(work, args, device, name)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save(result, start)
    print_report(result)
    if result.get("errors"):
        sys.exit(f"gpu-check: failed phases: {result['errors']}")
    return result


if __name__ == "__main__":
    main()
