"""The DuckDB side: schema, connections (waiting, sandboxed for user SQL), the wide view.

Only one process writes the database; annotation workers hand it their results as part
folders (miro_data.parts).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from miro_data import storage
from miro_data.checks import check_identifier
from miro_data.common import MiroError

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
