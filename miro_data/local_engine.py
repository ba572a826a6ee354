"""`miro data annotate`'s default engine: this machine's processes.

One process (`--workers 1`) or a pool of `--workers` spawned processes, each scoring a whole
shard at a time; `--decode-workers` helper processes read and decode ahead of the scorer
(miro_data.prefetch), across shard ends. Each finished shard is a part folder that the
coordinator ingests (annotate._annotate). Workers die with the coordinator (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import queue
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from miro_data import handoff
from miro_data.annotate import (
    AnnotateConfig,
    ShardTask,
    build_rewards,
    effective_task,
    pending_rewards,
    score_samples,
    shard_end_rows,
    write_shard_part,
)
from miro_data.common import MiroError, keep_freed_memory
from miro_data.prefetch import Decoded, Prefetcher, ShardJob
from miro_data.processes import die_with_parent, fault_point
from miro_data.rewards import Reward
from miro_data.shards import Shard

# ----------------------------------------------------------------------------
# One shard → a part folder
# ----------------------------------------------------------------------------


def _until_end(chunks: Iterator[list[Decoded]], ended: list[bool]) -> Iterator[list[Decoded]]:
    """The chunks; `ended` gets True once the stream is exhausted (the shard was read to its end)."""
    yield from chunks
    ended.append(True)


def _batches(chunks: Iterator[list[Decoded]], size: int) -> Iterator[list[Decoded]]:
    """The prefetcher's chunks regrouped into scoring batches of `size`."""
    samples = itertools.chain.from_iterable(chunks)
    while batch := list(itertools.islice(samples, size)):
        yield batch


def _score_batch(
    shard: Shard, batch: list[Decoded], rewards: Sequence[Reward], rows, seconds
) -> None:
    """Append the batch's sample rows, decode failures, and every reward's scores to `rows`."""
    for sample in score_samples(shard, batch, rewards, seconds):
        for table, new in sample.items():
            rows[table] += new


def process_shard(
    task: ShardTask,
    rewards: Sequence[Reward],
    cfg: AnnotateConfig,
    prefetcher: Prefetcher,
    on_batch=None,
) -> Path | str:
    """Score one shard (the prefetcher's next) with its pending rewards; returns the part folder."""
    retry = task.retry_keys is not None
    pending = pending_rewards(task, rewards)
    shard = task.shard
    rows: dict[str, list[dict]] = {"samples": [], "scores": [], "failures": []}
    seconds = {r.name: 0.0 for r in pending}
    read_errors: list[str] = []
    ended: list[bool] = []
    for batch in _batches(_until_end(prefetcher.shard(shard, read_errors), ended), cfg.batch_size):
        _score_batch(shard, batch, pending, rows, seconds)
        if on_batch is not None:
            on_batch(len(batch))
    end = shard_end_rows(shard, retry, read_errors)
    rows["samples"] += end["samples"]
    rows["failures"] += end["failures"]
    # Only a shard read to its end is done (ledger); the rows of a partial read are kept,
    # and the next run reads the shard again.
    versions = {r.name: r.version for r in pending}
    return write_shard_part(
        handoff.parts_dir(cfg.db, cfg.parts),
        shard.name,
        retry,
        versions,
        rows,
        seconds,
        bool(ended) and not read_errors,
    )


# ----------------------------------------------------------------------------
# One process, or a pool of them
# ----------------------------------------------------------------------------


_WORKER: dict[str, Any] = {}


def _init_worker(
    cfg: AnnotateConfig, indices: mp.Queue, progress: mp.Queue, coordinator: int
) -> None:
    die_with_parent(coordinator)  # a killed coordinator must not leave workers writing parts
    keep_freed_memory()
    _WORKER["cfg"] = cfg
    _WORKER["rewards"] = build_rewards(cfg, indices.get())
    _WORKER["progress"] = progress


def _prefetcher(tasks: list[ShardTask], cfg: AnnotateConfig) -> Prefetcher:
    jobs = [ShardJob(t.shard, t.retry_keys) for t in tasks]
    return Prefetcher(jobs, cfg.decode_workers, cfg.max_pixels)


def _worker_process(task: ShardTask) -> Path | str | None:
    fault_point("annotate.worker")
    cfg, rewards = _WORKER["cfg"], _WORKER["rewards"]
    task = effective_task(task, rewards)
    if not pending_rewards(task, rewards):
        return None
    with _prefetcher([task], cfg) as prefetcher:
        return process_shard(task, rewards, cfg, prefetcher, _WORKER["progress"].put)


def _run_in_process(tasks: list[ShardTask], cfg: AnnotateConfig, ingest, advance) -> None:
    rewards = build_rewards(cfg)
    try:
        todo = [
            t for t in (effective_task(t, rewards) for t in tasks) if pending_rewards(t, rewards)
        ]
        with _prefetcher(todo, cfg) as prefetcher:
            for task in todo:
                ingest(process_shard(task, rewards, cfg, prefetcher, advance))
    finally:
        for r in rewards:
            r.close()


def _result(future: Future) -> Path | str | None:
    try:
        return future.result()
    except BrokenProcessPool:
        raise MiroError(
            "a worker process died (killed, or out of memory?); the shards finished so far are "
            "kept: run the same command again to go on"
        ) from None


def _run_pool(tasks: list[ShardTask], cfg: AnnotateConfig, ingest, advance) -> None:
    ctx = mp.get_context("spawn")  # fork is unsafe with torch and threads
    indices, progress = ctx.Queue(), ctx.Queue()
    for i in range(cfg.workers):
        indices.put(i)
    initargs = (cfg, indices, progress, os.getpid())
    with ProcessPoolExecutor(
        cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=initargs
    ) as pool:
        pending = {pool.submit(_worker_process, t) for t in tasks}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while True:
                    try:
                        advance(progress.get_nowait())
                    except queue.Empty:
                        break
                for future in finished:
                    if (part := _result(future)) is not None:
                        ingest(part)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def run(tasks: list[ShardTask], cfg: AnnotateConfig, ingest, advance) -> None:
    """Score the tasks' shards (a pool when cfg.workers > 1), `ingest` each finished part."""
    runner = _run_pool if cfg.workers > 1 else _run_in_process
    runner(tasks, cfg, ingest, advance)
