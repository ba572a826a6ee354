"""Output folders replaced whole: built in a hidden staging folder beside OUT, swapped in with
two renames, and repaired on the next run if a kill fell between them (reshard, export)."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from pathlib import Path

from miro_data.processes import fault_point

log = logging.getLogger(__name__)


def staging_folder(out: Path) -> Path:
    """A new hidden folder name beside `out` to build the next output in."""
    return out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")


def swap_folder(staging: Path, out: Path, fault: str | None = None) -> None:
    """Put the finished `staging` folder in place of `out`; an old `out` goes only after.

    A kill between the two renames leaves `out` missing and the old one aside as
    `.OUT.old-*`: `recover_folder` puts it back on the next run. `fault` names a
    `fault_point` between the renames (crash-recovery tests).
    """
    trash = None
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(trash)
        if fault is not None:
            fault_point(fault)
    try:
        staging.rename(out)
    except BaseException:
        if trash is not None:
            trash.rename(out)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def recover_folder(out: Path) -> None:
    """Undo what a killed run left beside `out` (call with the output's lock held): an old
    output moved aside by `swap_folder` comes back if `out` is missing; staging folders and
    old outputs no longer needed are removed."""
    if not out.parent.is_dir():
        return
    hidden = glob.escape(f".{out.name}.")
    olds = sorted(out.parent.glob(hidden + "old-*"), key=lambda p: os.stat(p).st_ctime)
    if olds and not out.exists():
        olds.pop().rename(out)  # the newest one moved aside: the run that did so never finished
        log.warning("restored %s, left aside by a run killed while replacing it", out)
    for stale in [*olds, *out.parent.glob(hidden + "partial-*")]:
        log.info("removing %s, left by a killed run", stale)
        shutil.rmtree(stale, ignore_errors=True)
