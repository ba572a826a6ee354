"""The frozen configuration of `miro serve` and the user errors its routes raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from miro_data.checks import check_choice, check_device, check_finite, check_positive
from miro_data.common import MiroError
from miro_data.hub import allow_download_field
from miro_data.options import opt


@dataclass(frozen=True)
class ServeConfig:
    """Which corpus and run to show, where to listen, and the limits of the Query page."""

    db: Path = field(metadata=opt(help="The annotated DuckDB database (opened read-only)."))
    shards: str | None = field(
        default=None, metadata=opt(help="Source shards (folder, .tar or glob) for the images.")
    )
    run: Path | None = field(
        default=None, metadata=opt(help="A checkpoint or run folder: enables the Generate page.")
    )
    host: str = field(default="127.0.0.1", metadata=opt(help="Interface to listen on."))
    port: int = field(default=8000, metadata=opt(help="Port (0: any free port)."))
    device: str = field(
        default="cpu", metadata=opt(help="Device for Generate: cpu | cuda | cuda:N | auto.")
    )
    weights: str = "ema"
    allow_download: bool = allow_download_field(
        "the model's text encoder or VAE (or a Select-by reward's weights)"
    )
    max_rows: int = field(
        default=100_000, metadata=opt(help="Rows a query can page through or export.")
    )
    query_seconds: float = field(
        default=10.0, metadata=opt(help="A query running longer is stopped.")
    )
    thumb_side: int = 128  # thumbnails fit in this square
    thumb_cache_mb: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise MiroError(f"--port must be between 0 and 65535, not {self.port}")
        check_device("--device", self.device)
        check_choice("weights", self.weights, ("ema", "model"))
        check_positive("--max-rows", self.max_rows)
        check_finite("--query-seconds", self.query_seconds, 0, open_low=True)
        check_positive("thumb_side", self.thumb_side)
        check_positive("thumb_cache_mb", self.thumb_cache_mb)


class BadRequest(MiroError):
    """A bad parameter or query: shown on the page with status 400."""

    status = 400


class NotFound(BadRequest):
    """An unknown shard, key, reward or page: status 404."""

    status = 404
