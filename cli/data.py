"""`miro data …`: the data pipeline's commands. Each parses options into a config and calls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(help="Build reward-annotated training shards.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder for images/ and urls.parquet."),
    n: int = typer.Option(20_000, "--n", help="Number of samples."),
    size: int = typer.Option(32, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed"),
    degrade: str = typer.Option(
        "",
        "--degrade",
        help="Corruption rates, e.g. 'blur=0.3,noise=0.3,contrast=0.2,jpeg=0.2,caption=0.3' "
        "(these are the defaults), or 'none'.",
    ),
) -> None:
    """Generate the Shapes World corpus (docs/shapes-world.md)."""
    from miro_data.synth import Degradations, SynthConfig, synth

    cfg = SynthConfig(out=out, n=n, size=size, seed=seed, degradations=Degradations.parse(degrade))
    path = synth(cfg)
    typer.echo(str(path))


@data_app.command("download")
def download_cmd(
    url_list: Path = typer.Argument(..., help="parquet/csv/tsv/json/jsonl with url and caption."),
    out: Path = typer.Argument(..., help="Folder for the WebDataset shards."),
    image_size: int = typer.Option(256, help="Target side for resizing."),
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = (
        typer.Option("border", help="How images are fitted to --image-size.")
    ),
    resize_only_if_bigger: bool = typer.Option(False),
    encode_format: Literal["jpg", "png", "webp"] = typer.Option("jpg"),
    encode_quality: int | None = typer.Option(None, help="Default: 95 (jpg/webp), 9 (png)."),
    processes: int = typer.Option(os.cpu_count() or 1, help="Download processes."),
    threads: int = typer.Option(32, help="Threads per process."),
    shard_size: int = typer.Option(10_000, help="Samples per shard."),
    distributor: Literal["multiprocessing", "pyspark", "ray"] = typer.Option("multiprocessing"),
    incremental: Literal["incremental", "overwrite", "extend"] = typer.Option(
        "incremental", help="incremental resumes, overwrite starts again, extend adds shards."
    ),
    timeout: int = typer.Option(10, help="Seconds per request."),
    retries: int = typer.Option(0),
    url_col: str = typer.Option("url"),
    caption_col: str = typer.Option("caption"),
    min_image_size: int = typer.Option(0),
) -> None:
    """Download images into WebDataset shards with img2dataset (relative URLs are served locally)."""
    from miro_data.download import DownloadConfig, download

    cfg = DownloadConfig(
        url_list=url_list,
        out=out,
        image_size=image_size,
        resize_mode=resize_mode,
        resize_only_if_bigger=resize_only_if_bigger,
        encode_format=encode_format,
        encode_quality=encode_quality,
        processes=processes,
        threads=threads,
        shard_size=shard_size,
        distributor=distributor,
        incremental=incremental,
        timeout=timeout,
        retries=retries,
        url_col=url_col,
        caption_col=caption_col,
        min_image_size=min_image_size,
    )
    report = download(cfg)
    table = Table(title=f"download → {report.out} ({report.shards} shards)")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("success", f"{report.successes:,}")
    for reason, n in report.failures.items():
        table.add_row(reason, f"{n:,}")
    table.add_row("total", f"{report.count:,}", style="bold")
    Console().print(table)


@data_app.command("annotate")
def annotate_cmd(
    shards: str = typer.Argument(..., help="Shard folder, one .tar, or a glob."),
    db: Path = typer.Argument(..., help="DuckDB file (created if missing)."),
    rewards: str = typer.Option(
        ..., "--rewards", "-r", help="Comma-separated reward names or module:Class."
    ),
    workers: int = typer.Option(1, help="Worker processes (one per GPU, or N CPU workers)."),
    batch_size: int = typer.Option(256, help="Images decoded per batch."),
    decode_workers: int = typer.Option(
        1, help="Decoding processes per worker, ahead of the scorer (0: decode in the worker)."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    precision: Literal["auto", "fp32", "bf16", "fp16"] = typer.Option(
        "auto", help="Autocast dtype on CUDA."
    ),
    rewards_config: Path | None = typer.Option(None, help="TOML/JSON file of per-reward options."),
    reward_option: list[str] = typer.Option(
        [], "--reward-option", help="REWARD.KEY=VALUE, repeatable."
    ),
    retry_failed: bool = typer.Option(False, help="Redo only the samples that failed."),
    max_pixels: int = typer.Option(
        4096 * 4096,
        help="Largest image decoded, in pixels (a JPEG above it is decoded at 1/2, 1/4 or 1/8 "
        "scale when that fits); larger images are recorded as decode failures.",
    ),
) -> None:
    """Score every sample with the rewards; resumable, skips what the ledger says is done."""
    from miro_data.annotate import AnnotateConfig, annotate
    from miro_data.rewards import load_reward_options, parse_reward_names

    cfg = AnnotateConfig(
        shards=shards,
        db=db,
        rewards=tuple(parse_reward_names(rewards)),
        workers=workers,
        batch_size=batch_size,
        decode_workers=decode_workers,
        device=device,
        precision=precision,
        reward_options=load_reward_options(rewards_config, reward_option),
        retry_failed=retry_failed,
        max_pixels=max_pixels,
    )
    report = annotate(cfg)
    table = Table(title=f"annotate → {db}: {report.read:,} samples read in {report.shards} shards")
    for col in ("reward", "scored", "failed"):
        table.add_column(col, justify="left" if col == "reward" else "right")
    for reward, n in report.scored.items():
        table.add_row(reward, f"{n:,}", f"{report.failed.get(reward, 0):,}")
    Console().print(table)
    if report.unreadable:
        names = ", ".join(report.unreadable[:5]) + (", …" if len(report.unreadable) > 5 else "")
        typer.echo(
            f"{len(report.unreadable)} shard(s) could not be read to their end ({names}): "
            "not marked done; see failures (stage 'read') and run again once repaired"
        )


@data_app.command("bins")
def bins_cmd(
    db: Path = typer.Argument(..., help="DuckDB file written by annotate."),
    n_bins: int = typer.Option(64, help="Quantile bins per reward (B)."),
    rewards: str | None = typer.Option(
        None, "--rewards", "-r", help="Comma-separated; default all."
    ),
    sample: int = typer.Option(100_000, help="Scores per reward used to estimate the edges."),
    seed: int = typer.Option(0),
    export: Path | None = typer.Option(None, help="Also write the edges and statistics as JSON."),
) -> None:
    """Compute per-reward quantile bin edges and statistics as a new version."""
    from miro_data.bins import BinsConfig, bins

    names = tuple(r.strip() for r in rewards.split(",") if r.strip()) if rewards else None
    cfg = BinsConfig(db=db, n_bins=n_bins, rewards=names, sample=sample, seed=seed, export=export)
    version = bins(cfg)
    typer.echo(f"bin-edge version {version} written to {db}")


@data_app.command("query")
def query_cmd(
    db: Path = typer.Argument(..., help="DuckDB file."),
    sql: str = typer.Argument(
        ..., help="One SQL statement, e.g. 'SELECT * FROM scores_wide LIMIT 5'."
    ),
    out: Path | None = typer.Option(
        None, help="Also write the result (.parquet, .csv, .json, .jsonl)."
    ),
    write: bool = typer.Option(False, help="Open the database read-write."),
    rows: int = typer.Option(40, help="Rows to print."),
) -> None:
    """Run SQL on the database and print the result as a table."""
    from miro_data.query import QueryConfig, query

    df = query(QueryConfig(db=db, sql=sql, out=out, write=write))
    table = Table(show_lines=False)
    for name, dtype in zip(df.columns, df.dtypes, strict=True):
        numeric = dtype.is_numeric()
        table.add_column(
            name, justify="right" if numeric else "left", no_wrap=numeric, max_width=60
        )
    for row in df.head(rows).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    console = Console()
    console.print(table)
    if df.height > rows:
        console.print(f"… {df.height - rows:,} more rows ({df.height:,} in all)")
    if out is not None:
        console.print(f"wrote {df.height:,} rows to {out}")


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@data_app.command("stats")
def stats_cmd(
    db: Path = typer.Argument(..., help="DuckDB file."),
    plot: Path | None = typer.Option(
        None, help="Write histograms and a correlation heat map (.png)."
    ),
    version: int | None = typer.Option(None, help="Bin-edge version (default: the latest)."),
    rewards: str | None = typer.Option(
        None, "--rewards", "-r", help="Comma-separated; default all."
    ),
) -> None:
    """Summarise each reward's scores; optionally plot histograms with bin edges."""
    from miro_data.bins import STAT_COLUMNS
    from miro_data.stats import StatsConfig, stats

    names = tuple(r.strip() for r in rewards.split(",") if r.strip()) if rewards else None
    report = stats(StatsConfig(db=db, plot=plot, version=version, rewards=names))
    title = f"bin-edge version {report.version}" if report.version else "no bin edges yet"
    table = Table(title=f"reward statistics ({title})")
    table.add_column("")
    for reward in report.stats:
        table.add_column(reward, justify="right", overflow="fold")
    table.add_row("levels", *(str(report.n_levels.get(r, "-")) for r in report.stats))
    for col in STAT_COLUMNS:
        table.add_row(col, *(_cell(row[col]) for row in report.stats.values()))
    console = Console()
    console.print(table)
    if plot is not None:
        console.print(f"plot: {plot}")


