"""Stage `miro data export`: the database as partitioned parquet, which every engine reads.

OUT gets one folder per table — `samples/` and `scores_wide/` hive-partitioned by shard
(`shard=NAME/data_0.parquet`, the name percent-encoded, the column kept in the files), `failures/`, `ledger/` and
`bin_edges/` one file each — and `export.json` (row counts, the database, duckdb's version).
`scores_wide` is the database's view: one column per reward, at its current version.

The export is written into a hidden staging folder beside OUT and renamed into place when
complete, so OUT is always a whole export (an old one is replaced only with `--overwrite`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from miro_data import db, handoff
from miro_data.common import MiroError, atomic_path, dumps_json, user_os_error
from miro_data.folders import recover_folder, staging_folder, swap_folder
from miro_data.options import opt
from miro_data.processes import owns_output

log = logging.getLogger(__name__)

# table → its hive partition column (None: one file)
TABLES: dict[str, str | None] = {
    "samples": "shard",
    "scores_wide": "shard",
    "failures": None,
    "ledger": None,
    "bin_edges": None,
}
SUMMARY = "export.json"


@dataclass(frozen=True)
class ExportConfig:
    """Which database, and the folder its parquet export goes to."""

    db: Path = field(metadata=opt(help="DuckDB file."))
    out: Path = field(metadata=opt(help="New folder for the parquet files."))
    overwrite: bool = field(
        default=False, metadata=opt("--overwrite", help="Replace an export already in OUT.")
    )

    def __post_init__(self) -> None:
        if self.out.resolve() in (self.db.resolve(), Path(handoff.parts_dir(self.db)).resolve()):
            raise MiroError(f"OUT {self.out} would overwrite the database {self.db}")


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _copy(con: duckdb.DuckDBPyConnection, table: str, folder: Path) -> int:
    """One table (or view) into `folder`; returns its row count."""
    partition = TABLES[table]
    if partition is None:
        folder.mkdir()
        target, options = folder / "data_0.parquet", "FORMAT parquet"
    else:
        # the column stays in the files too: a reader inferring types from the folder names
        # would make shard 00001 the integer 1
        target = folder
        options = f"FORMAT parquet, PARTITION_BY ({partition}), WRITE_PARTITION_COLUMNS true"
    ((count,),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    if count == 0 and partition is not None:
        folder.mkdir()  # nothing to partition: an empty folder says the table is empty
        return 0
    con.execute(f"COPY (SELECT * FROM {table}) TO {_quote(target)} ({options})")
    return int(count)


@owns_output  # one process writes an output folder at a time
def export(cfg: ExportConfig) -> dict[str, int]:
    """Write the tables as parquet under cfg.out; returns each table's row count."""
    recover_folder(cfg.out)
    if cfg.out.exists() and not cfg.overwrite:
        raise MiroError(f"{cfg.out} already exists: choose another OUT or pass --overwrite")
    if cfg.out.exists() and not (cfg.out / SUMMARY).is_file():
        raise MiroError(f"{cfg.out} is not a miro export (no {SUMMARY}): it is left alone")
    staging = staging_folder(cfg.out)
    con = db.connect(cfg.db, read_only=True)
    try:
        staging.mkdir(parents=True)
        counts = {table: _copy(con, table, staging / table) for table in TABLES}
        with atomic_path(staging / SUMMARY) as tmp:
            tmp.write_text(dumps_json({
                "db": str(cfg.db.resolve()), "duckdb": duckdb.__version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "rows": counts, "partitioned_by": TABLES,
            }, indent=2))  # fmt: skip
        swap_folder(staging, cfg.out)
    except (OSError, duckdb.IOException) as err:
        raise user_os_error(err, cfg.out, writing=True) or err from None
    finally:
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s to %s", ", ".join(f"{n:,} {t}" for t, n in counts.items()), cfg.out)
    return counts
