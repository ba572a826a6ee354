"""`miro data annotate --engine ray`: the annotate runner on a Ray Data pipeline.

pending shard tasks → read + decode on CPU tasks (prefetch.read_shard: the local engine's
reader, decoder and failure rows) → every pending reward scored in an actor pool
(`map_batches` with a callable class: each actor builds its rewards once; one actor per GPU
with `num_gpus=1` when learned rewards run on a cluster with GPUs) → rows streamed back to the
driver, which groups them per shard and, once a shard's end record and all its samples are in,
writes the part folder (annotate.write_shard_part, today's marker) and ingests it.

Ray Data retries what a lost node was doing (tasks: max_retries=-1; actors: max_restarts=-1,
max_task_retries=-1, its defaults), so a sample may arrive twice: the driver keeps the first
copy of each (shard, sequence number). Images cross the object store as numpy arrays;
streaming execution bounds memory by the blocks in flight, not by the corpus.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

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
from miro_data.common import MiroError
from miro_data.prefetch import SLOT_BYTES, Decoded, ShardJob, read_shard
from miro_data.raycluster import ray_session
from miro_data.rewards import REGISTRY
from miro_data.shards import RawSample, Shard

log = logging.getLogger(__name__)

READ_MEMORY = 4 * SLOT_BYTES  # bytes a read task declares: a few chunks of decoded pixels
NO_IMAGE = np.zeros(
    (0, 0, 3), np.uint8
)  # the image of an undecodable sample (a column has one type)
Runner = Callable[[list[ShardTask], AnnotateConfig, Callable, Callable], None]


@contextlib.contextmanager
def connected(cfg: AnnotateConfig) -> Iterator[Runner]:
    """Ray started or joined (before annotate writes anything); yields the runner."""
    with ray_session("--engine ray", cfg.ray_address):
        yield run


# ----------------------------------------------------------------------------
# Which rewards, where
# ----------------------------------------------------------------------------


def _gpus(cfg: AnnotateConfig, ray: Any) -> int:
    """GPUs the scoring actors use: the cluster's, when a learned (or user) reward runs."""
    learned = any(":" in n or REGISTRY[n].learned for n in cfg.rewards)
    if cfg.device == "cpu" or not learned:
        return 0
    return int(ray.cluster_resources().get("GPU", 0))


def _reward_versions(cfg: AnnotateConfig) -> list[tuple[str, str]]:
    """(name, version) of each reward, built where the actors run (versions of learned
    rewards hash their checkpoints, which the driver's machine need not have)."""
    rewards = build_rewards(cfg)
    try:
        return [(r.name, r.version) for r in rewards]
    finally:
        for r in rewards:
            r.close()


def _remote(ray: Any, call: Callable[[], Any]) -> Any:
    """ray.get of `call`, a MiroError raised remotely raised here as itself."""
    try:
        return ray.get(call())
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, MiroError):
            raise MiroError(str(err.cause)) from None
        raise


# ----------------------------------------------------------------------------
# The pipeline's two stages
# ----------------------------------------------------------------------------


def _sample_batch(task: int, seq: int, chunk: list[Decoded]) -> dict[str, list]:
    info = [
        json.dumps(
            {"key": d.raw.key, "caption": d.raw.caption, "image_ext": d.raw.image_ext,
             "meta": d.raw.meta, "error": d.error}
        )
        for d in chunk
    ]  # fmt: skip
    return {
        "task": [task] * len(chunk),
        "kind": ["sample"] * len(chunk),
        "seq": list(range(seq, seq + len(chunk))),
        "info": info,
        "image": [NO_IMAGE if d.image is None else d.image for d in chunk],
    }


def read_shards(batch: dict[str, np.ndarray], jobs: list[ShardJob], max_pixels: int):
    """Read + decode (a Ray Data task): each task's samples, then its end record (sample
    count, tar damage, whether it was read to its end, the rows a shard adds once read)."""
    for task in batch["task"]:
        task = int(task)
        job, seq = jobs[task], 0
        errors: list[str] = []
        for chunk in read_shard(job, max_pixels, errors, SLOT_BYTES):
            yield _sample_batch(task, seq, chunk)
            seq += len(chunk)
        end = {
            "count": seq,
            "complete": not errors,
            "rows": shard_end_rows(job.shard, job.keys is not None, errors),
        }
        yield {"task": [task], "kind": ["end"], "seq": [seq], "info": [json.dumps(end)],
               "image": [NO_IMAGE]}  # fmt: skip


def _decoded(info: str, image: np.ndarray) -> Decoded:
    d = json.loads(info)
    raw = RawSample(d["key"], None, d["image_ext"], d["caption"], d["meta"], d["error"])
    return Decoded(raw, None if d["error"] is not None else np.asarray(image), d["error"])


class Scorer:
    """The actor stage: rewards built once per actor; each batch's samples scored with their
    shard's pending rewards. Subclassed per run (`_scorer_class`) to carry the plan."""

    cfg: AnnotateConfig
    shards: list[Shard]
    pending: list[tuple[str, ...]]  # per task, the rewards to score

    def __init__(self) -> None:
        self.rewards = {r.name: r for r in build_rewards(self.cfg)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"task": [], "kind": [], "info": []}
        groups: dict[int, list[int]] = {}
        for i, (task, kind) in enumerate(zip(batch["task"], batch["kind"], strict=True)):
            if kind == "end":
                out["task"].append(int(task))
                out["kind"].append("end")
                out["info"].append(batch["info"][i])
            else:
                groups.setdefault(int(task), []).append(i)
        for task, rows in groups.items():
            decoded = [_decoded(batch["info"][i], batch["image"][i]) for i in rows]
            rewards = [self.rewards[name] for name in self.pending[task]]
            seconds: dict[str, float] = {}
            samples = score_samples(self.shards[task], decoded, rewards, seconds)
            seqs = [int(batch["seq"][i]) for i in rows]
            out["task"].append(task)
            out["kind"].append("rows")
            out["info"].append(json.dumps({"seqs": seqs, "rows": samples, "seconds": seconds}))
        return out