@data_app.command("reshard")
def reshard_cmd(
    shards: str = typer.Argument(..., help="The source shards (as given to annotate)."),
    db: Path = typer.Argument(..., help="DuckDB file with scores and bin edges."),
    out: Path = typer.Argument(..., help="New folder for the training shards."),
    where: str | None = typer.Option(
        None, help="SQL predicate, e.g. \"aesthetic > 5 AND caption LIKE '%dog%'\"."
    ),
    shard_size: int = typer.Option(10_000, help="Samples per output shard."),
    shuffle_seed: int = typer.Option(0),
    edges_version: int | None = typer.Option(None, help="Bin-edge version (default: the latest)."),
    rewards: str | None = typer.Option(
        None, "--rewards", "-r", help="Subset and order; default all."
    ),
    hook: list[str] = typer.Option(
        [], "--hook", help="text=MODEL or vae=MODEL: precompute into samples."
    ),
    device: str = typer.Option("cpu", help="Device for the hooks' models."),
    overwrite: bool = typer.Option(
        False, help="Replace OUT if it exists (only once the new one is complete)."
    ),
) -> None:
    """Write shuffled WebDataset shards whose samples carry scores, bins and bin values."""
    from miro_data.reshard import ReshardConfig, reshard

    names = tuple(r.strip() for r in rewards.split(",") if r.strip()) if rewards else None
    cfg = ReshardConfig(
        shards=shards,
        db=db,
        out=out,
        where=where,
        shard_size=shard_size,
        shuffle_seed=shuffle_seed,
        edges_version=edges_version,
        rewards=names,
        hooks=tuple(hook),
        device=device,
        overwrite=overwrite,
    )
    report = reshard(cfg)
    typer.echo(f"{report.samples:,} samples in {report.shards} shards → {report.out}")
    if report.excluded_unscored:
        typer.echo(f"({report.excluded_unscored:,} samples without every score were left out)")


@data_app.command("rewards")
def rewards_cmd(
    rewards_config: Path | None = typer.Option(None, help="TOML/JSON file of per-reward options."),
    reward_option: list[str] = typer.Option(
        [], "--reward-option", help="REWARD.KEY=VALUE, repeatable."
    ),
) -> None:
    """List every registered reward, where its weights are looked for, and whether they are here."""
    from miro_data.rewards import REGISTRY, RewardContext, load_reward_options

    ctx = RewardContext(options=load_reward_options(rewards_config, reward_option))
    table = Table(title="registered rewards")
    table.add_column("reward", no_wrap=True)
    for col in ("kind", "weights", "available", "what it measures"):
        table.add_column(col, overflow="fold")
    for name in sorted(REGISTRY, key=lambda n: (REGISTRY[n].learned, n)):
        spec = REGISTRY[name]
        if not spec.learned:
            table.add_row(name, "weight-free", "-", "[green]yes[/]", spec.summary)
            continue
        statuses = spec.weights(ctx) if spec.weights else []
        where = "\n".join(s.where for s in statuses)
        ok = all(s.available for s in statuses)
        table.add_row(name, "learned", where, "[green]yes[/]" if ok else "[red]no[/]", spec.summary)
    Console().print(table)
