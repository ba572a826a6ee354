"""Stage `miro data query`: run SQL on the database, read-only unless asked otherwise.

Useful tables and views (ARCHITECTURE.md has the full schema): `scores_wide` (one row per
sample, one column per reward), `scores` (long form), `samples`, `failures`, `ledger`,
`bin_edges`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from miro_data import db
from miro_data.common import MiroError, atomic_path

WRITERS = {
    ".parquet": lambda df, p: df.write_parquet(p),
    ".csv": lambda df, p: df.write_csv(p),
    ".json": lambda df, p: df.write_json(p),
    ".jsonl": lambda df, p: df.write_ndjson(p),
}


@dataclass(frozen=True)
class QueryConfig:
    """One SQL statement against one database."""

    db: Path
    sql: str
    out: Path | None = None
    write: bool = False  # open read-write (for CREATE VIEW and the like)

    def __post_init__(self) -> None:
        if not isinstance(self.sql, str) or not self.sql.strip().strip(";").strip():
            raise MiroError("the SQL statement is empty")
        if self.out is not None and self.out.suffix.lower() not in WRITERS:
            raise MiroError(f"--out must end in one of {', '.join(WRITERS)}")


def query(cfg: QueryConfig) -> pl.DataFrame:
    """The statement's result as a DataFrame; also written to cfg.out when given."""
    con = db.connect(cfg.db, read_only=not cfg.write)
    try:
        relation = con.sql(cfg.sql)
        df = relation.pl() if relation is not None else pl.DataFrame()
    except duckdb.Error as err:
        message = str(err).splitlines()[0]
        if "read-only" in message:
            message += " (pass --write to modify the database)"
        raise MiroError(f"SQL error: {message}") from None
    finally:
        con.close()
    if cfg.out is not None:
        with atomic_path(cfg.out) as tmp:
            WRITERS[cfg.out.suffix.lower()](df, tmp)
    return df
