"""Processes: one owner per output folder (a flock the kernel drops with its process),
children that die with their parent, and fault points for the crash-recovery tests."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from miro_data.common import MiroError

log = logging.getLogger(__name__)


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
