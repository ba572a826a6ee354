"""Stage `miro data annotate`: score every sample of the shards with several rewards.

Per shard: stream the tar and decode each image once (in helper processes that work ahead,
across shard ends: miro_data.prefetch), hand batches to every pending reward, and write the
results as part files (miro_data.db). The ledger makes re-runs cheap: a (shard, reward,
version) already done is skipped, a reward added later scores only itself, `retry_failed`
redoes only failed samples.
Invariant per (shard, reward): samples read = scored + failed.

This module plans, ingests and reports, and holds what both engines share (config, per-sample
rows, part markers); the work itself runs on local_engine.py (this machine's processes, the
default) or ray_engine.py (`--engine ray`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from miro_data import db, handoff, storage
from miro_data.checks import check_count
from miro_data.common import MiroError, keep_freed_memory, progress_bar
from miro_data.decode import DEFAULT_MAX_PIXELS, PIL_MAX_PIXELS
from miro_data.hub import allow_download_field
from miro_data.options import NAMES, opt
from miro_data.prefetch import Decoded
from miro_data.processes import fault_point, output_lock
from miro_data.raycluster import check_ray_address
from miro_data.rewards import (
    REGISTRY,
    Reward,
    RewardContext,
    build_reward,
    check_reward_names,
    score_all,
)
from miro_data.shards import Shard, download_failures, img2dataset_successes, list_shards

log = logging.getLogger(__name__)

DEVICES = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # rewards.torch_reward.autocast_dtype
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
# How long opening the database waits for a reader (`miro data query` / `stats` inspecting
# progress) to let go: annotate holds it only while it ingests a part.
DB_WAIT = 60.0


@dataclass(frozen=True)
class AnnotateConfig:
    """What to score, where to store it, and how to spread the work; checked when built."""

    shards: str = field(metadata=opt(
        help="Shard folder, one .tar, or a glob; or a URL: s3://bucket/prefix, "
        "https://host/x-{000..009}.tar, pipe:CMD."
    ))  # fmt: skip
    db: Path = field(metadata=opt(help="DuckDB file (created if missing; a local path)."))
    rewards: tuple[str, ...] = field(
        metadata=opt("--rewards", "-r", parser=NAMES,
                     help="Comma-separated reward names or module:Class.")
    )  # fmt: skip
    workers: int = field(
        default=1, metadata=opt(help="Worker processes (one per GPU, or N CPU workers).")
    )
    # each reward splits a batch by its own batch_size (--reward-option NAME.batch_size=N)
    batch_size: int = field(default=256, metadata=opt(
        help="Images per batch handed to the rewards; each learned reward splits it by its own "
        "batch size (--reward-option NAME.batch_size=N)."
    ))  # fmt: skip
    decode_workers: int = field(default=1, metadata=opt(
        help="Decoding processes per worker, ahead of the scorer (0: decode in the worker)."
    ))  # fmt: skip
    device: str = field(default="auto", metadata=opt(help="auto | cpu | cuda | cuda:N"))
    precision: Precision = field(default="auto", metadata=opt(help="Autocast dtype on CUDA."))
    reward_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    retry_failed: bool = field(
        default=False, metadata=opt(help="Redo only the samples that failed.")
    )
    parts: str | None = field(default=None, metadata=opt(
        help="Where finished shards wait to be ingested: a folder or a URL (s3://bucket/prefix); "
        "default: DB.parts beside the database."
    ))  # fmt: skip
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=opt(
        help="Largest image decoded, in pixels (a JPEG above it is decoded at 1/2, 1/4 or 1/8 "
        "scale when that fits); larger images are recorded as decode failures."
    ))  # fmt: skip
    allow_download: bool = allow_download_field("reward weights")
    engine: Engine = field(default="local", metadata=opt(
        help="local: this machine's processes (--workers); ray: a Ray Data pipeline, on a "
        'local Ray or the cluster at --ray-address (pip install "miro[ray]").'
    ))  # fmt: skip
    ray_address: str | None = field(default=None, metadata=opt(
        help="With --engine ray: auto | HOST:PORT | ray://HOST:PORT (default: start a local Ray)."
    ))  # fmt: skip
    actors: int | None = field(default=None, metadata=opt(
        help="With --engine ray: scoring actors (default: one per GPU of the cluster when "
        "learned rewards run there, else 1)."
    ))  # fmt: skip

    def __post_init__(self) -> None:
        if isinstance(self.rewards, list):
            object.__setattr__(self, "rewards", tuple(self.rewards))
        check_reward_names(self.rewards)
        db.check_local(self.db)
        if self.parts is not None:
            storage.check_writable(self.parts, "--parts")
        check_count("--workers", self.workers, 1)
        check_count("--batch-size", self.batch_size, 1)
        check_count("--decode-workers", self.decode_workers, 0)
        check_count("--max-pixels", self.max_pixels, 1, PIL_MAX_PIXELS)
        if not isinstance(self.device, str) or not DEVICES.fullmatch(self.device):
            raise MiroError(f"--device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.precision not in PRECISIONS:
            raise MiroError(f"--precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        self._check_engine()
        options = self.reward_options
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise MiroError("reward options must map each reward name to a table of options")

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise MiroError(f"--engine {self.engine!r}: use {' or '.join(ENGINES)}")
        if self.engine == "local":
            for flag, value in (("--ray-address", self.ray_address), ("--actors", self.actors)):
                if value is not None:
                    raise MiroError(f"{flag} is an option of --engine ray")
            return
        if self.actors is not None:
            check_count("--actors", self.actors, 1)
        if self.workers != 1:
            raise MiroError("--workers is for --engine local; with --engine ray use --actors")
        if self.device.startswith("cuda:"):
            raise MiroError(
                f"--device {self.device} with --engine ray: Ray gives each actor its GPU; "
                "use auto, cuda or cpu"
            )
        if self.ray_address is not None:
            check_ray_address(self.ray_address)


@dataclass(frozen=True)
class ShardTask:
    """One shard to score, what the ledger says is done, and (in a retry) which keys to redo."""

    shard: Shard
    done: frozenset[tuple[str, str]]
    retry_keys: frozenset[str] | None = None


@dataclass(frozen=True)
class AnnotateReport:
    shards: int
    skipped: int
    read: int
    scored: dict[str, int]
    failed: dict[str, int]
    unreadable: tuple[str, ...] = ()  # shards not read to their end: not done, read again next run


# ----------------------------------------------------------------------------
# One shard → part files
# ----------------------------------------------------------------------------


def _sample_row(shard: Shard, d: Decoded) -> dict:
    meta = d.raw.meta
    return {
        "shard": shard.name,
        "key": d.raw.key,
        "caption": d.raw.caption,
        "url": meta.get("url"),
        "width": None if d.image is None else d.image.shape[1],
        "height": None if d.image is None else d.image.shape[0],
        "image_ext": d.raw.image_ext,
        "status": "ok" if d.image is not None else "undecodable",
        "error": d.error,
        "meta": json.dumps(meta, default=str),
    }


def score_samples(
    shard: Shard, batch: list[Decoded], rewards: Sequence[Reward], seconds: dict[str, float]
) -> list[dict[str, list[dict]]]:
    """Per sample of the batch: its `samples` row, its decode failure or every reward's score
    (or score failure). `seconds` gets each reward's scoring time."""
    out: list[dict[str, list[dict]]] = [
        {"samples": [_sample_row(shard, d)], "scores": [], "failures": [] if d.image is not None
         else [{"shard": shard.name, "key": d.raw.key, "stage": "decode", "reward": None,
                "version": None, "reason": d.error}]}
        for d in batch
    ]  # fmt: skip
    ok = [i for i, d in enumerate(batch) if d.image is not None]
    images, captions = [batch[i].image for i in ok], [batch[i].raw.caption for i in ok]
    for reward in rewards:
        t0 = time.perf_counter()
        values, errors = score_all(reward, images, captions)  # type: ignore[arg-type]
        seconds[reward.name] = seconds.get(reward.name, 0.0) + time.perf_counter() - t0
        for i, value, error in zip(ok, values, errors, strict=True):
            base = {"shard": shard.name, "key": batch[i].raw.key, "reward": reward.name,
                    "version": reward.version}  # fmt: skip
            if error is None:
                out[i]["scores"].append(
                    {**base, "value": None if np.isnan(value) else float(value)}
                )
            else:
                out[i]["failures"].append({**base, "stage": "score", "reason": error})
    return out


