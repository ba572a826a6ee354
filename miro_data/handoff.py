"""Part folders: how annotation workers hand their results to the one process that writes
the database.

A worker writes one shard's rows as parquet files plus a `done.json` marker (last) into a
new folder under `<db>.parts/` (or a bucket prefix); the writer ingests each finished folder
in one transaction and removes it. Several processes — or machines sharing a filesystem or a
bucket — annotate at once without contending for the database file, and a killed run loses at
most the shards in flight.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from miro_data import storage
from miro_data.common import MiroError, atomic_path, first_line
from miro_data.db import DatabaseBusy, connect_waiting, refresh_wide_view

# The columns of a part folder's three parquet files (the tables' columns, in polars types).
PART_SCHEMAS: dict[str, dict[str, Any]] = {
    "samples": {
        "shard": pl.String, "key": pl.String, "caption": pl.String, "url": pl.String,
        "width": pl.Int32, "height": pl.Int32, "image_ext": pl.String, "status": pl.String,
        "error": pl.String, "meta": pl.String,
    },
    "scores": {"shard": pl.String, "key": pl.String, "reward": pl.String, "version": pl.String, "value": pl.Float64},
    "failures": {
        "shard": pl.String, "key": pl.String, "stage": pl.String, "reward": pl.String,
        "version": pl.String, "reason": pl.String,
    },
}  # fmt: skip
PART_FILES = tuple(PART_SCHEMAS)


def parts_dir(db: Path, parts: str | None = None) -> Path | str:
    """Where part folders go: `parts` (a folder or a URL, miro_data.storage), else beside the DB."""
    if not parts:
        return Path(f"{db}.parts")
    return parts if storage.is_url(parts) else storage.local_path(parts)


def write_part(
    root: Path | str, shard_name: str, rows: dict[str, list[dict]], marker: dict
) -> Path | str:
    """One shard's results as a new part folder under `root` (a folder or a URL);
    `done.json` marks it complete. In a bucket the folder is built locally, then uploaded
    with the marker last."""
    folder = f"{shard_name.replace('/', '__')}-{uuid.uuid4().hex[:8]}"
    if not storage.is_url(root):
        part = Path(root) / folder
        part.mkdir(parents=True)
        _write_part_files(part, rows, marker)
        return part
    url = storage.join(root, folder)
    with tempfile.TemporaryDirectory(prefix="miro-part-") as tmp:
        _write_part_files(Path(tmp), rows, marker)
        storage.put_folder(Path(tmp), url, last="done.json")
    return url


def _write_part_files(part: Path, rows: dict[str, list[dict]], marker: dict) -> None:
    for name, schema in PART_SCHEMAS.items():
        pl.DataFrame(rows[name], schema=schema).write_parquet(part / f"{name}.parquet")
    with atomic_path(part / "done.json") as tmp:  # the marker comes last: its presence = complete
        tmp.write_text(json.dumps(marker))


def list_parts(root: Path | str) -> tuple[list[Path | str], list[Path | str]]:
    """(finished, unfinished) part folders under `root` (a folder or a URL), by name; dot
    names (the owner record, temporaries) are not parts."""
    finished: list[Path | str] = []
    unfinished: list[Path | str] = []
    for folder in storage.list_names(root, folders_only=True):
        if folder.startswith("."):
            continue
        part = storage.join(root, folder) if storage.is_url(root) else Path(root) / folder
        (finished if "done.json" in storage.list_names(part) else unfinished).append(part)
    return finished, unfinished


OWNER = ".miro-parts-owner"


def claim_parts(root: Path | str, db: Path) -> None:
    """Bind a parts location the user chose to one database: a second database's run would
    ingest this one's parts and drop its unfinished ones. The first run records its database
    (host and absolute path); a run for another database is one line."""
    owner = f"{socket.gethostname()}:{Path(db).absolute()}"
    record = storage.join(root, OWNER)
    found = storage.read_if_exists(record)
    if found is None:
        storage.write_bytes(record, owner.encode())
    elif found.decode(errors="replace") != owner:
        raise MiroError(
            f"--parts {root} holds the parts of another database ({found.decode(errors='replace')}); "
            f"give each database its own parts location (or remove {record} if that one is gone)"
        )


def ingest_part(con: duckdb.DuckDBPyConnection, part: Path | str) -> dict:
    """Move one finished part folder into the database, in one transaction; returns its marker.
    A part in a bucket is downloaded first and removed from the bucket after the commit.

    Idempotent: rows of the keys the part covers are replaced, so ingesting a part twice (a
    crash between commit and cleanup) changes nothing.
    """
    if not storage.is_url(part):
        return _ingest_folder(con, Path(part), Path(part).name)
    # DuckDB reads the parquet files locally: its connections here reach no object store
    with storage.local_copy(part) as local:
        done = _ingest_folder(con, local, storage.name(part))
    storage.remove(part)
    return done


def _ingest_folder(con: duckdb.DuckDBPyConnection, part: Path, label: str) -> dict:
    done = json.loads((part / "done.json").read_text())
    shard, retry = done["shard"], done["retry"]
    complete = done.get("complete", True)  # False: the tar could not be read to its end
    files = {name: str(part / f"{name}.parquet") for name in PART_FILES}
    # In a retry or a partial read, only the keys read are replaced; else everything of the shard.
    keyed = retry or not complete
    scope = "AND key IN (SELECT key FROM read_parquet($samples))" if keyed else ""
    params = {"shard": shard, **({"samples": files["samples"]} if keyed else {})}
    path = _database_path(con)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM samples WHERE shard = $shard {scope}", params)
        con.execute(
            "INSERT INTO samples BY NAME SELECT * FROM read_parquet($f)", {"f": files["samples"]}
        )
        con.execute(
            f"DELETE FROM failures WHERE shard = $shard AND (stage = 'read' OR (stage = 'decode' {scope}))",
            params,
        )
        for reward, info in done["rewards"].items():
            p = {**params, "reward": reward, "version": info["version"]}
            where = f"shard = $shard AND reward = $reward AND version = $version {scope}"
            con.execute(f"DELETE FROM scores WHERE {where}", p)
            con.execute(f"DELETE FROM failures WHERE stage = 'score' AND {where}", p)
        con.execute(
            "INSERT INTO scores BY NAME SELECT * FROM read_parquet($f)", {"f": files["scores"]}
        )
        con.execute(
            "INSERT INTO failures BY NAME SELECT * FROM read_parquet($f)", {"f": files["failures"]}
        )
        for reward, info in done["rewards"].items():
            _update_ledger(con, shard, reward, info, complete)
        con.execute("COMMIT")
    except Exception as err:
        # A failed COMMIT has already ended the transaction: a second error would hide the first.
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        cause = _storage_failure(err)
        if cause is None:
            raise
        raise MiroError(
            f"cannot write database {path}: {cause} (nothing of {label} was stored;"
            " it is ingested on the next run)"
        ) from None
    shutil.rmtree(part, ignore_errors=True)
    return done


def _database_path(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return str(row[0]) if row and row[0] else "(in memory)"


def _storage_failure(err: BaseException) -> str | None:
    """The root cause when DuckDB could not write its files (full disk, read-only…), else None."""
    if not isinstance(err, duckdb.Error):
        return None
    text = first_line(err)
    storage = isinstance(err, duckdb.IOException | duckdb.PermissionException)
    if not storage and "Could not write" not in text and "Failed to commit" not in text:
        return None
    return text.rsplit("Failed to commit: ", 1)[-1]


def ingest_waiting(
    path: Path, part: Path | str, wait: float, on_wait: Callable[[int], None] | None = None
) -> dict:
    """`ingest_part` on a connection opened for this part alone, so that between ingests
    anyone may open the database (to watch progress); waits up to `wait` s for a reader."""
    try:
        con = connect_waiting(path, wait, on_wait=on_wait)
    except DatabaseBusy as err:
        raise MiroError(
            f"{err} for {wait:g} s; the finished shard waits in {part} for the next run"
        ) from None
    try:
        done = ingest_part(con, part)
        refresh_wide_view(con)
        return done
    finally:
        con.close()


def _update_ledger(
    con: duckdb.DuckDBPyConnection, shard: str, reward: str, info: dict, complete: bool = True
) -> None:
    """Record the reward version; only a shard read to its end gets (or updates) its ledger row."""
    p = {"shard": shard, "reward": reward, "version": info["version"]}
    con.execute(
        """INSERT INTO reward_versions VALUES ($reward, $version, now(), now())
        ON CONFLICT DO UPDATE SET last_used = now()""",
        {"reward": reward, "version": info["version"]},
    )
    if not complete:
        return
    con.execute(
        """INSERT OR REPLACE INTO ledger
        SELECT $shard, $reward, $version,
          (SELECT count(*) FROM samples WHERE shard = $shard AND status IN ('ok', 'undecodable')),
          (SELECT count(*) FROM scores WHERE shard = $shard AND reward = $reward AND version = $version),
          (SELECT count(*) FROM failures WHERE shard = $shard AND key IS NOT NULL AND
             (stage = 'decode' OR (stage = 'score' AND reward = $reward AND version = $version))),
          $seconds, now()""",
        {**p, "seconds": info.get("seconds")},
    )
