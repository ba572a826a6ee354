"""Read and decode shards in helper processes, ahead of the scorer and across shard ends.

Scoring on a CPU is many short numpy calls; a decoding *thread* beside it fights for the GIL
and slowed the weight-free rewards by a fifth, so reading the tars and decoding the images
run in processes. Helper h of N takes shards h, h+N, … of the plan and streams chunks of
decoded samples through its own bounded queue (the pixels through shared memory); the scorer
takes shard i from helper i mod N, so shards come back in plan order while helpers work ahead.

On Linux the helpers are forked, like PyTorch's DataLoader workers: no start-up imports and
no `if __name__ == "__main__"` in a user's script. They read tars and decode with PIL only,
so models and threads in the parent do not matter to them.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import queue
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from miro_data.common import MiroError
from miro_data.decode import DecodeError, decode_image
from miro_data.processes import die_with_parent
from miro_data.shards import IMAGE_EXTS, RawSample, Shard, iter_samples

CHUNK = 32  # samples per message from a helper
SLOT_BYTES = 16 << 20  # shared memory per message: 32 images of 400×400 pixels
T = TypeVar("T")


@dataclass
class Decoded:
    """A sample as read, with its image decoded, or the reason it could not be."""

    raw: RawSample  # .image (the encoded bytes) is dropped once decoded
    image: np.ndarray | None
    error: str | None


@dataclass(frozen=True)
class ShardJob:
    """A shard to read, and (in a retry) the only keys wanted from it."""

    shard: Shard
    keys: frozenset[str] | None = None


def decode_sample(raw: RawSample, max_pixels: int) -> Decoded:
    """The sample's image decoded, or why not (a malformed sample is not decoded at all)."""
    data, raw.image = raw.image, None
    if raw.error is not None:
        return Decoded(raw, None, raw.error)
    if data is None:
        return Decoded(raw, None, f"sample has no image file ({'/'.join(IMAGE_EXTS)})")
    try:
        return Decoded(raw, decode_image(data, max_pixels), None)
    except DecodeError as err:
        return Decoded(raw, None, str(err))


def read_shard(
    job: ShardJob, max_pixels: int, errors: list[str], max_bytes: int | None = None
) -> Iterator[list[Decoded]]:
    """A shard's wanted samples, decoded, in chunks of at most CHUNK samples and (past the
    first image) `max_bytes` of pixels; tar damage goes to `errors`."""
    chunk: list[Decoded] = []
    size = 0
    for raw in iter_samples(job.shard, errors):
        if job.keys is not None and raw.key not in job.keys:
            continue
        d = decode_sample(raw, max_pixels)
        nbytes = 0 if d.image is None else d.image.nbytes
        if chunk and max_bytes is not None and size + nbytes > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(d)
        size += nbytes
        if len(chunk) == CHUNK:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _blocking(call: Callable[[], T], parent: int) -> T:
    """call() (a put or get with a timeout), retried while it times out; elsewhere than
    Linux, a helper orphaned by its scorer stops here."""
    while True:
        try:
            return call()
        except (queue.Full, queue.Empty):
            if os.getppid() != parent:
                os._exit(0)


class _Slots:
    """Shared memory (an anonymous mmap inherited over fork) in which a helper hands decoded
    pixels to the scorer: a pipe moves ~0.4 GB/s in 64 KB gulps and stalls the scorer."""

    def __init__(self, ctx, n: int, size: int) -> None:
        self.size = size
        self.buf = mmap.mmap(-1, n * size)
        self.free = ctx.Queue()
        for i in range(n):
            self.free.put(i)

    def put(self, chunk: list[Decoded], parent: int) -> tuple[int, list] | None:
        """In the helper: move the chunk's pixels into a free slot → (slot, layout)."""
        if sum(d.image.nbytes for d in chunk if d.image is not None) > self.size:
            return None  # one image larger than a slot: it travels pickled
        slot = _blocking(partial(self.free.get, timeout=1.0), parent)
        layout: list[tuple[tuple[int, ...], int] | None] = []
        offset = slot * self.size
        for d in chunk:
            if d.image is None:
                layout.append(None)
                continue
            view = np.ndarray(d.image.shape, np.uint8, buffer=self.buf, offset=offset)
            view[...] = d.image
            layout.append((d.image.shape, offset))
            offset += d.image.nbytes
            d.image = None
        return slot, layout

    def take(self, chunk: list[Decoded], slot: int, layout: list) -> list[Decoded]:
        """In the scorer: copy the pixels out and give the slot back."""
        for d, spec in zip(chunk, layout, strict=True):
            if spec is not None:
                shape, offset = spec
                d.image = np.ndarray(shape, np.uint8, buffer=self.buf, offset=offset).copy()
        self.free.put(slot)
        return chunk


