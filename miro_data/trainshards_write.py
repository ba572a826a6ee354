"""Writing training shards (the format is miro_data.trainshards'): `ShardWriter` for a folder
of `NNNNNN.tar` shards and its manifest, `write_tar` for one tar on a stream (reshard's
uploads), byte for byte the same for the same samples.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import webdataset as wds

from miro_data.common import MiroError
from miro_data.shards import IMAGE_EXTS, key_problem
from miro_data.tarindex import archive_end, ustar_header
from miro_data.trainshards import (
    JSON,
    LATENT,
    MANIFEST,
    TEXT_EMB,
    TXT,
    Manifest,
    ShardEntry,
    TrainSample,
)


def member_problem(key: str, ext: str | None) -> str | None:
    """Why `KEY.EXT` cannot be a member name of a training tar, or None."""
    if (ext or "").lower() not in IMAGE_EXTS:  # the trainer decodes the shared IMAGE_EXTS
        return f"sample {key!r} has image extension {ext!r}, not one of {', '.join(IMAGE_EXTS)}"
    return key_problem(key)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _members(sample: TrainSample) -> dict[str, Any]:
    problem = member_problem(sample.key, sample.image_ext)
    if problem is not None or sample.image is None:
        raise MiroError(problem or f"sample {sample.key!r} has no image")
    members: dict[str, Any] = {
        "__key__": sample.key,
        (sample.image_ext or "").lower(): sample.image,  # as in the source tar, lowercased
        TXT: sample.caption.encode("utf-8"),
        JSON: sample.meta.to_json(),
    }
    if sample.txt_emb is not None:
        members[TEXT_EMB] = _npy(sample.txt_emb)
    if sample.latent is not None:
        members[LATENT] = _npy(sample.latent)
    return members


def write_tar(f: BinaryIO, samples: Iterable[TrainSample], mtime: int = 0) -> int:
    """`samples` as one training tar on `f` (members sorted by suffix, as webdataset's writer);
    the headers carry `mtime`, so the same samples always make the same bytes. Returns the count.
    """
    count = written = 0
    for sample in samples:
        members = _members(sample)
        key = members.pop("__key__")
        for suffix in sorted(members):
            data = members[suffix]
            header = ustar_header(f"{key}.{suffix}", len(data), mtime)  # 3 blocks: long name
            f.write(header)
            f.write(data)  # as it is: no copy of the image's bytes
            pad = -len(data) % 512
            f.write(bytes(pad))
            written += len(header) + len(data) + pad
        count += 1
    f.write(archive_end(written))
    return count


class ShardWriter:
    """Writes samples into `NNNNNN.tar` shards of `shard_size` samples (webdataset's TarWriter),
    then `manifest.json` last and atomically: a folder without one was never finished.

        with ShardWriter(folder, 1000) as sink:
            for sample in samples:
                sink.write(sample)
            sink.finish(Manifest(..., shards=sink.shards, ...))
    """

    def __init__(self, folder: str | Path, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, not {shard_size}")
        self.folder, self.shard_size = Path(folder), shard_size
        self._done: list[ShardEntry] = []
        self._tar: wds.TarWriter | None = None
        self._count = 0

    @property
    def shards(self) -> tuple[ShardEntry, ...]:
        """The shards written so far, with their sample counts."""
        if self._tar is None:
            return tuple(self._done)
        return (*self._done, ShardEntry(f"{len(self._done):06d}.tar", self._count))

    def write(self, sample: TrainSample) -> None:
        """Add one sample (MiroError if its key or image suffix cannot name a tar member)."""
        members = _members(sample)
        if self._tar is not None and self._count == self.shard_size:
            self._close_tar()
        if self._tar is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"{len(self._done):06d}.tar"
            self._tar, self._count = wds.TarWriter(str(self.folder / name), encoder=False), 0
        self._tar.write(members)
        self._count += 1

    def finish(self, manifest: Manifest) -> None:
        """Close the last shard and write `manifest` (whose shards must be `self.shards`)."""
        if manifest.shards != self.shards:
            raise ValueError("the manifest must list the shards this writer wrote")
        self._close_tar()
        # OSErrors propagate as they are: the caller knows which output to name (reshard: OUT)
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(manifest.to_json())
        os.replace(tmp, self.folder / MANIFEST)

    def _close_tar(self) -> None:
        if self._tar is not None:
            entry = self.shards[-1]
            self._tar.close()
            self._tar = None
            self._done.append(entry)

    def close(self) -> None:
        """Close the open shard without a manifest (after a failure)."""
        self._close_tar()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
