"""The DuckDB side: schema, connections, ingesting workers' part files, the wide view.

Only one process writes the database. Annotation workers never open it: each writes its
results for one shard as parquet files plus a `done.json` marker into `<db>.parts/`, and the
writer ingests finished part folders, each in one transaction. Several processes — or
machines sharing a filesystem — can therefore annotate at once without contending for the
database file, and a killed run loses at most the shards in flight.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from miro_data import storage
from miro_data.checks import check_identifier
from miro_data.common import MiroError, atomic_path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    shard     VARCHAR NOT NULL,  -- shard name: tar path relative to the shard folder, no .tar
    key       VARCHAR NOT NULL,  -- sample key, unique within the corpus
    caption   VARCHAR,
    url       VARCHAR,
    width     INTEGER,           -- decoded size; NULL when the image did not decode
    height    INTEGER,
    image_ext VARCHAR,
    status    VARCHAR NOT NULL,  -- ok | undecodable | img2dataset's failed_to_download, …
    error     VARCHAR,
    meta      JSON               -- the sample's json record (extra URL-list columns included)
);
CREATE TABLE IF NOT EXISTS scores (
    shard   VARCHAR NOT NULL,
    key     VARCHAR NOT NULL,
    reward  VARCHAR NOT NULL,
    version VARCHAR NOT NULL,    -- reward version: code version or checkpoint hash
    value   DOUBLE               -- NULL where the reward is undefined for the sample
);
CREATE TABLE IF NOT EXISTS failures (
    shard   VARCHAR NOT NULL,
    key     VARCHAR,             -- NULL for a shard-level failure (unreadable tar)
    stage   VARCHAR NOT NULL,    -- read | decode | score
    reward  VARCHAR,             -- set for stage = score
    version VARCHAR,
    reason  VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    shard       VARCHAR NOT NULL,
    reward      VARCHAR NOT NULL,
    version     VARCHAR NOT NULL,
    n_read      INTEGER NOT NULL,  -- samples read from the tar
    n_scored    INTEGER NOT NULL,
    n_failed    INTEGER NOT NULL,  -- n_read = n_scored + n_failed
    seconds     DOUBLE,
    finished_at TIMESTAMP NOT NULL,
    PRIMARY KEY (shard, reward, version)
);
CREATE TABLE IF NOT EXISTS reward_versions (
    reward     VARCHAR NOT NULL,
    version    VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_used  TIMESTAMP NOT NULL,  -- the wide view shows each reward's most recent version
    PRIMARY KEY (reward, version)
);
CREATE TABLE IF NOT EXISTS bin_versions (
    version     INTEGER PRIMARY KEY,
    created_at  TIMESTAMP NOT NULL,
    n_bins      INTEGER NOT NULL,    -- B requested
    sample_size INTEGER NOT NULL,
    seed        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bin_edges (
    version        INTEGER NOT NULL,
    reward         VARCHAR NOT NULL,
    reward_version VARCHAR NOT NULL,
    n_levels       INTEGER NOT NULL,  -- effective number of bins (≤ B when scores tie)
    edges          DOUBLE[] NOT NULL,
    top_level      BOOLEAN NOT NULL,  -- the maximum is a level of its own (tied top scores)
    count BIGINT, nan_count BIGINT, mean DOUBLE, std DOUBLE, min DOUBLE,
    p1 DOUBLE, p5 DOUBLE, p25 DOUBLE, p50 DOUBLE, p75 DOUBLE, p95 DOUBLE, p99 DOUBLE, max DOUBLE,
    PRIMARY KEY (version, reward)
);
"""

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


# User SQL (`query`, reshard's `--where`) runs on connections that can touch nothing but the
# database itself: no file reads or writes (COPY, EXPORT, ATTACH, read_csv, …), no extension
# install or load, and a locked configuration so that SET cannot lift this.
SANDBOX_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


class DatabaseBusy(MiroError):
    """Another process has the database open (DuckDB allows one writer, or readers only)."""


# How long opening the database waits for another process's brief hold on it (annotate
# ingesting a finished shard, a query) before it says the database is in use.
OPEN_WAIT = 10.0