def _scorer_class(cfg: AnnotateConfig, todo: list[ShardTask], pending: list[tuple[str, ...]]):
    """Scorer with this run's plan as class attributes: pickled with the class, not passed as
    constructor arguments (those live in the object store, which a restarted actor needs)."""
    plan = {"cfg": cfg, "shards": [t.shard for t in todo], "pending": pending}
    return type("Scorer", (Scorer,), plan)


# ----------------------------------------------------------------------------
# The driver: rows grouped per shard, finished shards written and ingested
# ----------------------------------------------------------------------------


@dataclass
class _ShardRows:
    samples: dict[int, dict[str, list[dict]]] = field(default_factory=dict)  # by sequence number
    seconds: dict[str, float] = field(default_factory=dict)
    end: dict | None = None

    def done(self) -> bool:
        return self.end is not None and len(self.samples) == self.end["count"]


def _take(state: _ShardRows, kind: str, info: str) -> int:
    """A row of the scorer's output into the shard's state; returns the samples new to it."""
    payload = json.loads(info)
    if kind == "end":
        state.end = payload
        return 0
    new = 0
    for seq, rows in zip(payload["seqs"], payload["rows"], strict=True):
        if seq not in state.samples:  # a retried task's copy of a sample is dropped
            state.samples[seq] = rows
            new += 1
    for name, s in payload["seconds"].items():
        state.seconds[name] = state.seconds.get(name, 0.0) + s
    return new


def _write(cfg: AnnotateConfig, task: ShardTask, versions: dict[str, str], state: _ShardRows):
    rows: dict[str, list[dict]] = {"samples": [], "scores": [], "failures": []}
    for seq in sorted(state.samples):
        for table, new in state.samples[seq].items():
            rows[table] += new
    assert state.end is not None
    for table, new in state.end["rows"].items():
        rows[table] += new
    retry = task.retry_keys is not None
    return write_shard_part(
        handoff.parts_dir(cfg.db, cfg.parts),
        task.shard.name,
        retry,
        versions,
        rows,
        state.seconds,
        state.end["complete"],
    )


def _plan(cfg, tasks, versions) -> tuple[list[ShardTask], list[tuple[str, ...]]]:
    """The tasks with rewards to score (effective_task / pending_rewards: the local rules)."""
    rewards = [SimpleNamespace(name=n, version=v) for n, v in versions]
    todo, pending = [], []
    for task in tasks:
        task = effective_task(task, rewards)  # type: ignore[arg-type]
        if names := tuple(r.name for r in pending_rewards(task, rewards)):  # type: ignore[arg-type]
            todo.append(task)
            pending.append(names)
    return todo, pending


def run(tasks: list[ShardTask], cfg: AnnotateConfig, ingest, advance) -> None:
    """The runner of annotate's (tasks, cfg, ingest, advance) shape, on Ray Data."""
    import ray

    gpus = _gpus(cfg, ray)
    probe = ray.remote(num_gpus=1 if gpus else 0)(_reward_versions)
    versions = _remote(ray, lambda: probe.remote(cfg))
    todo, pending = _plan(cfg, tasks, versions)
    if not todo:
        return
    actors = cfg.actors or max(1, gpus)
    jobs = [ShardJob(t.shard, t.retry_keys) for t in todo]
    ds: Any = ray.data.from_items(
        [{"task": i} for i in range(len(todo))], override_num_blocks=len(todo)
    )
    # The memory a read task holds (decoded chunks on their way) is declared: it also keeps
    # Ray Data from fusing reading into the actors (fused, a CPU actor would read, decode and
    # score in turn, on one core).
    ds = ds.map_batches(
        read_shards, batch_size=1, fn_kwargs={"jobs": jobs, "max_pixels": cfg.max_pixels},
        num_cpus=1, memory=READ_MEMORY,
    )  # fmt: skip
    ds = ds.map_batches(
        _scorer_class(cfg, todo, pending),
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
    )
    states: dict[int, _ShardRows] = {}
    finished: set[int] = set()  # ingested: a late copy of one of their rows is dropped
    by_name = dict(versions)
    try:
        for row in ds.iter_rows():
            task = int(row["task"])
            if task in finished:
                continue
            state = states.setdefault(task, _ShardRows())
            advance(_take(state, row["kind"], row["info"]))
            if state.done():
                names = {n: by_name[n] for n in pending[task]}
                ingest(_write(cfg, todo[task], names, states.pop(task)))
                finished.add(task)
    except ray.exceptions.RayError as err:
        raise _pipeline_error(err) from None
    if len(finished) < len(todo):
        left = [t.shard.name for i, t in enumerate(todo) if i not in finished]
        raise MiroError(f"the Ray pipeline ended before shard(s) {', '.join(left[:5])} were whole")


def _pipeline_error(err: BaseException) -> MiroError:
    cause = getattr(err, "cause", None)
    if isinstance(cause, MiroError):
        return MiroError(str(cause))
    text = str(cause or err).strip()
    first = text.splitlines()[-1] if text else type(err).__name__
    return MiroError(
        f"the Ray pipeline failed ({first}); the shards finished so far are kept: run the same "
        "command again to go on"
    )
