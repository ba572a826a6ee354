"""Small pieces every stage shares: the user-facing error, atomic writes, progress bars."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------
# Processes: one owner per output, children that die with their parent, fault points
# ----------------------------------------------------------------------------


def lock_path(out: str | Path) -> Path:
    """The lock file of an output: a hidden sibling, since the output itself may be swapped."""
    out = Path(out).resolve()
    if not out.name:
        raise MiroError(f"{out} cannot be an output (choose a folder below it)")
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Own `out` (a folder or a database) for the block: a second process is refused in one line.

    A flock is dropped by the kernel when its process dies, so a kill -9 leaves no stale lock.
    The lock file is removed on release, while still held; a process that opened it just
    before notices (the path no longer names its file) and locks the new one instead.
    """
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, Path(out))
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)


R = TypeVar("R")


def owns_output(stage: Callable[[Any], R]) -> Callable[[Any], R]:
    """Decorate a stage `stage(cfg)` that writes `cfg.out`: it runs holding that output's lock."""

    @functools.wraps(stage)
    def run(cfg: Any) -> R:
        with output_lock(cfg.out):
            return stage(cfg)

    return run


def _acquire(path: Path, out: Path) -> int | None:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise MiroError(f"cannot lock {out}: {err.strerror} ({path})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise MiroError(
                f"{out} is in use by another miro process{f' (pid {holder})' if holder else ''}: "
                "wait for it to finish, or choose another output"
            ) from None
        except OSError as err:
            # a filesystem without locks (some network mounts): work unprotected, not at all
            os.close(fd)
            log.warning("cannot lock %s (%s): nothing stops a second process writing it", out, err)
            return None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        os.close(fd)  # its owner removed the file between our open and our lock: take the new one


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this child process when its parent dies, however it dies (a SIGKILL
    leaves the parent no chance to stop it, and an orphan would work, or wait, forever)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


_FAULT_HITS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash-recovery tests: SIGKILL this process at the point $MIRO_FAULT names.

    MIRO_FAULT=NAME kills at the first pass through `fault_point(NAME)`, NAME@N at the Nth.
    """
    wanted = os.environ.get("MIRO_FAULT")
    if not wanted or wanted.partition("@")[0] != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == int(wanted.partition("@")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)
