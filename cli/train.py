"""`miro train` and `miro sample`: build the stage's config from the options and call it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.options import Commands
from miro_data.common import MiroError

if TYPE_CHECKING:
    from miro_train.config import TrainConfig
    from miro_train.export import ExportConfig
    from miro_train.sample import SampleConfig

commands = Commands()


def register(app: typer.Typer, top: Commands) -> None:
    """Add the trainer's commands to the top-level app."""
    top.include(commands)


@commands.config("train", "miro_train.config:TrainConfig", args=("shards",))
def train_cmd(cfg: TrainConfig) -> None:
    """Train a MIRO model (or the --baseline) with flow matching.

    Multi-GPU or multi-node: torchrun --nproc-per-node N .venv/bin/miro train …
    """
    from miro_train.train import train

    typer.echo(str(train(cfg)))


def read_prompts(prompt: list[str] | None, prompts_file: Path | None) -> tuple[str, ...]:
    """The --prompt texts, then the file's: one per line, or JSONL objects with 'prompt'."""
    items = list(prompt or [])
    if prompts_file is None:
        return tuple(items)
    if not prompts_file.is_file():
        raise MiroError(f"prompts file not found: {prompts_file}")
    try:
        lines = prompts_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MiroError(f"prompts file {prompts_file} is not UTF-8 text") from None
    for n, line in enumerate(map(str.strip, lines), start=1):
        if line.startswith("{"):
            try:
                line = str(json.loads(line).get("prompt", ""))
            except (json.JSONDecodeError, AttributeError):
                raise MiroError(f"{prompts_file}:{n}: not a JSON object with 'prompt'") from None
        if line:
            items.append(line)
    return tuple(items)


def _prompts(
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="A prompt (repeatable).")
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option("--prompts", help="Prompts: one per line, or JSONL with 'prompt'."),
    ] = None,
) -> dict[str, Any]:
    return {"prompts": read_prompts(prompt, prompts_file)}


@commands.config(
    "sample",
    "miro_train.sample:SampleConfig",
    args=("checkpoint",),
    flags={"sampler.guidance": ("--guidance", "-w")},
    inputs=_prompts,
)
def sample_cmd(cfg: SampleConfig) -> None:
    """Sample with multi-reward classifier-free guidance; writes PNGs, a grid and a JSONL manifest."""
    from miro_train.sample import sample

    typer.echo(str(sample(cfg)))


@commands.config("export", "miro_train.export:ExportConfig", args=("run", "out"))
def export_cmd(cfg: ExportConfig) -> None:
    """Write a run as a diffusers-style folder: MiroPipeline.from_pretrained(OUT) loads it."""
    from miro_train.export import export

    typer.echo(str(export(cfg)))