def effective_task(task: ShardTask, rewards: Sequence[Reward]) -> ShardTask:
    """In a retry, a shard not yet done for some reward (never read to its end, e.g. a cut tar
    since repaired) is read in full for those rewards, like in a normal run."""
    if task.retry_keys is not None and any((r.name, r.version) not in task.done for r in rewards):
        return ShardTask(task.shard, task.done)
    return task


def pending_rewards(task: ShardTask, rewards: Sequence[Reward]) -> list[Reward]:
    """The rewards a shard still needs (in a retry: those whose failed samples are redone)."""
    retry = task.retry_keys is not None
    if retry and not task.retry_keys:
        return []
    return [r for r in rewards if ((r.name, r.version) in task.done) == retry]


def shard_end_rows(shard: Shard, retry: bool, read_errors: list[str]) -> dict[str, list[dict]]:
    """The rows a shard adds once read: img2dataset's download failures (not in a retry) and
    one `read` failure per tar damage."""
    failures = [
        {"shard": shard.name, "key": None, "stage": "read", "reward": None, "version": None,
         "reason": e}
        for e in read_errors
    ]  # fmt: skip
    return {"samples": [] if retry else download_failures(shard), "failures": failures}


def write_shard_part(
    parts: Path | str,
    shard_name: str,
    retry: bool,
    versions: dict[str, str],
    rows: dict[str, list[dict]],
    seconds: dict[str, float],
    complete: bool,
) -> Path | str:
    """A shard's rows as a part folder under `parts`, with the marker the ledger is made from."""
    marker = {
        "shard": shard_name,
        "retry": retry,
        "complete": complete,
        "rewards": {
            name: {"version": version, "seconds": round(seconds.get(name, 0.0), 3)}
            for name, version in versions.items()
        },
    }
    return handoff.write_part(parts, shard_name, rows, marker)


