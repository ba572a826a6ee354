"""Small pieces every stage shares: the user-facing error, atomic writes, progress bars."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

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


def require_file(path: str | Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise MiroError(f"{what} not found: {path}")
    return path


# errno values the user fixes (space, permissions, a wrong path), not bugs: one line, exit 2.
USER_ERRNOS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
        errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
    }
)  # fmt: skip
_WRITE_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def first_line(err: BaseException) -> str:
    """An exception's first line (libraries append context and hints below it), or its type's
    name when it has no message: what a one-line error shows of a cause."""
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def os_error_code(err: BaseException) -> int | None:
    """The errno behind an exception: its own, or one that a library wrapped in its message
    ("(os error 28)" from Rust writers such as polars, "[Errno 28]" from others) or cause."""
    seen = 0
    current: BaseException | None = err
    while current is not None and seen < 8:
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        found = re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", str(current))
        if found:
            return int(found.group(1) or found.group(2))
        current, seen = current.__cause__, seen + 1
    return None


def user_os_error(
    err: BaseException, target: str | Path | None = None, writing: bool = False
) -> MiroError | None:
    """One line naming the path and the cause of a failure the user can fix, else None.

    `target` names the file being written when the error itself carries no useful name
    (a full disk reports ENOSPC on a write() call, without a file name).
    """
    code = os_error_code(err)
    if code not in USER_ERRNOS:
        return None
    reason = os.strerror(code)
    if target is None and isinstance(err, OSError):
        target = err.filename2 or err.filename
    verb = "write" if writing or code in _WRITE_ONLY else "access"
    if target is None:
        return MiroError(f"cannot {verb} a file: {reason}")
    if code in (errno.ENOTDIR, errno.EEXIST):  # a file where a folder must be
        candidates = [Path(target)] if code == errno.EEXIST else []
        blocker = next((p for p in [*candidates, *Path(target).parents] if p.is_file()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
    return MiroError(f"cannot {verb} {target}: {reason}")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (/proc), so no
    other thread ever creates a file under a wrong mask."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def honour_umask(path: str | Path) -> None:
    """Give a file written by a library that creates it 0600 (safetensors) the usual mode."""
    os.chmod(path, file_mode())


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the previous file intact. A
    failure the user can fix (full disk, read-only folder, a file where a folder must be…),
    however the writing library wraps it, becomes a MiroError naming `final`.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as err:
        raise user_os_error(err, final, writing=True) or err from None
    try:
        # mkstemp creates 0600; the file should get the mode open() would give it
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if final.is_dir():  # os.replace would name the temporary file, not the target
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))
        os.replace(tmp_path, final)
    except Exception as err:
        # an error on another file (an input read inside the block) keeps its own name
        name = getattr(err, "filename", None)
        other = name not in (None, str(tmp_path), str(final)) and not getattr(
            err, "filename2", None
        )
        raise user_os_error(err, None if other else final, writing=not other) or err from None
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
        raise MiroError(f"cannot write {what} {path}: {os.strerror(errno.EISDIR)}")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MiroError(f"cannot write {what} {path}: {ancestor} is a file, not a folder")
    if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        raise MiroError(f"cannot write {what} {path}: {os.strerror(errno.EROFS)}")
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


def json_safe(value: Any) -> Any:
    """Plain JSON types, recursively: NaN and ±inf → None (JSON has no non-finite numbers),
    dataclasses → dicts, paths → text, numpy scalars and arrays → numbers and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    """json.dumps that writes valid JSON: non-finite floats become null, never `NaN`."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def save_json(path: Path, value: Any) -> None:
    """`value` (configs and results: dataclasses, paths, numpy numbers) as an indented JSON
    file, written then renamed."""
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(value, indent=2))


class RateColumn(ProgressColumn):
    """Items per second, e.g. '812.4 img/s'."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


@functools.cache
def stderr_console() -> Console:
    """The one console on stderr: progress bars and the CLI's log handler share it, so a log
    line printed while a bar is drawn goes above the bar instead of into it. It writes to
    whatever sys.stderr is at the time (a test runner's capture too)."""
    return Console(stderr=True)


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
        console=stderr_console(),
        disable=disable,
        transient=False,
    )
