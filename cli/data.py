"""`miro data …`: the data pipeline's commands. Each builds its stage's config and calls it;
the options are declared on the config's fields (cli/options.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.options import Commands
from cli.parse import RewardOption, RewardsConfig, reward_options

if TYPE_CHECKING:
    from pathlib import Path

    import polars as pl

    from miro_data.annotate import AnnotateConfig
    from miro_data.bins import BinsConfig
    from miro_data.download import DownloadConfig
    from miro_data.export import ExportConfig
    from miro_data.query import QueryConfig
    from miro_data.reshard import ReshardConfig
    from miro_data.stats import StatsConfig
    from miro_data.synth import SynthConfig

commands = Commands()
data_app = typer.Typer(
    cls=commands.group(), help="Build reward-annotated training shards.", no_args_is_help=True
)


def register(app: typer.Typer, top: Commands) -> None:
    app.add_typer(data_app, name="data")


@commands.config("synth", "miro_data.synth:SynthConfig", args=("out",))
def synth_cmd(cfg: SynthConfig) -> None:
    """Generate the Shapes World corpus (docs/shapes-world.md)."""
    from miro_data.synth import synth

    typer.echo(str(synth(cfg)))


@commands.config("download", "miro_data.download:DownloadConfig", args=("url_list", "out"))
def download_cmd(cfg: DownloadConfig) -> None:
    """Download images into WebDataset shards with img2dataset (local paths read as file:// URLs)."""
    from miro_data.download import download

    report = download(cfg)
    table = Table(title=f"download → {report.out} ({report.shards} shards)")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("success", f"{report.successes:,}")
    for reason, n in report.failures.items():
        table.add_row(reason, f"{n:,}")
    table.add_row("total", f"{report.count:,}", style="bold")
    Console().print(table)


@commands.config(
    "annotate", "miro_data.annotate:AnnotateConfig", args=("shards", "db"), inputs=reward_options
)
def annotate_cmd(cfg: AnnotateConfig) -> None:
    """Score every sample with the rewards; resumable, skips what the ledger says is done."""
    from miro_data.annotate import annotate

    report = annotate(cfg)
    if report.skipped == report.shards and not report.unreadable:
        typer.echo(
            f"nothing to do: every shard × reward is already in the ledger of {cfg.db} "
            f"({report.shards:,} shards, {report.read:,} samples)"
        )
        return
    table = Table(
        title=f"annotate → {cfg.db}: {report.read:,} samples read in {report.shards} shards"
    )
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


@commands.config("bins", "miro_data.bins:BinsConfig", args=("db",))
def bins_cmd(cfg: BinsConfig) -> None:
    """Compute per-reward quantile bin edges and statistics as a new version."""
    from miro_data.bins import bins

    typer.echo(f"bin-edge version {bins(cfg)} written to {cfg.db}")


@commands.config("query", "miro_data.query:QueryConfig", args=("db", "sql"))
def query_cmd(
    cfg: QueryConfig, rows: Annotated[int, typer.Option(help="Rows to print.")] = 40
) -> None:
    """Run SQL on the database and print the result as a table."""
    from miro_data.query import cell, fit_columns, query, render_text

    df = query(cfg)
    shown = df.head(rows)
    console = Console()
    if cfg.format != "table":  # stdout holds the rows only; notes go to stderr
        typer.echo(render_text(shown, cfg.format))
        _notes(Console(stderr=True), df, rows, cfg.out)
        return
    fits, left_out = fit_columns(shown, console.width)
    table = Table(show_lines=False)
    for fit in fits:
        table.add_column(
            fit.name, justify="right" if fit.numeric else "left", no_wrap=True,
            overflow="ellipsis", width=fit.width,
        )  # fmt: skip
    for row in shown.select([f.name for f in fits]).iter_rows():
        table.add_row(*(cell(v) for v in row))
    console.print(table)
    if left_out:
        console.print(
            f"… {left_out} more column(s) ({', '.join(df.columns[len(fits):])}): select "
            "fewer, widen the terminal, or use --format csv|json",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    _notes(console, df, rows, cfg.out)


def _notes(console: Console, df: pl.DataFrame, rows: int, out: Path | None) -> None:
    if df.height > rows:
        console.print(f"… {df.height - rows:,} more rows ({df.height:,} in all)")
    if out is not None:
        console.print(f"wrote {df.height:,} rows to {out}")


@commands.config("export", "miro_data.export:ExportConfig", args=("db", "out"))
def export_cmd(cfg: ExportConfig) -> None:
    """Write the database as partitioned parquet (samples, scores_wide, failures, ledger,
    bin_edges), which every engine reads."""
    from miro_data.export import export

    counts = export(cfg)
    typer.echo(f"{cfg.out}: " + ", ".join(f"{n:,} {table}" for table, n in counts.items()))


@commands.config("stats", "miro_data.stats:StatsConfig", args=("db",))
def stats_cmd(cfg: StatsConfig) -> None:
    """Summarise each reward's scores; optionally plot histograms with bin edges."""
    from miro_data.bins import STAT_COLUMNS
    from miro_data.query import cell
    from miro_data.stats import stats

    report = stats(cfg)
    title = f"bin-edge version {report.version}" if report.version else "no bin edges yet"
    table = Table(title=f"reward statistics ({title})")
    table.add_column("")
    for reward in report.stats:
        table.add_column(reward, justify="right", overflow="fold")
    table.add_row("levels", *(str(report.n_levels.get(r, "-")) for r in report.stats))
    for col in STAT_COLUMNS:
        table.add_row(col, *(cell(row[col]) for row in report.stats.values()))
    console = Console()
    console.print(table)
    if cfg.plot is not None:
        console.print(f"plot: {cfg.plot}")


@commands.config("reshard", "miro_data.reshard:ReshardConfig", args=("shards", "db", "out"))
def reshard_cmd(cfg: ReshardConfig) -> None:
    """Write shuffled WebDataset shards whose samples carry scores, bins and bin values."""
    from miro_data.reshard import reshard

    report = reshard(cfg)
    typer.echo(f"{report.samples:,} samples in {report.shards} shards → {report.out}")
    if report.excluded_unscored:
        typer.echo(f"({report.excluded_unscored:,} samples without every score were left out)")


@commands.plain("rewards")
def rewards_cmd(rewards_config: RewardsConfig = None, reward_option: RewardOption = None) -> None:
    """List every registered reward, where its weights are looked for, and whether they are here."""
    from miro_data.rewards import REGISTRY, RewardContext

    ctx = RewardContext(options=reward_options(rewards_config, reward_option)["reward_options"])
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