# ----------------------------------------------------------------------------
# Planning, workers, ingest
# ----------------------------------------------------------------------------


def _device(cfg: AnnotateConfig, worker_index: int) -> str:
    """'auto' means CUDA when learned rewards run and a GPU is visible; workers share GPUs round-robin."""
    if cfg.device == "cpu" or not any(":" in n or REGISTRY[n].learned for n in cfg.rewards):
        return "cpu"  # weight-free rewards run on numpy: no need to import torch
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.device == "auto":
        return f"cuda:{worker_index % count}" if count else "cpu"
    if not count:
        raise MiroError(f"--device {cfg.device} was asked for, but no CUDA device is visible")
    if cfg.device == "cuda":
        return f"cuda:{worker_index % count}"
    if int(cfg.device.split(":")[1]) >= count:
        raise MiroError(f"--device {cfg.device}: only {count} CUDA device(s) are visible")
    return cfg.device


def build_rewards(cfg: AnnotateConfig, worker_index: int = 0) -> list[Reward]:
    ctx = RewardContext(
        device=_device(cfg, worker_index),
        precision=cfg.precision,
        options=cfg.reward_options,
        allow_download=cfg.allow_download,
    )
    rewards = [build_reward(name, ctx) for name in cfg.rewards]
    names = [r.name for r in rewards]
    if len(set(names)) != len(names):
        raise MiroError(f"two rewards share a name: {', '.join(names)}")
    return rewards


def plan(con, shards: list[Shard], retry: bool) -> list[ShardTask]:
    """One task per shard, carrying what the ledger says is done (and, in a retry, the failed keys)."""
    done: dict[str, set[tuple[str, str]]] = {}
    for shard, reward, version in con.execute(
        "SELECT shard, reward, version FROM ledger"
    ).fetchall():
        done.setdefault(shard, set()).add((reward, version))
    failed: dict[str, set[str]] = {}
    if retry:
        rows = con.execute(
            "SELECT DISTINCT shard, key FROM failures WHERE key IS NOT NULL"
        ).fetchall()
        for shard, key in rows:
            failed.setdefault(shard, set()).add(key)
    return [
        ShardTask(
            shard=s,
            done=frozenset(done.get(s.name, ())),
            retry_keys=frozenset(failed.get(s.name, ())) if retry else None,
        )
        for s in shards
    ]


