"""The `miro` command: parses arguments, configures output, calls the library.

Each command lives in the module of its group (cli/data.py, cli/train.py, …) and does only
two things: build the stage's frozen config from the options, and call the stage function.
The options are declared on the config's fields; cli/options.py makes them Typer parameters.
Errors a user can fix (MiroError) print as one line on stderr with exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import typer
from rich.logging import RichHandler
from rich.markup import escape

from cli.options import Commands, LazyGroup
from miro_data.common import MiroError, first_line, stderr_console, user_os_error

err_console = stderr_console()  # the progress bars' console too: logs go above the bars


def _database_error(err: Exception) -> str | None:
    """DuckDB's I/O failures (full disk, unwritable file) name the file: print that line."""
    duckdb = sys.modules.get("duckdb")
    if duckdb is None or not isinstance(err, duckdb.IOException | duckdb.PermissionException):
        return None
    return f"database: {first_line(err)}"


def _fail(message: str, code: int) -> NoReturn:
    # escaped: a message's own brackets (pip install "miro[ray]", a path) are not markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


class MiroGroup(LazyGroup):
    """Turns user errors raised anywhere below into one clean line and a non-zero exit.

    Usage errors (a wrong type, a missing argument, an unknown option or choice: Click's
    exceptions, typer.TyperException in typer's vendored Click) pass through to Click, which
    prints the usage and exits with status 2.
    """

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MiroError as err:
            _fail(str(err), 2)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.TyperException, typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as err:  # disk full, read-only, a file where a folder must be…
            mapped = user_os_error(err)
            message = str(mapped) if mapped is not None else _database_error(err)
            if message is None:
                self._internal(err)
            _fail(message, 2)

    @staticmethod
    def _internal(err: Exception) -> NoReturn:
        """A bug, not a user error: say so, keep it short."""
        if os.environ.get("MIRO_DEBUG"):
            raise err
        err_console.print(
            f"[bold red]internal error:[/] {type(err).__name__}: {escape(str(err))} "
            "(set MIRO_DEBUG=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


top_commands = Commands()  # train, sample, report: registered by their modules below
app = typer.Typer(
    cls=top_commands.group(MiroGroup),
    help="MIRO: multi-reward conditioned pretraining of text-to-image models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"miro {version('miro')}")
        except PackageNotFoundError:  # a source tree that was never installed
            typer.echo("miro (not installed: version unknown)")
        raise typer.Exit(0)


@app.callback()
def _configure(
    _show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, markup=False)],
        force=True,
    )
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for name in ("img2dataset", "httpx", "urllib3", "PIL", "matplotlib", "fsspec", "botocore",
                 "aiobotocore", "s3fs", "ray"):  # fmt: skip
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def _register_groups() -> None:
    from cli import data, evaluate, experiment, serve, train

    for module in (data, train, evaluate, experiment, serve):
        module.register(app, top_commands)


_register_groups()


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from miro_data.common import keep_freed_memory

    keep_freed_memory()  # image-sized temporaries everywhere: see its docstring
    app(prog_name="miro")
    sys.exit(0)


if __name__ == "__main__":
    main()
