"""`miro serve`: build a ServeConfig from the options and run the web app."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cli.options import Commands

if TYPE_CHECKING:
    from miro_serve.config import ServeConfig

commands = Commands()


def register(app: typer.Typer, top: Commands) -> None:
    """Add `miro serve` to the top-level app."""
    top.include(commands)


@commands.config("serve", "miro_serve.config:ServeConfig", args=("db",))
def serve_cmd(cfg: ServeConfig) -> None:
    """Explore the corpus (Overview, Bins, Query, Sample) and steer a model (Generate) in a browser."""
    from miro_serve import serve

    serve(cfg)
