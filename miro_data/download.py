"""Stage `miro data download`: a URL list → WebDataset shards, with img2dataset doing the work.

img2dataset writes, per shard, `NNNNN.tar` (image, caption, json with every extra URL-list
column), `NNNNN.parquet` (every row, failures included, with status and error message) and
`NNNNN_stats.json`. URLs without a scheme are paths (relative ones to the URL list's folder):
they become `file://` URLs, which img2dataset's urllib reads directly, so a local corpus takes
the path a remote one does and every sample keeps its file's real location as its `url`.
On a cluster (`--distributor ray` / `pyspark` over several nodes) every node reads those
`file://` URLs, and writes a local OUT, itself: both must be on a filesystem shared at the same
path — or the images served over http(s) and OUT a bucket. The URL list and OUT may be
fsspec URLs (`s3://bucket/prefix`, credentials from the standard environment); img2dataset
writes through fsspec.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal, get_args

import polars as pl

from miro_data.checks import check_choice, check_int, check_nonempty_text, check_positive
from miro_data.common import MiroError, require_file
from miro_data.download_engines import ray_cluster, require_engine
from miro_data.options import opt
from miro_data.processes import output_lock
from miro_data.raycluster import check_ray_address
from miro_data.storage import filesystem

log = logging.getLogger(__name__)

_READERS: dict[str, Callable[[Path | IO[bytes]], pl.DataFrame]] = {
    ".parquet": pl.read_parquet,
    ".csv": pl.read_csv,
    ".tsv": lambda p: pl.read_csv(p, separator="\t"),
    ".json": lambda p: pl.read_json(p),  # type: ignore[arg-type]  # an IO[bytes] is an IOBase
    ".jsonl": pl.read_ndjson,
}
_DEFAULT_QUALITY = {"jpg": 95, "webp": 95, "png": 9}
_MAX_QUALITY = {"jpg": 100, "webp": 100, "png": 9}  # png: the zlib compression level
ResizeMode = Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"]
EncodeFormat = Literal["jpg", "png", "webp"]
Distributor = Literal["multiprocessing", "pyspark", "ray"]
Incremental = Literal["incremental", "overwrite", "extend"]
RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)
DISTRIBUTORS: tuple[Distributor, ...] = get_args(Distributor)
INCREMENTAL: tuple[Incremental, ...] = get_args(Incremental)


def _location(value: str | Path) -> str:
    """A path as text, a `file://` URL as its path (so a local OUT is locked as one), and
    another URL without a trailing '/' (img2dataset appends '/NNNNN.tar' to it)."""
    text = str(value)
    if text.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(text).path)
    if "://" in text and not text.endswith("://"):
        return text.rstrip("/")
    return text


@dataclass(frozen=True)
class DownloadConfig:
    """img2dataset's options that matter, with defaults for a laptop or one node."""

    url_list: str = field(
        metadata=opt(
            help="parquet/csv/tsv/json/jsonl with url and caption; a path or a URL "
            "(s3://bucket/urls.parquet). Paths in it become file:// URLs: on a cluster, "
            "every node must see them on a shared filesystem."
        )
    )
    out: str = field(
        metadata=opt(help="Folder or bucket prefix (s3://bucket/shards) for the WebDataset shards.")
    )
    image_size: int = field(default=256, metadata=opt(help="Target side for resizing."))
    resize_mode: ResizeMode = field(
        default="border", metadata=opt(help="How images are fitted to --image-size.")
    )
    resize_only_if_bigger: bool = field(default=False, metadata=opt())
    encode_format: EncodeFormat = field(default="jpg", metadata=opt())
    encode_quality: int | None = field(
        default=None, metadata=opt(help="Default: 95 (jpg/webp), 9 (png).")
    )
    processes: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata=opt(help="Download processes (ray: the CPUs of the local Ray it starts)."),
    )
    threads: int = field(default=32, metadata=opt(help="Threads per process."))
    shard_size: int = field(default=10_000, metadata=opt(help="Samples per shard."))
    distributor: Distributor = field(
        default="multiprocessing",
        metadata=opt(help="img2dataset's engine: one machine or a cluster."),
    )
    ray_address: str | None = field(
        default=None,
        metadata=opt(
            help="--distributor ray: auto, HOST:PORT or ray://HOST:PORT of a running cluster; "
            "unset: start a local Ray."
        ),
    )
    incremental: Incremental = field(
        default="incremental",
        metadata=opt(help="incremental resumes, overwrite starts again, extend adds shards."),
    )
    timeout: int = field(default=10, metadata=opt(help="Seconds per request."))
    retries: int = field(default=0, metadata=opt())
    url_col: str = field(default="url", metadata=opt())
    caption_col: str = field(default="caption", metadata=opt())
    min_image_size: int = field(default=0, metadata=opt())
    max_aspect_ratio: float = math.inf

    def __post_init__(self) -> None:
        # a Path is welcome from Python callers; a URL must stay text (Path drops a '/')
        object.__setattr__(self, "url_list", _location(self.url_list))
        object.__setattr__(self, "out", _location(self.out))
        for name in ("image_size", "processes", "threads", "shard_size", "timeout"):
            check_positive(f"--{name.replace('_', '-')}", getattr(self, name))
        check_int("--retries", self.retries, 0)
        check_int("--min-image-size", self.min_image_size, 0)
        check_choice("--resize-mode", self.resize_mode, RESIZE_MODES)
        check_choice("--encode-format", self.encode_format, tuple(_DEFAULT_QUALITY))
        check_choice("--distributor", self.distributor, DISTRIBUTORS)
        check_choice("--incremental", self.incremental, INCREMENTAL)
        if self.encode_quality is not None:
            check_int("--encode-quality", self.encode_quality, 0)
            if self.encode_quality > _MAX_QUALITY[self.encode_format]:
                top = _MAX_QUALITY[self.encode_format]
                raise MiroError(f"--encode-quality for {self.encode_format} is 0 to {top}")
        check_nonempty_text("--url-col", self.url_col)
        check_nonempty_text("--caption-col", self.caption_col)
        if isinstance(self.max_aspect_ratio, bool) or not self.max_aspect_ratio > 0:
            raise MiroError(f"max_aspect_ratio must be positive, not {self.max_aspect_ratio}")
        if self.ray_address is not None and self.distributor != "ray":
            raise MiroError("--ray-address is for --distributor ray")
        if self.ray_address is not None:
            check_ray_address(self.ray_address)


