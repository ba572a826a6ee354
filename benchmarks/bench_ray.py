"""`annotate --engine ray` speed, side by side with the local engine in one run (noisy machines).

1. Same corpus, this machine: Ray Data on a local 2-CPU Ray vs the local engine with
   `--workers 2`: images/s of each and their ratio (goal ≥ 0.8). Ray's start is timed apart
   (a cluster is started once, not per run); rounds interleave the engines.
2. Driver ingest: part folders of N samples × 6 rewards (synthesized, as the scorers write
   them) ingested into DuckDB: rows/s, and ingest's share of annotate's wall time at that
   size, taking annotate's rate from (1) (goal ≤ 10 %).

    python benchmarks/bench_ray.py [--n 2000] [--size 256] [--ingest 100000]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MIRO_NO_PROGRESS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

from benchmarks.bench_data import make_shards
from miro_data import db, handoff
from miro_data.annotate import AnnotateConfig, annotate, write_shard_part
from miro_data.common import keep_freed_memory

REWARDS = ("sharpness", "edge_sharpness", "noise", "colorfulness", "contrast", "shapes_alignment")


def _annotate_rate(shards: Path, out: Path, n: int, **engine) -> float:
    t0 = time.perf_counter()
    annotate(AnnotateConfig(shards=str(shards), db=out, rewards=REWARDS, **engine))
    return n / (time.perf_counter() - t0)


def bench_engines(shards: Path, root: Path, n: int, repeats: int) -> float:
    """Best images/s of each engine; returns the Ray engine's."""
    import ray

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(
        f"ray       local 2-CPU Ray started in {time.perf_counter() - t0:.1f} s (not in the rates)"
    )
    local, remote = [], []
    try:
        for i in range(repeats):
            local.append(_annotate_rate(shards, root / f"local{i}.duckdb", n, workers=2))
            remote.append(_annotate_rate(shards, root / f"ray{i}.duckdb", n, engine="ray"))
    finally:
        ray.shutdown()
    rounds = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(local, remote, strict=True))
    print(f"engines   rounds (local --workers 2 / ray img/s): {rounds}")
    best_local, best_ray = max(local), max(remote)
    print(
        f"engines   local {best_local:8.1f} img/s | ray {best_ray:8.1f} img/s | "
        f"ratio {best_ray / best_local:.2f} (goal ≥ 0.8; best of {repeats} each, "
        f"{len(REWARDS)} weight-free rewards)"
    )
    return best_ray


def _part_rows(shard: str, start: int, count: int, rng: np.random.Generator) -> dict:
    keys = [f"{i:09d}" for i in range(start, start + count)]
    samples = [
        {"shard": shard, "key": k, "caption": "a red circle and a blue square", "url": f"file:///x/{k}.jpg",
         "width": 256, "height": 256, "image_ext": "jpg", "status": "ok", "error": None,
         "meta": '{"caption": "a red circle and a blue square", "index": 1}'}
        for k in keys
    ]  # fmt: skip
    values = rng.random((len(REWARDS), count))
    scores = [
        {"shard": shard, "key": k, "reward": r, "version": "1", "value": float(values[j, i])}
        for j, r in enumerate(REWARDS)
        for i, k in enumerate(keys)
    ]
    return {"samples": samples, "scores": scores, "failures": []}


def bench_ingest(root: Path, n: int, per_part: int, ray_rate: float) -> None:
    rng = np.random.default_rng(0)
    path = root / "ingest.duckdb"
    db.connect(path, create=True).close()
    parts = []
    for p, start in enumerate(range(0, n, per_part)):
        rows = _part_rows(f"{p:05d}", start, min(per_part, n - start), rng)
        versions = dict.fromkeys(REWARDS, "1")
        parts.append(
            write_shard_part(handoff.parts_dir(path), f"{p:05d}", False, versions, rows, {}, True)
        )
    t0 = time.perf_counter()
    for part in parts:
        handoff.ingest_waiting(path, part, 60.0)
    seconds = time.perf_counter() - t0
    rows = n * (1 + len(REWARDS))
    annotate_s = n / ray_rate
    print(
        f"ingest    {n:,} samples × {len(REWARDS)} rewards ({len(parts)} parts): {seconds:.1f} s, "
        f"{rows / seconds:,.0f} rows/s; annotate at {ray_rate:.0f} img/s takes {annotate_s:.0f} s "
        f"→ ingest {100 * seconds / annotate_s:.1f} % of that wall time (goal ≤ 10 %)"
    )
    # The driver is the one DuckDB writer: past this rate, scoring waits for it.
    print(f"ingest    the single writer keeps up with up to {n / seconds:,.0f} img/s of scoring")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--per-shard", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ingest", type=int, default=100_000)
    parser.add_argument("--per-part", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    keep_freed_memory()
    print(f"machine   {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = make_shards(root, args.n, args.size, args.per_shard)
        ray_rate = bench_engines(shards, root, args.n, args.repeats)
        bench_ingest(root, args.ingest, args.per_part, ray_rate)


if __name__ == "__main__":
    main()
