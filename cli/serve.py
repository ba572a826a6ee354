"""`miro serve`: parse options into a ServeConfig and run the web app."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    db: Path = typer.Argument(..., help="The annotated DuckDB database (opened read-only)."),
    shards: str | None = typer.Option(
        None, "--shards", help="Source shards (folder, .tar or glob) for the images."
    ),
    run: Path | None = typer.Option(
        None, "--run", help="A checkpoint or run folder: enables the Generate page."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port)."),
    device: str = typer.Option("cpu", "--device", help="Device for Generate: cpu | cuda | auto."),
    max_rows: int = typer.Option(100_000, "--max-rows", help="Rows a query can show or export."),
    query_seconds: float = typer.Option(
        10.0, "--query-seconds", help="A query running longer is stopped."
    ),
) -> None:
    """Explore the corpus (Overview, Bins, Query, Sample) and steer a model (Generate) in a browser."""
    from miro_data.common import MiroError
    from miro_serve import ServeConfig, serve

    if max_rows < 1 or not query_seconds > 0:
        raise MiroError("--max-rows and --query-seconds must be positive")
    cfg = ServeConfig(
        db=db, shards=shards, run=run, host=host, port=port, device=device,
        max_rows=max_rows, query_seconds=query_seconds,
    )  # fmt: skip
    serve(cfg)