@dataclass(frozen=True)
class DownloadReport:
    """What the download produced, summed over every shard's stats."""

    out: str
    shards: int
    count: int
    successes: int
    failures: dict[str, int]  # reason → count


def through_fsspec(location: str | Path) -> bool:
    """`s3://…`, `gs://…`, `file://…`: a location this stage opens with fsspec, not as a local
    path. Unlike `storage.is_url`, `file://` counts: img2dataset is given it as it is."""
    return "://" in str(location)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _open_table(location: str) -> Path | IO[bytes]:
    """A local URL list as its path; one in a bucket read into memory (it is one table)."""
    if not through_fsspec(location):
        return require_file(location, "URL list")
    fs, path = filesystem(location)
    try:
        with fs.open(path, "rb") as f:
            return io.BytesIO(f.read())
    except FileNotFoundError:
        raise MiroError(f"URL list not found: {location}") from None
    except Exception as err:  # auth, endpoint, network: each is one line naming the cause
        raise MiroError(f"URL list {location} could not be read: {_reason(err)}") from None


def read_url_list(location: str | Path, url_col: str, caption_col: str) -> pl.DataFrame:
    """The URL list as a DataFrame, checked for its url and caption columns."""
    location = str(location)
    reader = _READERS.get(PurePosixPath(location).suffix.lower())
    if reader is None:
        if not through_fsspec(location):
            require_file(location, "URL list")  # a missing file says so, whatever its name
        raise MiroError(f"URL list {location}: unsupported format; use {', '.join(_READERS)}")
    source = _open_table(location)
    try:
        df = reader(source)
    except Exception as err:  # polars raises many kinds; all mean "not a readable table"
        raise MiroError(f"URL list {location} could not be read: {err}") from None
    missing = [c for c in (url_col, caption_col) if c not in df.columns]
    if missing:
        raise MiroError(
            f"URL list {location} lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)})"
        )
    if df.height == 0:
        raise MiroError(f"URL list {location} is empty")
    return df


def file_urls(urls: pl.Series, root: Path) -> pl.Series:
    """Each URL with a scheme as it is; a path (relative: to `root`) as its absolute
    `file://` URL, which keeps where the file really is in the sample's `url`."""
    base = root.resolve()

    def to_url(url: str | None) -> str | None:
        if url is None or "://" in url:
            return url
        return (base / url).resolve().as_uri()  # `..` resolved; spaces, ?, # percent-encoded

    return urls.map_elements(to_url, return_dtype=pl.String).alias("url")


def _absolute_urls(df: pl.DataFrame, location: str) -> pl.DataFrame:
    """Paths → file:// URLs; a list in a bucket has no folder its paths could be read from."""
    if not through_fsspec(location):
        return df.with_columns(file_urls(df["url"], Path(location).parent))
    paths = df.filter(pl.col("url").is_not_null() & ~pl.col("url").str.contains("://"))
    if paths.height:
        raise MiroError(
            f"URL list {location} holds paths ({paths['url'][0]!r}, {paths.height:,} in all): "
            "a URL list in a bucket needs full URLs (http(s):// or file://)"
        )
    return df