def connect(
    path: Path,
    read_only: bool = False,
    create: bool = False,
    sandbox: bool = False,
    settings: dict[str, str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the database; `create` makes a new one with the schema, else it must exist.

    `sandbox` opens it with SANDBOX_CONFIG: every connection that runs user SQL must.
    `settings` (memory_limit, temp_directory) are set at opening; a sandbox cannot set them.
    """
    con = connect_waiting(path, OPEN_WAIT, create, read_only, sandbox=sandbox and not settings)
    if settings:
        for name, value in settings.items():
            quoted = value.replace("'", "''")
            con.execute(f"SET {name} = '{quoted}'")
        if sandbox:
            apply_sandbox(con)
    return con


def apply_sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """SANDBOX_CONFIG on an open connection (lock_configuration last): after this, its SQL
    reaches no file and changes no setting."""
    for name, value in SANDBOX_CONFIG.items():
        con.execute(f"SET {name} = {str(value).lower()}")


def connect_waiting(
    path: Path,
    wait: float,
    create: bool = False,
    read_only: bool = False,
    on_wait: Callable[[int], None] | None = None,
    sandbox: bool = False,
) -> duckdb.DuckDBPyConnection:
    """`connect`, retried for up to `wait` seconds while another process holds the file (DuckDB
    allows one writer, or readers only); `on_wait(attempt)` runs before each retry."""
    deadline = time.monotonic() + wait
    for attempt in itertools.count(1):
        try:
            return _open(Path(path), read_only, create, sandbox)
        except DatabaseBusy:
            if time.monotonic() >= deadline:
                raise
            if on_wait is not None:
                on_wait(attempt)
            time.sleep(min(0.02 * 2**attempt, 1.0))
    raise AssertionError("unreachable")


# The format new database files are written in. duckdb 2.0's own (v2.0.0+) is refused by
# every 1.x release, the current stable line included. In this one, checked: DuckDB 1.1.3,
# 1.2.2, 1.4.4 and 1.5.6 open a miro database (1.0.0 cannot read 2.0's catalog entries).
# A file keeps the format it was created in. `miro data export` writes parquet for the rest.
STORAGE_VERSION = "v1.0.0"


def check_local(path: str | Path) -> None:
    """The database is a local file: DuckDB writes it in place, which no object store allows."""
    if storage.looks_like_url(path):
        raise MiroError(
            f"database {path}: must be a local file path, not a URL (DuckDB updates it in "
            "place); the shards and --parts may be in a bucket"
        )


def _open(
    path: Path, read_only: bool, create: bool, sandbox: bool = False
) -> duckdb.DuckDBPyConnection:
    check_local(path)
    if not path.exists() and not create:
        raise MiroError(f"database not found: {path} (run `miro data annotate` first)")
    try:
        config: dict[str, Any] = dict(SANDBOX_CONFIG) if sandbox else {}
        if create and not path.exists():  # a new file, in a format DuckDB 1.x opens too
            config["storage_compatibility_version"] = STORAGE_VERSION
        con = duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.IOException as err:
        if "lock" in str(err).lower():
            raise DatabaseBusy(f"database {path} is in use by another process") from None
        raise MiroError(f"cannot open database {path}: {err}") from None
    except duckdb.Error as err:
        raise MiroError(f"cannot open database {path}: {err}") from None
    if not read_only:
        con.execute(SCHEMA)
        refresh_wide_view(con)
    return con


def parts_dir(db: Path, parts: str | None = None) -> Path | str:
    """Where part folders go: `parts` (a folder or a URL, miro_data.storage), else beside the DB."""
    if not parts:
        return Path(f"{db}.parts")
    return parts if storage.is_url(parts) else storage.local_path(parts)


def current_versions(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Each reward's most recently used version."""
    rows = con.execute(
        "SELECT reward, arg_max(version, last_used) FROM reward_versions GROUP BY reward ORDER BY reward"
    ).fetchall()
    return dict(rows)


def reward_condition(reward: str, version: str, table: str = "") -> str:
    """SQL condition selecting one reward version's score rows.

    Reward names are checked identifiers and versions are quoted, so both can be inlined
    (a pivot's column list cannot be parameterised).
    """
    check_identifier(reward, "reward name")
    prefix = f"{table}." if table else ""
    quoted = version.replace("'", "''")
    return f"{prefix}reward = '{reward}' AND {prefix}version = '{quoted}'"


def wide_columns(rewards: dict[str, str], table: str = "") -> list[str]:
    """Aggregates pivoting long-form scores into one column per reward."""
    prefix = f"{table}." if table else ""
    return [
        f'max({prefix}value) FILTER (WHERE {reward_condition(r, v, table)}) AS "{r}"'
        for r, v in rewards.items()
    ]


def refresh_wide_view(con: duckdb.DuckDBPyConnection) -> None:
    """`scores_wide`: one row per sample, one column per reward (its current version)."""
    columns = wide_columns(current_versions(con), "sc")
    select = ",\n  ".join(
        ["s.shard", "s.key", "s.caption", "s.url", "s.width", "s.height", "s.status", *columns]
    )
    con.execute(
        f"""CREATE OR REPLACE VIEW scores_wide AS
        SELECT {select}
        FROM samples s LEFT JOIN scores sc ON sc.shard = s.shard AND sc.key = s.key
        GROUP BY ALL"""
    )


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
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
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
