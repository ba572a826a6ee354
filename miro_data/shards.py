"""Finding and reading WebDataset shards: sequential streams (webdataset) and random access (wids).

A shard's name is its path relative to the folder given on the command line, without `.tar`
(img2dataset's `00012.tar` is shard `00012`); names key the DuckDB tables and the ledger.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from webdataset.tariterators import group_by_keys, tar_file_expander

from miro_data.common import MiroError

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")


# A sample key names tar members (`KEY.png`) in the training shards reshard writes, and
# tools extract them: it must be a plain file name, never a path (`../x`, `/abs/x`, `a/b`).
PLAIN_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def key_problem(key: str) -> str | None:
    """Why `key` cannot name tar members safely, or None for a plain key."""
    if PLAIN_KEY.fullmatch(key) and ".." not in key:
        return None
    return (
        f"unsafe sample key {key!r}: a key must be a plain name of letters, digits, '_', '-' "
        "and '.' (no '/', no '..', no leading '.')"
    )


@dataclass(frozen=True)
class Shard:
    """A tar file and the name it is known by."""

    name: str
    path: Path


@dataclass
class RawSample:
    """A sample as stored: key, image bytes and extension, caption, and its json record."""

    key: str
    image: bytes | None
    image_ext: str | None
    caption: str
    meta: dict = field(default_factory=dict)
    error: str | None = None  # why the sample cannot be used (an unsafe key); image is None


def list_shards(source: str | Path) -> list[Shard]:
    """Shards from a folder (every *.tar below it), one .tar file, or a glob pattern."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        root, files = path, sorted(path.rglob("*.tar"))
    elif path.is_file():
        root, files = path.parent, [path]
    else:
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if p.endswith(".tar"))
        root = Path(glob.escape(text)).parent if files else path
        while root != root.parent and not all(f.is_relative_to(root) for f in files):
            root = root.parent
    files = [f for f in files if not f.name.startswith(".")]  # skip temporaries
    if not files:
        raise MiroError(f"no .tar shards found at {source}")
    return [Shard(str(f.relative_to(root).with_suffix("")), f) for f in files]


def _decode_text(data: bytes | None) -> str:
    return data.decode("utf-8", errors="replace") if data else ""


def to_raw_sample(sample: dict) -> RawSample:
    """A webdataset sample dict → RawSample (caption from .txt, else from the json)."""
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError):
            meta = {}
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    caption = _decode_text(sample.get("txt")) or str(meta.get("caption") or "")
    problem = key_problem(sample["__key__"])  # its bytes are never passed on
    return RawSample(
        key=sample["__key__"],
        image=sample[ext] if ext and problem is None else None,
        image_ext=ext,
        caption=caption,
        meta=meta if isinstance(meta, dict) else {},
        error=problem,
    )


def iter_samples(shard: Shard, errors: list[str] | None = None) -> Iterator[RawSample]:
    """Stream a shard's samples in order.

    A damaged tar ends the stream at the damage instead of raising; the reason is appended to
    `errors` so the caller can record it.
    """

    def stop(exn: Exception) -> bool:
        if errors is not None:
            errors.append(f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}")
        return False

    n_errors = len(errors) if errors is not None else 0
    with open(shard.path, "rb") as stream:
        files = tar_file_expander([{"url": str(shard.path), "stream": stream}], handler=stop)
        for sample in group_by_keys(files, handler=stop):
            yield to_raw_sample(sample)
    if errors is not None and len(errors) == n_errors and not _has_end_marker(shard.path):
        errors.append("truncated tar: no end-of-archive marker (samples after the cut are lost)")


def _has_end_marker(path: Path) -> bool:
    """Whether a tar ends with its two zero blocks.

    Python's tarfile treats a header cut short as the end of the archive, silently; a tar
    cut at a member boundary looks complete to it. Writers always end with 1024 zero bytes.
    """
    size = path.stat().st_size
    if size < 1024 or size % 512:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1024)
        return not any(f.read(1024))
