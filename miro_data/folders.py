"""Output folders replaced whole: built in a hidden staging folder beside OUT, swapped in with
two renames, and repaired on the next run if a kill fell between them (reshard, export).
On an object store (fsspec paths `bucket/prefix`): staged beside OUT, committed by copying
under a marker, and the commit finished on the next run if a kill fell inside it."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from miro_data.common import MiroError
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


# ----------------------------------------------------------------------------
# The same on an object store (s3://bucket/prefix), which has no rename: a complete staged
# prefix is committed by copying, under a commit marker that makes the copy resumable.
# ----------------------------------------------------------------------------

MANIFEST = "manifest.json"  # the output's last object: a prefix without one is unfinished


def _sibling(prefix: str, tag: str) -> str:
    parent, _, name = prefix.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.{tag}" if parent else f".{name}.{tag}"


def check_bucket_output(fs: Any, prefix: str, url: str) -> None:
    """One line if OUT's bucket is missing or unreachable with these credentials."""
    bucket = prefix.split("/", 1)[0]
    if "/" not in prefix.strip("/"):
        raise MiroError(f"{url}: give a prefix below the bucket, e.g. s3://{bucket}/train")
    try:
        fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise MiroError(f"cannot write {url}: bucket {bucket!r} does not exist") from None
    except (PermissionError, OSError) as err:
        raise MiroError(f"cannot write {url}: {err}") from None


def bucket_staging(prefix: str) -> str:
    """A new hidden prefix beside `prefix` to build the next output in."""
    return _sibling(prefix, f"partial-{uuid.uuid4().hex[:8]}")


def bucket_swap(fs: Any, staging: str, out: str, fault: str | None = None) -> None:
    """Replace `out` by the complete `staging` (its manifest written): a marker names the
    staging prefix first, so a kill part-way is finished by `bucket_recover` on the next run.
    Until the marker, the old output is untouched and whole."""
    fs.pipe_file(_sibling(out, "commit"), staging.encode("utf-8"))
    if fault is not None:
        fault_point(fault)
    _roll_forward(fs, staging, out)


def _roll_forward(fs: Any, staging: str, out: str) -> None:
    # the old manifest goes first: from then on no reader takes a half-copied prefix as done
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(f"{out}/{MANIFEST}")
    new = {p[len(staging) + 1 :] for p in fs.find(staging)}
    stale = [p for p in _find(fs, out) if p[len(out) + 1 :] not in new]
    if stale:
        fs.rm(stale)
    for name in sorted(new - {MANIFEST}):
        fs.copy(f"{staging}/{name}", f"{out}/{name}")
    fs.copy(f"{staging}/{MANIFEST}", f"{out}/{MANIFEST}")
    fs.rm(staging, recursive=True)
    fs.rm_file(_sibling(out, "commit"))
    fs.invalidate_cache()


def _find(fs: Any, prefix: str) -> list[str]:
    try:
        return fs.find(prefix)
    except FileNotFoundError:
        return []


def bucket_recover(fs: Any, out: str) -> None:
    """Finish a commit a killed run began (its staging is complete), and remove staging
    prefixes no run will finish. Object stores have no lock: one writer per OUT at a time."""
    marker = _sibling(out, "commit")
    fs.invalidate_cache()
    if fs.exists(marker):
        staging = fs.cat_file(marker).decode("utf-8")
        if fs.exists(f"{staging}/{MANIFEST}"):
            log.warning("finishing the replacement of %s that a killed run began", out)
            _roll_forward(fs, staging, out)
        else:
            fs.rm_file(marker)
    parent = out.rstrip("/").rpartition("/")[0]
    hidden = _sibling(out, "partial-")
    for stale in fs.ls(parent, detail=False, refresh=True) if parent else []:
        if stale.startswith(hidden):
            log.info("removing %s, left by a killed run", stale)
            fs.rm(stale, recursive=True)
