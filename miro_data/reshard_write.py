"""One output shard of `miro data reshard`: the unit both engines run (the local engine one
after another in-process, the Ray engine one task each), so that both write the same bytes.

A `ShardJob` carries its samples' selected columns, each with the byte range of its image in
its source tar (from the member index); writing it reads those ranges, builds each sample's
json, runs the hooks, and commits the tar: a local tar is written under a hidden name and
renamed, a bucket object is uploaded only once its tar is complete.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from miro_data.bins import Levels
from miro_data.decode import decode_image
from miro_data.hooks import Hook
from miro_data.storage import filesystem, is_url, open_seekable
from miro_data.trainshards import SampleMeta, ShardEntry, TrainSample
from miro_data.trainshards_write import write_tar

log = logging.getLogger(__name__)

OFFSET, SIZE = "__offset", "__size"  # never a reward's name: reward names are identifiers
OPEN_SOURCES = 64  # source tars kept open at once (a shard's samples come from all of them)


@dataclass(frozen=True)
class ShardJob:
    """Output shard number `index`: its samples' columns, in output order."""

    index: int
    columns: dict[str, list]  # shard, key, caption, url, image_ext, width, height, meta,
    # OFFSET, SIZE (of the image in its source tar), and one column per reward

    @property
    def name(self) -> str:
        return f"{self.index:06d}.tar"

    def __len__(self) -> int:
        return len(self.columns["key"])


@dataclass(frozen=True)
class WriteContext:
    """What every shard of one run shares (sent once to each Ray worker)."""

    sources: dict[str, str]  # source shard name → its tar's path or URL
    rewards: tuple[str, ...]
    levels: dict[str, Levels]
    edges_version: int
    dest: str  # the staging folder (a path) or prefix (a URL) the tars go to


class Sources:
    """Byte ranges of source tars, through a bounded set of open files."""

    def __init__(self, locations: dict[str, str]) -> None:
        self.locations = locations
        self.files: OrderedDict[str, IO[bytes]] = OrderedDict()

    def read(self, shard: str, offset: int, size: int) -> bytes:
        f = self.files.get(shard)
        if f is None:
            f = self.files[shard] = open_seekable(self.locations[shard], sequential=False)
            if len(self.files) > OPEN_SOURCES:
                self.files.popitem(last=False)[1].close()
        else:
            self.files.move_to_end(shard)
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError(f"{self.locations[shard]} ends inside a member (truncated?)")
        return data

    def close(self) -> None:
        while self.files:
            self.files.popitem()[1].close()


def _levels(job: ShardJob, ctx: WriteContext) -> tuple[dict, dict]:
    bins, values = {}, {}
    for r in ctx.rewards:
        raw = np.array(job.columns[r], dtype=np.float64)  # null scores read as NaN
        bins[r], values[r] = ctx.levels[r].assign(raw)
    return bins, values


def build_samples(job: ShardJob, ctx: WriteContext, sources: Sources) -> list[TrainSample]:
    """The job's samples with their images read and their json built (NaN written as null)."""
    bins, values = _levels(job, ctx)
    c, samples = job.columns, []
    for i in range(len(job)):
        meta = SampleMeta(
            key=c["key"][i],
            caption=c["caption"][i],
            url=c["url"][i],
            source_shard=c["shard"][i],
            edges_version=ctx.edges_version,
            scores={r: c[r][i] for r in ctx.rewards},
            bins={r: (None if bins[r][i] < 0 else int(bins[r][i])) for r in ctx.rewards},
            bin_values={r: float(values[r][i]) for r in ctx.rewards},
            source=json.loads(c["meta"][i]) if c["meta"][i] else {},
            image_size=(c["width"][i], c["height"][i]),  # as annotate decoded and scored it
        )
        image = sources.read(c["shard"][i], c[OFFSET][i], c[SIZE][i])
        samples.append(TrainSample(meta, c["caption"][i] or "", image, c["image_ext"][i]))
    return samples


def _with_array(sample: TrainSample, hook: Hook, array: np.ndarray) -> TrainSample:
    if hook.kind == "text":
        return replace(sample, txt_emb=array)
    return replace(sample, latent=array)


def apply_hooks(hooks: list[Hook], samples: list[TrainSample], batch: int) -> list[TrainSample]:
    """The samples with the hooks' arrays, computed `batch` at a time."""
    done: list[TrainSample] = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        captions = [s.caption for s in chunk]
        images = (
            [decode_image(s.image, math.prod(s.meta.image_size or ())) for s in chunk]
            if any(h.kind == "vae" for h in hooks)
            else []
        )
        for hook in hooks:
            arrays = hook(images, captions)
            chunk = [_with_array(s, hook, a) for s, a in zip(chunk, arrays, strict=True)]
        done += chunk
    return done


def write_job(
    job: ShardJob, ctx: WriteContext, sources: Sources, hooks: list[Hook], hook_batch: int
) -> ShardEntry:
    """Write and commit one output shard; a rerun of the same job rewrites the same bytes."""
    samples = build_samples(job, ctx, sources)
    if hooks:
        samples = apply_hooks(hooks, samples, hook_batch)
    if not is_url(ctx.dest):
        final = Path(ctx.dest) / job.name
        tmp = final.with_name(f".{job.name}.tmp")
        with open(tmp, "wb", buffering=1 << 20) as f:
            count = write_tar(f, samples)
        os.replace(tmp, final)
        return ShardEntry(job.name, count)
    fs, prefix = filesystem(ctx.dest)
    with tempfile.TemporaryFile() as f:
        count = write_tar(f, samples)
        f.seek(0)
        with fs.open(f"{prefix}/{job.name}", "wb") as remote:  # the object appears on close
            _copy(f, remote)
    return ShardEntry(job.name, count)


def _copy(src: IO[bytes], dst: Any) -> None:
    while chunk := src.read(8 << 20):
        dst.write(chunk)
