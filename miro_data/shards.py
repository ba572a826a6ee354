"""Finding and reading WebDataset shards: sequential streams (webdataset) and random access (wids).

A shard's name is its path relative to the folder given on the command line, without `.tar`
(img2dataset's `00012.tar` is shard `00012`); names key the DuckDB tables and the ledger.

Reading never stops at a bad sample: a malformed member (json that is not an object or has
wrong-typed fields, text that is not UTF-8, a key used by two samples) makes that sample's
`error`, which annotate records as its failure; only damage to the tar itself ends the stream.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from webdataset.tariterators import base_plus_ext, tar_file_expander

from miro_data import storage
from miro_data.common import MiroError, first_line

log = logging.getLogger(__name__)

# The image members every stage accepts: annotate decodes them, reshard copies them, the
# trainer decodes them again with the same decoder (miro_data.decode), first match wins.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}  # fmt: skip


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
    """A tar file and the name it is known by: `path` is a local Path, or a URL (str)."""

    name: str
    path: Path | str

    @property
    def is_url(self) -> bool:
        return isinstance(self.path, str) and storage.is_url(self.path)


@dataclass
class RawSample:
    """A sample as stored: key, image bytes and extension, caption, and its json record.

    `error` says why the sample is malformed (it is then recorded as failed, not scored)."""

    key: str
    image: bytes | None
    image_ext: str | None  # the image member's suffix, as spelled in the tar
    caption: str
    meta: dict = field(default_factory=dict)
    error: str | None = None  # why the sample cannot be used (an unsafe key); image is None


def list_shards(source: str | Path) -> list[Shard]:
    """Shards from a folder (every *.tar below it), one .tar file, or a glob pattern; or a
    URL (miro_data.storage): `s3://bucket/prefix` (folder, one .tar, glob), a brace list
    `https://host/x-{000..009}.tar`, `pipe:CMD` — names are paths relative to the root."""
    text = str(storage.local_path(source)) if storage.scheme(source) == "file" else str(source)
    if storage.is_url(text):
        url_root, urls = storage.list_files(text, ".tar")
        if not urls:
            raise MiroError(f"no .tar shards found at {source}")
        return [
            Shard(storage.with_suffix(storage.relative(u, url_root), ".tar", ""), u) for u in urls
        ]
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
    # Temporaries (dot names) and folders that happen to end in .tar are not shards.
    files = [f for f in files if not f.name.startswith(".") and f.is_file()]
    if not files:
        raise MiroError(f"no .tar shards found at {source}")
    return [Shard(str(f.relative_to(root).with_suffix("")), f) for f in files]


class _Malformed(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise _Malformed(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; SQL's does not


def _parse_meta(data: bytes) -> dict:
    """The json member as a dict, or _Malformed/ValueError saying what is wrong with it."""
    meta = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    if not isinstance(meta, dict):
        raise _Malformed(f"it is {_JSON_TYPES.get(type(meta), 'not an object')}, not an object")
    for name in ("url", "caption"):  # the fields stored in their own columns
        value = meta.get(name)
        if value is not None and not isinstance(value, str):
            raise _Malformed(f"field {name!r} is {_JSON_TYPES[type(value)]}, not a string")
    # Out-of-range numbers (1e999 → inf) and lone surrogates parse, but cannot be stored.
    json.dumps(meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return meta


def _utf8_key(key: str) -> tuple[str, str | None]:
    """A key tarfile decoded with surrogate escapes (not UTF-8) → a printable key and the error."""
    try:
        key.encode("utf-8")
        return key, None
    except UnicodeEncodeError:
        raw = key.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), "the key is not valid UTF-8"


def to_raw_sample(key: str, members: dict[str, tuple[str, bytes]]) -> RawSample:
    """One sample's members ({lowercase suffix: (suffix, bytes)}) → RawSample.

    The caption comes from .txt, else from the json; the first problem found is `error`."""
    key, error = _utf8_key(key)
    error = error or key_problem(key)  # never a member name of a training tar
    meta: dict = {}
    if "json" in members:
        try:
            meta = _parse_meta(members["json"][1])
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeError, _Malformed
            error = error or f"malformed json member: {str(err)[:200]}"
    caption = ""
    if "txt" in members:
        try:
            caption = members["txt"][1].decode("utf-8")
        except UnicodeDecodeError:
            error = error or "the caption (.txt) is not valid UTF-8"
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    suffix, image = members[ext] if ext else (None, None)
    return RawSample(key, image, suffix, caption or meta.get("caption") or "", meta, error)


def _members(path: Path | str, stream, stop) -> Iterator[tuple[str, str, bytes]]:
    """(key, suffix, bytes) of each regular member, as webdataset splits names."""
    for member in tar_file_expander([{"url": str(path), "stream": stream}], handler=stop):
        if member:  # {} marks the end of the tar
            key, suffix = base_plus_ext(member["fname"])
            if key is not None:
                yield key, suffix, member["data"]


def _groups(
    members: Iterable[tuple[str, str, bytes]],
) -> Iterator[tuple[str, dict[str, tuple[str, bytes]]]]:
    """Consecutive members with one key form a sample; a suffix seen twice starts a new one."""
    key, group = "", dict[str, tuple[str, bytes]]()
    for k, suffix, data in members:
        if group and (k != key or suffix.lower() in group):
            yield key, group
            group = {}
        key = k
        group[suffix.lower()] = (suffix, data)
    if group:
        yield key, group


def iter_samples(shard: Shard, errors: list[str] | None = None) -> Iterator[RawSample]:
    """Stream a shard's samples in order.

    A damaged or unreadable tar ends the stream at the damage instead of raising; the reason
    is appended to `errors` so the caller can record it (and not mark the shard done). The
    first sample under a key is the key's (reshard's random access reads that one too); the
    2nd, 3rd … are failures renamed `KEY.dup2` …, so that every sample keeps a key of its own.
    """
    errors = errors if errors is not None else []
    n_errors = len(errors)

    def stop(exn: Exception) -> bool:
        errors.append(f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}")
        return False

    try:
        stream = _Tail(storage.open_read(shard.path))
    except MiroError as err:
        errors.append(f"cannot open the shard: {str(err).rsplit(': ', 1)[-1]}")
        return
    seen: Counter[str] = Counter()
    with stream:
        for key, members in _groups(_members(shard.path, stream, stop)):
            seen[key] += 1
            if seen[key] == 1:
                yield to_raw_sample(key, members)
                continue
            raw = to_raw_sample(f"{key}.dup{seen[key]}", members)
            raw.error = raw.error or f"duplicate key: an earlier sample of this shard is {key!r}"
            yield raw
        if len(errors) == n_errors and not stream.ends_with_marker(stop):
            errors.append(
                "truncated tar: no end-of-archive marker (samples after the cut are lost)"
            )


class _Tail:
    """A read stream that remembers its last 1024 bytes and its length.

    Python's tarfile treats a header cut short as the end of the archive, silently; a tar
    cut at a member boundary looks complete to it. Writers always end with 1024 zero bytes:
    after the members, the rest of the stream is read (a record's padding) and checked —
    for files, objects and pipes alike, without seeking."""

    def __init__(self, stream) -> None:
        self.stream, self.tail, self.size = stream, b"", 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.size += len(data)
        self.tail = (self.tail + data[-1024:])[-1024:]
        return data

    def ends_with_marker(self, stop) -> bool:
        try:
            while self.read(1 << 20):
                pass
        except Exception as exn:  # the storage's own errors: the damage is the reason
            stop(exn)
            return True
        return self.size >= 1024 and not self.size % 512 and not any(self.tail)

    def __enter__(self) -> _Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):  # a pipe's exit status was seen by the reads
            self.stream.close()


# ----------------------------------------------------------------------------
# img2dataset's side records of a shard: side information, never a reason to stop
# ----------------------------------------------------------------------------


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def download_failures(shard: Shard) -> list[dict]:
    """`samples` rows of the URLs img2dataset could not download (in its per-shard parquet,
    never in the tar). An unreadable table is logged and skipped: the tar's samples still count."""
    import polars as pl  # here, not above: training reads shards without it

    table = storage.with_suffix(shard.path, ".tar", ".parquet")
    try:
        data = storage.read_if_exists(table)
        df = None if data is None else pl.read_parquet(io.BytesIO(data))
        if df is None or "status" not in df.columns or "key" not in df.columns:
            return []
        failed = df.filter(pl.col("status").cast(pl.String) != "success").iter_rows(named=True)
        return [
            {"shard": shard.name, "key": str(row["key"]), "caption": _text(row.get("caption")),
             "url": _text(row.get("url")), "width": None, "height": None, "image_ext": None,
             "status": str(row["status"]), "error": _text(row.get("error_message")), "meta": None}
            for row in failed if row["key"] is not None and row["status"] is not None
        ]  # fmt: skip
    except (OSError, MiroError, pl.exceptions.PolarsError) as err:
        reason = first_line(err)
        log.warning("%s is unreadable, its download failures are not recorded: %s", table, reason)
        return []


def img2dataset_successes(shard: Shard) -> int | None:
    """Samples in the shard by img2dataset's `_stats.json`; None when missing or unreadable."""
    stats = storage.with_suffix(shard.path, ".tar", "_stats.json")
    try:
        data = storage.read_if_exists(stats)
        return None if data is None else int(json.loads(data).get("successes", 0))
    except (OSError, MiroError, ValueError, TypeError, AttributeError):
        return None
