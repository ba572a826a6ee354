"""Small pieces every stage shares: the user-facing error, atomic writes, progress bars."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


class MiroError(Exception):
    """A problem with the user's input or environment: the CLI prints it as one line."""


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back to the OS at once.

    By default every block above 128 KB–32 MB is mmap'ed and unmapped on free, so each
    image-sized numpy temporary and each CPU activation page-faults afresh:
    benchmarks/bench_malloc.py measured the weight-free rewards 1.23× and a unet-tiny
    training step 1.14× faster with this set. The price is a process that stays at its peak
    memory. Idempotent; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: glibc's maximum; fixes it there
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: give the heap top back past 1 GiB only
        libc.mallopt(-2, 64 << 20)  # M_TOP_PAD: grow the heap in large steps


def check_identifier(name: str, what: str = "name") -> str:
    """Reward names become SQL columns and file names: keep them to [a-z][a-z0-9_]*."""
    if not IDENTIFIER.match(name):
        raise MiroError(f"invalid {what} {name!r}: use lowercase letters, digits and '_'")
    return name


def check_count(option: str, value: object, low: int, high: int | None = None) -> int:
    """An integer option within [low, high], or a one-line MiroError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MiroError(f"{option} must be an integer, not {value!r}")
    if value < low:
        raise MiroError(f"{option} must be {low} or more, not {value}")
    if high is not None and value > high:
        raise MiroError(f"{option} must be at most {high:,}, not {value:,}")
    return value


def require_file(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise MiroError(f"{what} not found: {path}")
    return path


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the previous file intact.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def check_output(path: str | Path, what: str, keep: tuple[Path, ...] = ()) -> Path:
    """Refuse an output path that cannot be written, or that would replace one of `keep`
    (the database), before any work or database change.

    The nearest existing ancestor must be a writable folder (atomic_path makes the rest);
    `output_file` still turns a later failure (disk full, a race) into a one-line error.
    """
    path = Path(path)
    resolved = path.resolve()
    for precious in keep:
        if resolved in (Path(precious).resolve(), Path(f"{precious}.wal").resolve()):
            raise MiroError(f"{what} {path} would overwrite {precious}")
    if path.is_dir():
        raise MiroError(f"cannot write {what} {path}: it is a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MiroError(f"cannot write {what} {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise MiroError(f"cannot write {what} {path}: {ancestor} is not writable")
    return path


@contextlib.contextmanager
def output_file(final: str | Path, what: str) -> Iterator[Path]:
    """`atomic_path` for a file the user named: OS errors become one-line MiroErrors."""
    check_output(final, what)
    try:
        with atomic_path(final) as tmp:
            yield tmp
    except OSError as err:
        raise MiroError(f"cannot write {what} {final}: {err.strerror or err}") from None


class RateColumn(ProgressColumn):
    """Items per second, e.g. '812.4 img/s'."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


def progress_bar(unit: str = "img", disable: bool | None = None) -> Progress:
    """A rich progress bar with a rate column, drawn on stderr.

    Library code may show progress (long work must), but never configures logging.
    Set MIRO_NO_PROGRESS=1 to silence bars, e.g. in scripts.
    """
    if disable is None:
        disable = bool(os.environ.get("MIRO_NO_PROGRESS"))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        disable=disable,
        transient=False,
    )
