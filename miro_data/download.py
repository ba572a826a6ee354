"""Stage `miro data download`: a URL list → WebDataset shards, with img2dataset doing the work.

img2dataset writes, per shard, `NNNNN.tar` (image, caption, json with every extra URL-list
column), `NNNNN.parquet` (every row, failures included, with status and error message) and
`NNNNN_stats.json`. URLs without a scheme are paths (relative ones to the URL list's folder):
they become `file://` URLs, which img2dataset's urllib reads directly, so a local corpus takes
the path a remote one does and every sample keeps its file's real location as its `url`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import polars as pl

from miro_data.checks import check_choice, check_int, check_nonempty_text, check_positive
from miro_data.common import MiroError, require_file
from miro_data.options import opt
from miro_data.processes import owns_output

log = logging.getLogger(__name__)

_READERS: dict[str, Callable[[Path], pl.DataFrame]] = {
    ".parquet": pl.read_parquet,
    ".csv": pl.read_csv,
    ".tsv": lambda p: pl.read_csv(p, separator="\t"),
    ".json": pl.read_json,
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


@dataclass(frozen=True)
class DownloadConfig:
    """img2dataset's options that matter, with defaults for a laptop or one node."""

    url_list: Path = field(metadata=opt(help="parquet/csv/tsv/json/jsonl with url and caption."))
    out: Path = field(metadata=opt(help="Folder for the WebDataset shards."))
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
        default_factory=lambda: os.cpu_count() or 1, metadata=opt(help="Download processes.")
    )
    threads: int = field(default=32, metadata=opt(help="Threads per process."))
    shard_size: int = field(default=10_000, metadata=opt(help="Samples per shard."))
    distributor: Distributor = field(default="multiprocessing", metadata=opt())
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


@dataclass(frozen=True)
class DownloadReport:
    """What the download produced, summed over every shard's stats."""

    out: Path
    shards: int
    count: int
    successes: int
    failures: dict[str, int]  # reason → count


def read_url_list(path: Path, url_col: str, caption_col: str) -> pl.DataFrame:
    """The URL list as a DataFrame, checked for its url and caption columns."""
    require_file(path, "URL list")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise MiroError(f"URL list {path}: unsupported format; use {', '.join(_READERS)}")
    try:
        df = reader(path)
    except Exception as err:  # polars raises many kinds; all mean "not a readable table"
        raise MiroError(f"URL list {path} could not be read: {err}") from None
    missing = [c for c in (url_col, caption_col) if c not in df.columns]
    if missing:
        raise MiroError(
            f"URL list {path} lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)})"
        )
    if df.height == 0:
        raise MiroError(f"URL list {path} is empty")
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


def summarize(out: Path) -> DownloadReport:
    """Sum img2dataset's per-shard `*_stats.json` files."""
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
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


def _run_img2dataset(cfg: DownloadConfig, url_list: Path, extra: list[str]) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else it asks PyPI on import
    import img2dataset

    quality = cfg.encode_quality
    if quality is None:
        quality = _DEFAULT_QUALITY.get(cfg.encode_format, 95)
    img2dataset.download(
        url_list=str(url_list),
        output_folder=str(cfg.out),
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


@owns_output  # one process writes an output folder at a time
def download(cfg: DownloadConfig) -> DownloadReport:
    """Download every URL of the list into WebDataset shards under cfg.out."""
    df = read_url_list(cfg.url_list, cfg.url_col, cfg.caption_col)
    df = df.rename({cfg.url_col: "url", cfg.caption_col: "caption"})
    extra = [c for c in df.columns if c not in ("url", "caption")]
    cfg.out.mkdir(parents=True, exist_ok=True)
    # img2dataset reads one parquet; paths in it become file:// URLs.
    staged = cfg.out / "_url_list.parquet"
    try:
        df.with_columns(file_urls(df["url"], cfg.url_list.parent)).write_parquet(staged)
        _run_img2dataset(cfg, staged, extra)
    finally:
        staged.unlink(missing_ok=True)
    report = summarize(cfg.out)
    log.info(
        "%d of %d images downloaded into %d shards at %s",
        report.successes,
        report.count,
        report.shards,
        cfg.out,
    )
    return report
