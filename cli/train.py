"""`miro train` and `miro sample` (filled by the trainer work, issue 4)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to the top-level app."""