def _helper(
    jobs: Sequence[ShardJob], max_pixels: int, out: mp.Queue, slots: _Slots | None, parent: int
) -> None:
    die_with_parent(parent)

    def send(kind: str, payload: object) -> None:
        _blocking(partial(out.put, (kind, payload), timeout=1.0), parent)

    try:
        for job in jobs:
            errors: list[str] = []
            for chunk in read_shard(job, max_pixels, errors, slots.size if slots else None):
                send("chunk", (chunk, slots.put(chunk, parent) if slots else None))
            send("end", errors)
    except BaseException as err:  # handed to the scorer, which raises it
        send("error", f"{type(err).__name__}: {err}")


class Prefetcher:
    """Shards of a plan, read and decoded by `workers` processes (0: lazily, in this one)."""

    def __init__(
        self, jobs: Sequence[ShardJob], workers: int, max_pixels: int, depth: int = 16
    ) -> None:
        if workers < 0:
            raise ValueError(f"decode workers must be 0 or more, not {workers}")
        self.jobs, self.max_pixels, self.next = list(jobs), max_pixels, 0
        self.helpers: list[tuple[mp.process.BaseProcess, mp.Queue, _Slots | None]] = []
        fork = sys.platform == "linux"
        ctx: Any = mp.get_context("fork" if fork else "spawn")
        n = min(workers, len(self.jobs))
        for h in range(n):
            q = ctx.Queue(maxsize=depth)  # depth chunks ahead, per helper
            slots = _Slots(ctx, depth, SLOT_BYTES) if fork else None
            p = ctx.Process(
                target=_helper,
                args=(self.jobs[h::n], max_pixels, q, slots, os.getpid()),
                daemon=True,
            )
            p.start()
            self.helpers.append((p, q, slots))

    def shard(self, shard: Shard, errors: list[str]) -> Iterator[list[Decoded]]:
        """Chunks of `shard`, the plan's next; its tar damage is added to `errors`."""
        i, self.next = self.next, self.next + 1
        if i >= len(self.jobs) or self.jobs[i].shard != shard:
            raise RuntimeError(f"shard {shard.name} asked for out of the plan's order")
        if not self.helpers:
            yield from read_shard(self.jobs[i], self.max_pixels, errors)
            return
        process, q, slots = self.helpers[i % len(self.helpers)]
        while True:
            kind, payload = _get(process, q)
            if kind == "chunk":
                chunk, placed = payload
                if placed is not None:  # pixels in shared memory: only helpers with slots do it
                    assert slots is not None
                    chunk = slots.take(chunk, *placed)
                yield chunk
            elif kind == "end":
                errors.extend(payload)
                return
            else:
                raise MiroError(f"reading shard {self.jobs[i].shard.name} failed: {payload}")

    def close(self) -> None:
        for process, q, slots in self.helpers:
            if process.is_alive():
                process.terminate()
            process.join()
            for channel in (q, slots.free) if slots else (q,):
                channel.close()
                channel.cancel_join_thread()
            if slots:
                slots.buf.close()  # safe: the scorer copied every image out of its slot
        self.helpers = []

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _get(process: mp.process.BaseProcess, q: mp.Queue) -> tuple[str, Any]:
    """The helper's next message; a helper that died (killed for memory, say) is an error."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if not process.is_alive() and q.empty():
                raise MiroError(f"a decoding process died (exit code {process.exitcode})") from None
