"""Training batches from the re-sharded WebDataset tars (format: miro_data.trainshards).

Every (rank, worker) pair reads its own endless stream: shards are split between the
pairs (or, when there are fewer shards than pairs, samples are), each epoch reshuffles shard
order and passes samples through a seeded shuffle buffer. Streams depend only on (seed,
epoch, slot), so a resumed run skips exactly the batches it already consumed and sees the
same batches an uninterrupted run would. DataLoader workers decode while the model computes.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from miro_data import storage
from miro_data.common import MiroError
from miro_data.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from miro_data.processes import die_with_parent
from miro_data.shards import IMAGE_EXTS
from miro_data.trainshards import (
    LATENT,
    MANIFEST,
    TEXT_EMB,
    Manifest,
    SampleMeta,
    read_manifest,
    read_sample,
    sample_origin,
)
from miro_train.text import WordVocab, pad_embeddings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shards:
    """A training-shard folder: its manifest and tar files."""

    root: Path | str  # a folder, or a URL (miro_data.storage)
    manifest: Manifest
    urls: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def rewards(self) -> list[str]:
        return list(self.manifest.rewards)

    @property
    def total(self) -> int:
        return sum(self.counts)


def open_shards(root: str | Path) -> Shards:
    """Read and check the manifest; every listed tar must exist. `root` may be a URL
    (`s3://bucket/prefix`, miro_data.storage): the tars are then streamed from there."""
    if storage.is_url(root) or storage.looks_like_url(root):
        root = _url(root)
        manifest = _read_remote_manifest(root)
        present = set(storage.list_names(root))
        urls = tuple(storage.join(root, e.name) for e in manifest.shards)
        missing = [u for u, e in zip(urls, manifest.shards, strict=True) if e.name not in present]
    else:
        root = storage.local_path(root)
        manifest = read_manifest(root)
        urls = tuple(str(root / e.name) for e in manifest.shards)
        missing = [u for u in urls if not Path(u).exists()]
    if missing:
        listed = f"{len(missing)} shard(s) listed in {storage.join(root, MANIFEST)}"
        raise MiroError(f"{listed} are missing, e.g. {missing[0]}")
    counts = tuple(e.count for e in manifest.shards)
    if sum(counts) == 0:
        raise MiroError(f"{root}: the manifest lists no samples")
    return Shards(root, manifest, urls, counts)


def _url(location: str | Path) -> str:
    """A URL as given; one that pathlib collapsed (`s3:/bucket/x`, a Path-typed option) mended."""
    text = str(location)
    if storage.is_url(text):
        return text
    proto, rest = text.split(":", 1)
    return f"{proto}://{rest.lstrip('/')}"


def _read_remote_manifest(root: str) -> Manifest:
    url = storage.join(root, MANIFEST)
    data = storage.read_if_exists(url)
    if data is None:
        storage.check_reachable(root)  # a missing bucket or bad credentials say so
        raise MiroError(f"{root} is not a training-shard folder (no {MANIFEST})")
    return Manifest.from_json(data, url)


def check_rewards(shards: Shards, requested: list[str]) -> None:
    """Every requested reward must be in the manifest (the shards carry its bins)."""
    lacking = [r for r in requested if r not in shards.rewards]
    if lacking:
        have = ", ".join(shards.rewards) or "none"
        raise MiroError(
            f"the shards in {shards.root} carry no bins for {', '.join(lacking)} "
            f"(they have: {have}); re-shard with these rewards, or train with --baseline"
        )


# ----------------------------------------------------------------------------
# One sample → arrays
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSpec:
    """What to read from each sample and how to batch it."""

    rewards: tuple[str, ...]
    batch_size: int
    resolution: int = 32
    latents: bool = False  # read the latents (LATENT) instead of the image
    vocab: WordVocab | None = None  # word ids for the default text encoder
    text_emb: bool = False  # read the caption embeddings (TEXT_EMB)
    text_len: int = 16
    seed: int = 0
    shuffle_buffer: int = 1000


def scored_pixels(meta: SampleMeta) -> int:
    """The pixel budget that decodes a sample exactly as annotate did: the size it scored
    (a JPEG over annotate's budget was decoded at a reduced scale); older shards: the default."""
    if meta.image_size is None:
        return DEFAULT_MAX_PIXELS
    return meta.image_size[0] * meta.image_size[1]


def fit_image(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode with annotate's decoder (miro_data.decode: the pixels that were scored), resize
    the short side to `size` (bicubic) and centre-crop: (size, size, 3) uint8."""
    img = Image.fromarray(decode_image(data, max_pixels))
    if img.size != (size, size):
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC
        )
        left, top = (img.width - size) // 2, (img.height - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img)


def decode(raw: dict[str, Any], spec: BatchSpec) -> dict[str, Any]:
    """A raw WebDataset sample → image (or latent), caption, reward values (NaN = missing)."""
    where = sample_origin(raw)
    sample = read_sample(raw)
    out: dict[str, Any] = {
        "key": sample.key,
        "caption": sample.caption,
        "rewards": sample.meta.reward_values(spec.rewards, where),
    }
    if spec.latents:
        if sample.latent is None:
            raise MiroError(f"{where} has no {LATENT} (reshard with the vae hook)")
        out["latent"] = sample.latent
    else:
        if sample.image is None:
            raise MiroError(f"{where} has no image member ({'/'.join(IMAGE_EXTS)})")
        try:
            out["image"] = fit_image(sample.image, spec.resolution, scored_pixels(sample.meta))
        except DecodeError as err:
            raise MiroError(
                f"{where}: its {sample.image_ext} member does not decode ({err})"
            ) from None
    if spec.text_emb:
        if sample.txt_emb is None:
            raise MiroError(f"{where} has no {TEXT_EMB} (reshard with the text hook)")
        out["text_emb"] = sample.txt_emb
    return out


def collate(samples: list[dict[str, Any]], spec: BatchSpec) -> dict[str, Any]:
    """Stack decoded samples into tensors (images stay uint8 until they reach the device)."""
    batch: dict[str, Any] = {
        "keys": [s["key"] for s in samples],
        "captions": [s["caption"] for s in samples],
        "rewards": torch.tensor([s["rewards"] for s in samples], dtype=torch.float32),
    }
    if spec.latents:
        batch["latent"] = torch.from_numpy(np.stack([s["latent"] for s in samples]))
    else:
        batch["image"] = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(
            0, 3, 1, 2
        )
    if spec.vocab is not None:
        batch["ids"] = torch.from_numpy(spec.vocab.encode(batch["captions"]))
    if spec.text_emb:
        emb, mask = pad_embeddings([s["text_emb"] for s in samples], spec.text_len)
        batch["text_emb"], batch["text_mask"] = torch.from_numpy(emb), torch.from_numpy(mask)
    return batch


# ----------------------------------------------------------------------------
# Deterministic, resumable streams
# ----------------------------------------------------------------------------


def _unreadable(exn: Exception) -> bool:
    """webdataset error handler: a corrupt or missing tar is the user's, say so in one line."""
    raise MiroError(f"cannot read a shard: {exn}") from None


def _streams(urls: list[str]) -> Iterator[dict[str, Any]]:
    """Each tar opened in turn through miro_data.storage (files, s3://…, https://, pipe:),
    closed when the next is asked for; webdataset's own opener knows no object stores."""
    for url in urls:
        try:
            stream = storage.open_read(url)
        except MiroError as err:
            raise MiroError(f"cannot read a shard: {err}") from None
        try:
            yield {"url": url, "stream": stream}
        finally:
            stream.close()


def _samples_of(urls: list[str]) -> Iterator[dict[str, Any]]:
    files = wds.tariterators.tar_file_expander(_streams(urls), handler=_unreadable)
    return wds.tariterators.group_by_keys(files, handler=_unreadable)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class ShardStream(IterableDataset):
    """Endless batches for one rank; each DataLoader worker reads its own slot's stream."""

    def __init__(
        self, shards: Shards, spec: BatchSpec, start_batch: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        super().__init__()
        self.shards, self.spec = shards, spec
        self.start, self.rank, self.world = start_batch, rank, world

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        # The loader takes batches from workers round-robin starting at worker 0; renaming
        # worker w to (w + start) mod W keeps batch i on the stream it came from before.
        logical = (worker + self.start) % workers
        done = max(0, -(-(self.start - logical) // workers))  # batches this stream already gave
        slot, total = self.rank * workers + logical, self.world * workers
        samples = self._samples(slot, total, done * self.spec.batch_size)
        while True:
            chunk = [decode(raw, self.spec) for raw in islice(samples, self.spec.batch_size)]
            yield collate(chunk, self.spec)

    def _epoch_len(self, slot: int, total: int) -> int:
        if len(self.shards.urls) >= total:
            return sum(self.shards.counts[slot::total])
        return max(0, -(-(self.shards.total - slot) // total))

    def _samples(self, slot: int, total: int, skip: int) -> Iterator[dict[str, Any]]:
        per_epoch = self._epoch_len(slot, total)
        if per_epoch == 0:
            raise MiroError(f"{self.shards.total} samples cannot feed {total} data streams")
        epoch, skip = divmod(skip, per_epoch)  # whole epochs are skipped without reading
        while True:
            for i, sample in enumerate(self._epoch(epoch, slot, total)):
                if i >= skip:
                    yield sample
            epoch, skip = epoch + 1, 0

    def _epoch(self, epoch: int, slot: int, total: int) -> Iterator[dict[str, Any]]:
        seed, urls = self.spec.seed, list(self.shards.urls)
        if len(urls) >= total:  # shard-level split
            mine = urls[slot::total]
            order = np.random.default_rng(_seed(seed, epoch, slot)).permutation(len(mine))
            samples = _samples_of([mine[i] for i in order])
        else:  # sample-level split: every slot reads all shards in the same order
            order = np.random.default_rng(_seed(seed, epoch)).permutation(len(urls))
            samples = islice(_samples_of([urls[i] for i in order]), slot, None, total)
        rng = random.Random(_seed(seed, epoch, slot, 1))
        buffer = max(1, self.spec.shuffle_buffer)
        return wds.filters.shuffle(buffer, buffer, rng=rng)(samples)


def _worker_init(trainer: int, _: int) -> None:
    die_with_parent(trainer)  # at once, not at torch's next 5 s check, when the trainer is killed
    torch.set_num_threads(1)  # decoding is light; leave the cores to the model


def make_loader(
    shards: Shards,
    spec: BatchSpec,
    *,
    start_batch: int = 0,
    rank: int = 0,
    world: int = 1,
    workers: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches for one rank from batch `start_batch` on; `workers` processes decode ahead."""
    return DataLoader(
        ShardStream(shards, spec, start_batch, rank, world),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=partial(_worker_init, os.getpid()) if workers else None,
    )


def next_batch(batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """The next batch; a user error raised in a worker comes back as its own one line."""
    try:
        return next(batches)
    except MiroError as err:
        text = str(err).strip().splitlines()
        last = text[-1] if text else ""
        raise MiroError(last.split("MiroError: ", 1)[-1]) from None


def iter_captions(shards: Shards, limit: int) -> Iterator[str]:
    """Captions of the first `limit` samples, in shard order (to build the word vocabulary)."""
    for raw in islice(_samples_of(list(shards.urls)), limit):
        yield read_sample(raw).caption


def levels_seen(shards: Shards, rewards: list[str], limit: int) -> dict[str, set[int]]:
    """The bin levels each reward takes in the first `limit` samples (a reshard shuffles, so
    they stand for the whole set); undefined (null) levels are left out."""
    seen: dict[str, set[int]] = {r: set() for r in rewards}
    for raw in islice(_samples_of(list(shards.urls)), limit):
        bins = read_sample(raw).meta.bins
        for reward in rewards:
            if (level := bins.get(reward)) is not None:
                seen[reward].add(level)
    return seen


def peek(shards: Shards, spec: BatchSpec) -> dict[str, Any]:
    """Decode the first sample in this process, so bad shards fail before training starts."""
    raw = next(iter(_samples_of([shards.urls[0]])), None)
    if raw is None:
        raise MiroError(f"{shards.urls[0]} holds no samples")
    return decode(raw, spec)
