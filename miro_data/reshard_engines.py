"""The two ways reshard writes its output shards: here, one after another (`local`), or one
Ray task per shard with a bounded number in flight (`ray`). Both run `write_job`, so for
the same jobs they write the same bytes; the driver keeps the shards' order and writes the
manifest itself, last.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from miro_data.common import MiroError, progress_bar
from miro_data.hooks import Hook, build_hooks
from miro_data.processes import fault_point
from miro_data.reshard_write import ShardJob, Sources, WriteContext, write_job
from miro_data.trainshards import ShardEntry

if TYPE_CHECKING:
    from miro_data.reshard import ReshardConfig

log = logging.getLogger(__name__)


def run_local(
    cfg: ReshardConfig, jobs: Iterator[ShardJob], ctx: WriteContext, total: int
) -> tuple[ShardEntry, ...]:
    hooks = build_hooks(cfg.hooks, cfg.device, cfg.allow_download)
    sources = Sources(ctx.sources)
    written = []
    try:
        with progress_bar("img") as bar:
            task = bar.add_task("reshard", total=total)
            for job in jobs:
                written.append(write_job(job, ctx, sources, hooks, cfg.hook_batch_size))
                fault_point("reshard.shard")
                bar.advance(task, len(job))
    finally:
        sources.close()
    return tuple(written)


# ----------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _worker_hooks(specs: tuple[str, ...], device: str, allow_download: bool) -> list[Hook]:
    """The hooks' models, loaded once per Ray worker process, not once per shard."""
    return build_hooks(specs, device, allow_download)


def _write_task(ctx: WriteContext, job: ShardJob, hooks: tuple[str, ...], device: str,
                hook_batch: int, allow_download: bool) -> ShardEntry:  # fmt: skip
    sources = Sources(ctx.sources)
    try:
        return write_job(
            job, ctx, sources, _worker_hooks(hooks, device, allow_download), hook_batch
        )
    finally:
        sources.close()


def run_ray(
    cfg: ReshardConfig, jobs: Iterator[ShardJob], ctx: WriteContext, total: int, ray: Any
) -> tuple[ShardEntry, ...]:
    """Each job as one Ray task (retried if its worker dies: a rewrite gives the same bytes),
    at most `in_flight` at once so the driver holds a bounded number of jobs."""
    task = ray.remote(max_retries=3)(_write_task)
    ctx_ref = ray.put(ctx)
    limit = cfg.in_flight or 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, ShardJob] = {}
    done: dict[int, ShardEntry] = {}
    try:
        with progress_bar("img") as bar:
            progress = bar.add_task("reshard", total=total)
            for job in jobs:
                while len(pending) >= limit:
                    bar.advance(progress, _collect(ray, pending, done))
                ref = task.remote(
                    ctx_ref, job, cfg.hooks, cfg.device, cfg.hook_batch_size, cfg.allow_download
                )
                pending[ref] = job
            while pending:
                bar.advance(progress, _collect(ray, pending, done))
    except BaseException:
        _cancel(ray, pending)
        raise
    return tuple(done[i] for i in sorted(done))


def _collect(ray: Any, pending: dict[Any, ShardJob], done: dict[int, ShardEntry]) -> int:
    """Wait for one task; record its shard; the samples it wrote. A task's own error (a
    MiroError, an OSError) is raised as it was."""
    ready, _ = ray.wait(list(pending), num_returns=1)
    job = pending.pop(ready[0])
    try:
        done[job.index] = ray.get(ready[0])
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, MiroError | OSError):
            raise cause from None
        raise
    fault_point("reshard.shard")
    return len(job)


def _cancel(ray: Any, pending: dict[Any, ShardJob]) -> None:
    """Stop the tasks still running and wait for them, so none writes after the caller has
    removed the staging output."""
    for ref in pending:
        ray.cancel(ref, force=True)
    with contextlib.suppress(Exception):
        ray.wait(list(pending), num_returns=len(pending), timeout=60)