def summarize(out: str | Path) -> DownloadReport:
    """Sum img2dataset's per-shard `*_stats.json` files (in a folder or under a bucket prefix)."""
    out = str(out)
    if through_fsspec(out):
        fs, path = filesystem(out)
        fs.invalidate_cache()  # written by other processes since this one last listed
        pattern = f"{path.rstrip('/')}/*_stats.json"
        texts = [fs.cat_file(p).decode() for p in sorted(fs.glob(pattern))]
    else:
        texts = [p.read_text() for p in sorted(Path(out).glob("*_stats.json"))]
    stats = [json.loads(text) for text in texts]
    failures: Counter[str] = Counter()
    for s in stats:
        for reason, n in s.get("status_dict", {}).items():
            if reason != "success":
                failures[reason] += n
    return DownloadReport(
        out=out,
        shards=len(stats),
        count=sum(s["count"] for s in stats),
        successes=sum(s["successes"] for s in stats),
        failures=dict(failures.most_common()),
    )


def _check_writable(out: str) -> None:
    """Write and remove one empty object under a URL output: a missing bucket, a wrong
    endpoint or credentials are one line now, before img2dataset or Ray start."""
    fs, path = filesystem(out)
    probe = f"{path.rstrip('/')}/.miro-write-probe-{os.getpid()}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as err:
        raise MiroError(f"cannot write {out}: {_reason(err)}") from None


@contextlib.contextmanager
def _owned_output(out: str) -> Iterator[None]:
    """A local folder is locked for the run and created; a bucket prefix cannot be locked
    (object stores have no flock), so two runs into one prefix are the user's to avoid."""
    if through_fsspec(out):
        _check_writable(out)
        yield
        return
    with output_lock(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        yield


def _run_img2dataset(cfg: DownloadConfig, url_list: Path, extra: list[str]) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else it asks PyPI on import
    import img2dataset

    quality = cfg.encode_quality
    if quality is None:
        quality = _DEFAULT_QUALITY.get(cfg.encode_format, 95)
    img2dataset.download(
        url_list=str(url_list),
        output_folder=cfg.out,
        input_format="parquet",
        output_format="webdataset",
        url_col="url",
        caption_col="caption",
        save_additional_columns=extra or None,
        image_size=cfg.image_size,
        resize_mode=cfg.resize_mode,
        resize_only_if_bigger=cfg.resize_only_if_bigger,
        encode_format=cfg.encode_format,
        encode_quality=quality,
        processes_count=cfg.processes,
        thread_count=cfg.threads,
        number_sample_per_shard=cfg.shard_size,
        distributor=cfg.distributor,
        incremental_mode=cfg.incremental,
        timeout=cfg.timeout,
        retries=cfg.retries,
        min_image_size=cfg.min_image_size,
        max_aspect_ratio=cfg.max_aspect_ratio,
        enable_wandb=False,
    )


@contextlib.contextmanager
def _engine(cfg: DownloadConfig, local_files: bool) -> Iterator[None]:
    """The distributor's engine for the block (Ray connected or started; others need nothing)."""
    if cfg.distributor != "ray":
        if local_files and cfg.distributor == "pyspark":
            log.info("file:// URLs and a local OUT: on a cluster, every node must share them")
        yield
        return
    with ray_cluster(cfg.ray_address, cfg.processes) as nodes:
        if nodes > 1 and local_files:
            log.warning(
                "Ray has %d nodes: each reads file:// URLs and writes a local OUT itself, so "
                "both must be on a filesystem shared at the same path (or use http(s) and a bucket)",
                nodes,
            )
        yield


def download(cfg: DownloadConfig) -> DownloadReport:
    """Download every URL of the list into WebDataset shards under cfg.out."""
    require_engine(cfg.distributor)
    df = read_url_list(cfg.url_list, cfg.url_col, cfg.caption_col)
    df = df.rename({cfg.url_col: "url", cfg.caption_col: "caption"})
    extra = [c for c in df.columns if c not in ("url", "caption")]
    df = _absolute_urls(df, cfg.url_list)
    has_files = df.filter(pl.col("url").str.starts_with("file://")).height > 0
    # Ray first: an unreachable cluster is refused before anything is written
    with _engine(cfg, has_files or not through_fsspec(cfg.out)), _owned_output(cfg.out):
        # img2dataset reads one parquet on this (the driver's) machine
        with tempfile.TemporaryDirectory(prefix="miro-download-") as tmp:
            staged = Path(tmp) / "urls.parquet"
            df.write_parquet(staged)
            _run_img2dataset(cfg, staged, extra)
        if through_fsspec(cfg.out):  # img2dataset leaves its shard lists behind in a bucket
            fs, path = filesystem(cfg.out)
            with contextlib.suppress(FileNotFoundError):
                fs.rm(f"{path.rstrip('/')}/_tmp", recursive=True)
        report = summarize(cfg.out)
    log.info(
        "%d of %d images downloaded into %d shards at %s",
        report.successes,
        report.count,
        report.shards,
        cfg.out,
    )
    return report