def _expected_samples(tasks: list[ShardTask]) -> int | None:
    """Samples to read, from img2dataset's stats where every shard has them (for the progress bar)."""
    if any(t.shard.is_url for t in tasks):
        return None  # one request per shard before any work: not worth a progress total
    if tasks and all(t.retry_keys is not None for t in tasks):
        return sum(len(t.retry_keys or ()) for t in tasks)
    counts = [img2dataset_successes(t.shard) for t in tasks]
    return None if None in counts else sum(counts)  # type: ignore[arg-type]


def recover_parts(con, db_path: Path, parts: str | None = None) -> int:
    """Ingest parts a killed run finished but did not ingest; drop unfinished ones."""
    finished, unfinished = handoff.list_parts(handoff.parts_dir(db_path, parts))
    for part in finished:
        handoff.ingest_part(con, part)
    for part in unfinished:
        storage.remove(part)
    n = len(finished)
    if n:
        log.info("ingested %d part(s) left by an earlier run", n)
    return n


def annotate(cfg: AnnotateConfig) -> AnnotateReport:
    """Score the shards with cfg.rewards into cfg.db; returns counts for this database."""
    if cfg.engine == "ray":
        from miro_data import ray_engine

        with ray_engine.connected(cfg) as runner:  # before anything is written
            return _annotate(cfg, runner)
    return _annotate(cfg, None)


def _annotate(cfg: AnnotateConfig, runner) -> AnnotateReport:
    keep_freed_memory()  # scoring allocates image-sized temporaries all the time
    shards = list_shards(cfg.shards)  # an unreachable bucket is one line here, nothing written
    if cfg.parts is not None:
        storage.check_reachable(cfg.parts, "write", probe=True)
    if cfg.workers > len(shards):
        log.warning(
            "--workers %d but %d shard(s): a worker scores one shard at a time, so at most %d "
            "run",
            cfg.workers, len(shards), len(shards),
        )  # fmt: skip
    with output_lock(cfg.db):  # one annotate per database: the parts in flight are its own
        if cfg.parts is not None:
            handoff.claim_parts(handoff.parts_dir(cfg.db, cfg.parts), cfg.db)
        con = db.connect_waiting(cfg.db, DB_WAIT, create=True)
        try:
            recover_parts(con, cfg.db, cfg.parts)
            tasks = plan(con, shards, cfg.retry_failed)
        finally:
            con.close()
        ingested: list[dict] = []

        def ingest(part: Path | str) -> None:
            ingested.append(handoff.ingest_waiting(cfg.db, part, DB_WAIT))
            fault_point("annotate.ingested")

        with progress_bar("img") as bar:
            job = bar.add_task("annotate", total=_expected_samples(tasks))

            def advance(n: int) -> None:
                bar.advance(job, n)

            # a worker takes a whole shard: more workers than shards would only sit idle
            run_cfg = dataclasses.replace(cfg, workers=max(1, min(cfg.workers, len(tasks))))
            if runner is None:
                from miro_data import local_engine

                runner = local_engine.run
            runner(tasks, run_cfg, ingest, advance)
        con = db.connect_waiting(cfg.db, DB_WAIT)
        try:
            return _report(con, shards, len(ingested))
        finally:
            con.close()


def _report(con, shards: list[Shard], n_processed: int) -> AnnotateReport:
    names = [s.name for s in shards]
    rows = con.execute(
        """SELECT reward, sum(n_scored), sum(n_failed) FROM ledger
        WHERE shard IN (SELECT unnest($names)) GROUP BY reward ORDER BY reward""",
        {"names": names},
    ).fetchall()
    (read,) = con.execute(
        "SELECT count(*) FROM samples WHERE shard IN (SELECT unnest($names)) AND status IN ('ok', 'undecodable')",
        {"names": names},
    ).fetchone()
    unreadable = con.execute(
        "SELECT DISTINCT shard FROM failures WHERE stage = 'read' AND shard IN (SELECT unnest($names)) ORDER BY 1",
        {"names": names},
    ).fetchall()
    return AnnotateReport(
        shards=len(shards),
        skipped=len(shards) - n_processed,
        read=int(read),
        scored={r: int(s) for r, s, _ in rows},
        failed={r: int(f) for r, _, f in rows},
        unreadable=tuple(s for (s,) in unreadable),
    )
