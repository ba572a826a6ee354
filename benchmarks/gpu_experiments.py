"""`miro experiment compare` with three training seeds per arm, on one lent GPU, in minutes.

    python benchmarks/gpu_experiments.py --exp NAME=SHARDS:STEPS:EVERY[:BATCH] ... --out DIR
        [--seeds 0,1,2] [--rewards R] [--prompts N] [--images-per-prompt N] [--sampler-steps N]
        [--train-deadline S] [--deadline S]

Each experiment is the library's `compare` (same recipe as the CLI: unet-tiny, lr 1e-3,
EMA 0.999, MIRO sampled at s⁺ = all high vs s⁻ = all low, ω = 3, 384 images per evaluation
and seed, the same prompts and noise for both arms). Only the scheduling is this script's:
the 2 × seeds training runs of an experiment run at once, one process each (they are too
small to fill the GPU alone), experiments one after another, and an experiment's evaluation
runs beside the next one's training. A run still training at --train-deadline is stopped;
its experiment is then evaluated at the last checkpoint step every run reached, and says so
(`truncated` in gpu_experiments.json) — its cosine schedule had not ended there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from miro_train.experiments.common import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
REWARDS = "shapes_alignment"  # the recipe (README, "Which rewards MIRO conditions on here")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


def parse_exp(text: str) -> dict:
    name, spec = text.split("=", 1)
    shards, *nums = spec.split(":")
    steps, every, *rest = (int(n) for n in nums)
    return {"name": name, "shards": shards, "steps": steps, "every": every,
            "batch": rest[0] if rest else 64}  # fmt: skip


def settings(exp: dict, steps: int | None = None) -> TrainSettings:
    from miro_train.experiments.common import TrainSettings

    return TrainSettings(steps=steps or exp["steps"], eval_every=exp["every"],
                         batch_size=exp["batch"])  # fmt: skip


# ----------------------------------------------------------------------------
# One process per training run, one per evaluation
# ----------------------------------------------------------------------------


def train_one(job: dict) -> None:
    from miro_train.experiments.common import train_arm

    train = replace(settings(job["exp"]), seed=job["seed"])
    train_arm(job["exp"]["shards"], Path(job["run"]), train, baseline=job["arm"] == "baseline",
              rewards=tuple(job["rewards"].split(",")))  # fmt: skip


def compare_one(job: dict) -> None:
    from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings
    from miro_train.experiments.compare import CompareConfig, compare

    exp = job["exp"]
    sampler = replace(EXPERIMENT_SAMPLER, batch_size=384, steps=job["sampler_steps"])
    ev = EvalSettings(prompts_per_category=job["prompts"],
                      images_per_prompt=job["images_per_prompt"], sampler=sampler)  # fmt: skip
    cfg = CompareConfig(shards=Path(exp["shards"]), out=Path(job["out"]),
                        train=settings(exp, job["steps"]), eval=ev,
                        rewards=tuple(job["rewards"].split(",")),
                        train_seeds=tuple(job["seeds"]))  # fmt: skip
    compare(cfg)


def spawn(kind: str, job: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MIRO_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, __file__, f"--{kind}", json.dumps(job)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip


def wait_all(procs: list[subprocess.Popen], deadline: float) -> bool:
    """Wait until all end or the deadline (seconds since start); kill the rest. All ended?"""
    while any(p.poll() is None for p in procs) and time.monotonic() - T0 < deadline:
        time.sleep(1)
    late = [p for p in procs if p.poll() is None]
    for p in late:
        p.kill()
    for p in procs:
        p.wait()
    return not late


def last_steps(runs: list[Path]) -> list[int]:
    from miro_train.experiments.common import checkpoints_by_step

    return [max((step for step, _ in checkpoints_by_step(run)), default=0) for run in runs]


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", action="append", default=[], type=parse_exp)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rewards", default=REWARDS)
    ap.add_argument("--prompts", type=int, default=16, help="GenEval prompts per category.")
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--sampler-steps", type=int, default=25, help="Euler steps per image.")
    ap.add_argument("--train-deadline", type=float, default=420.0)
    ap.add_argument("--deadline", type=float, default=530.0)
    ap.add_argument("--train-one")
    ap.add_argument("--compare-one")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.train_one:
        return train_one(json.loads(args.train_one))
    if args.compare_one:
        return compare_one(json.loads(args.compare_one))
    from miro_train.experiments.common import parse_seeds, seed_runs

    seeds = parse_seeds(args.seeds, "--seeds")
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seeds": seeds, "rewards": args.rewards, "experiments": {}}
    evals: list[tuple[dict, subprocess.Popen]] = []
    for exp in args.exp:
        out = args.out / exp["name"]
        out.mkdir(exist_ok=True)
        jobs = [{"exp": exp, "arm": arm, "seed": train.seed, "rewards": args.rewards,
                 "run": str(run)} for arm in ("baseline", "miro")
                for train, run in seed_runs(out / arm, settings(exp), seeds)]  # fmt: skip
        for job in jobs:
            Path(job["run"]).parent.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        say(f"{exp['name']}: training {len(jobs)} runs of {exp['steps']} steps at once")
        procs = [spawn("train-one", j, out / f"train-{j['arm']}-{j['seed']}.log") for j in jobs]
        done = wait_all(procs, args.train_deadline) and all(p.returncode == 0 for p in procs)
        reached = last_steps([Path(j["run"]) for j in jobs])
        steps = exp["steps"] if done else min(reached, default=0)
        info = {**exp, "train_wall_s": round(time.monotonic() - t, 1), "finished": done,
                "last_steps": reached, "evaluated_to": steps, "truncated": not done}  # fmt: skip
        summary["experiments"][exp["name"]] = info
        say(f"{exp['name']}: training {'done' if done else 'stopped'}: {info}")
        if steps == 0:
            continue
        job = {"exp": exp, "out": str(out), "steps": steps, "seeds": seeds,
               "rewards": args.rewards, "prompts": args.prompts,
               "images_per_prompt": args.images_per_prompt,
               "sampler_steps": args.sampler_steps}  # fmt: skip
        evals.append((exp, spawn("compare-one", job, out / "compare.log")))
    for exp, proc in evals:
        ok = wait_all([proc], args.deadline)
        summary["experiments"][exp["name"]]["evaluated"] = ok and proc.returncode == 0
        say(f"{exp['name']}: evaluation {'done' if ok and proc.returncode == 0 else 'failed'}")
        pack(args.out / exp["name"], args.out / f"{exp['name']}.tgz")
    (args.out / "gpu_experiments.json").write_text(json.dumps(summary, indent=1))
    say("done")


def pack(folder: Path, dest: Path) -> None:
    """The experiment's small files (reports, scores, logs, arm.json): no checkpoints."""
    keep = {".json", ".md", ".png", ".jsonl", ".log"}
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in keep and "checkpoints" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(folder.parent)))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
