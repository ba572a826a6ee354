"""`miro data …`: the data pipeline's commands. Each parses options into a config and calls."""

from __future__ import annotations

from pathlib import Path

import typer

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
    """Generate the Shapes World corpus (../shared/SHAPES_WORLD.md)."""
    from miro_data.synth import Degradations, SynthConfig, synth

    cfg = SynthConfig(out=out, n=n, size=size, seed=seed, degradations=Degradations.parse(degrade))
    path = synth(cfg)
    typer.echo(str(path))
