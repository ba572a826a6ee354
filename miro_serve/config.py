"""The frozen configuration of `miro serve` and the user errors its routes raise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from miro_data.common import MiroError


@dataclass(frozen=True)
class ServeConfig:
    """Which corpus and run to show, where to listen, and the limits of the Query page."""

    db: Path
    shards: str | None = None  # the source shards (folder, .tar or glob); no images without
    run: Path | None = None  # a checkpoint or run folder: enables Generate
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"  # for Generate
    weights: str = "ema"
    max_rows: int = 100_000  # rows a query can page through or export
    query_seconds: float = 10.0  # a query running longer is interrupted
    thumb_side: int = 128  # thumbnails fit in this square
    thumb_cache_mb: int = 64


class BadRequest(MiroError):
    """A bad parameter or query: shown on the page with status 400."""

    status = 400


class NotFound(BadRequest):
    """An unknown shard, key, reward or page: status 404."""

    status = 404
