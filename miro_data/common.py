"""Small pieces every stage shares: the user-facing error, atomic writes, progress bars."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import functools
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePath
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
    if not isinstance(name, str) or not IDENTIFIER.match(name):
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


# errno values the user fixes (space, permissions, a wrong path), not bugs: one line, exit 2.
USER_ERRNOS = frozenset(
    {
        errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
        errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP,
    }
)  # fmt: skip
_WRITE_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


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


# ----------------------------------------------------------------------------
# Option checks: each stage's config validates its options with these, in __post_init__
# ----------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None) -> None:
    """An integer option, at least `minimum` when given."""
    if not _is_int(value):
        raise MiroError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        bound = {0: "0 or more", 1: "positive"}.get(minimum, f"at least {minimum}")
        raise MiroError(f"{name} must be {bound}, not {value}")


def check_positive(name: str, value: Any) -> None:
    check_int(name, value, 1)


def check_optional_positive(name: str, value: Any) -> None:
    if value is not None:
        check_int(name, value, 1)


def check_seed(name: str, value: Any) -> None:
    """Seeds feed numpy and torch generators: a non-negative integer below 2**32."""
    check_int(name, value, 0)
    if value >= 2**32:
        raise MiroError(f"{name} must be below 2**32, not {value}")


def check_finite(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """A finite number, within [low, high] (either end open when asked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MiroError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise MiroError(f"{name} must be a finite number, not {value}")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        if high is None and low == 0:
            bound = "positive" if open_low else "0 or more"
        else:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            bound = f"in {'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}"
        raise MiroError(f"{name} must be {bound}, not {value:g}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise MiroError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_device(name: str, value: Any) -> None:
    """auto, cpu, cuda, cuda:N (or mps): what torch.device and the CLI's --device accept."""
    if not isinstance(value, str) or not DEVICE.match(value):
        raise MiroError(f"{name} must be auto, cpu, cuda or cuda:N, not {value!r}")


def check_nonempty_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MiroError(f"{name} must not be empty")


def check_names(name: str, value: tuple[str, ...] | None, identifiers: bool = True) -> None:
    """An optional list of names (None: the default set); given, it names at least one."""
    if value is None:
        return
    if not value:
        raise MiroError(f"{name} names no reward")
    for item in value:
        if identifiers:
            check_identifier(item, "reward name")
        else:
            check_nonempty_text(name, item)


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
