"""The Query page's SQL: one read-only statement, a row limit and a time limit.

Three layers keep a query from changing anything or reaching outside the database: the
connection is read-only with external access off (corpus.open_read_only), the statement must
be a single SELECT (DESCRIBE, SHOW, SUMMARIZE, VALUES, FROM … and WITH are SELECTs to DuckDB;
DROP, COPY, ATTACH, INSTALL, SET, PRAGMA, CALL are not), and results are read through a
LIMIT that no query can raise. A timer interrupts a query that runs too long.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from miro_data.common import first_line
from miro_serve.config import BadRequest

MAX_SQL_CHARS = 20_000


def examples(rewards: list[str]) -> dict[str, str]:
    """Example queries for the page, written for this database's rewards."""
    out = {
        "Samples by status": "SELECT status, count(*) AS n FROM samples GROUP BY status",
        "Failures by reason": "SELECT stage, reward, reason, count(*) AS n FROM failures\n"
        "GROUP BY ALL ORDER BY n DESC",
        "Latest bin edges": "SELECT reward, n_levels, edges, mean, p50 FROM bin_edges\n"
        "WHERE version = (SELECT max(version) FROM bin_versions)",
        "Tables and views": "SELECT table_name, table_type FROM information_schema.tables",
    }
    if rewards:
        a = rewards[0]
        out[f"Lowest {a}"] = (
            f"SELECT shard, key, caption, {a} FROM scores_wide\n"
            f"WHERE {a} IS NOT NULL ORDER BY {a} LIMIT 100"
        )
    if len(rewards) > 1:
        a, b = rewards[0], rewards[1]
        out[f"High {a}, low {b}"] = (
            f"SELECT shard, key, caption, {a}, {b} FROM scores_wide\n"
            f"WHERE {a} > (SELECT quantile_cont({a}, 0.9) FROM scores_wide)\n"
            f"ORDER BY {b} LIMIT 100"
        )
    return out


@dataclass(frozen=True)
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    offset: int
    more: bool  # rows follow this page (within the row limit)
    capped: bool  # the row limit stops paging here


def check_sql(sql: str) -> str:
    """The one SELECT statement in `sql`, or a BadRequest saying why not."""
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise BadRequest("write a SELECT query")
    if len(sql) > MAX_SQL_CHARS:
        raise BadRequest(
            f"the query is {len(sql):,} characters long; the limit is {MAX_SQL_CHARS:,}"
        )
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise BadRequest(f"SQL error: {first_line(err)}") from None
    if len(statements) != 1:
        raise BadRequest(f"one statement at a time, not {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise BadRequest(f"only read-only SELECT queries run here; this is a {kind.name} statement")
    return sql


Cursor = Callable[[], duckdb.DuckDBPyConnection]  # a new cursor of the read-only connection


def _run(cursor: Cursor, sql: str, seconds: float, read: Callable) -> Any:
    """`read(relation)` on the query, interrupted after `seconds`; errors as BadRequest."""
    sql = check_sql(sql)
    cur = cursor()
    timer = threading.Timer(seconds, cur.interrupt)
    timer.daemon = True
    try:
        timer.start()
        return read(cur.sql(sql))
    except duckdb.InterruptException:
        raise BadRequest(
            f"the query ran past the time limit of {seconds:g} s and was stopped"
        ) from None
    except duckdb.Error as err:
        raise BadRequest(f"SQL error: {first_line(err)}") from None
    finally:
        timer.cancel()
        cur.close()


def run_page(
    cursor: Cursor, sql: str, *, page: int, rows: int, max_rows: int, seconds: float
) -> Result:
    """Rows [offset, offset + rows) of the result, never past `max_rows`."""
    offset = (page - 1) * rows
    if offset >= max_rows:
        raise BadRequest(f"page {page} is past the row limit of {max_rows:,} rows")
    take = min(rows, max_rows - offset)

    def read(rel: duckdb.DuckDBPyRelation) -> Result:
        got = rel.limit(take + 1, offset).fetchall()
        more = len(got) > take
        return Result(
            list(rel.columns), [str(t) for t in rel.types], got[:take], offset,
            more and offset + take < max_rows, more and offset + take >= max_rows,
        )  # fmt: skip

    return _run(cursor, sql, seconds, read)


def export(
    cursor: Cursor, sql: str, fmt: str, *, max_rows: int, seconds: float
) -> tuple[bytes, int]:
    """The first `max_rows` rows as parquet or CSV bytes (built in memory, nothing on disk)."""
    if fmt not in ("parquet", "csv"):
        raise BadRequest(f"export format must be parquet or csv, not {fmt!r}")
    table: pa.Table = _run(cursor, sql, seconds, lambda rel: _arrow(rel.limit(max_rows)))
    buf = io.BytesIO()
    try:
        if fmt == "parquet":
            pq.write_table(table, buf)
        else:
            pa_csv.write_csv(table, buf)
    except (pa.ArrowException, ValueError) as err:
        raise BadRequest(f"cannot write this result as {fmt}: {first_line(err)}") from None
    return buf.getvalue(), table.num_rows


def _arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    result = rel.arrow()  # a Table in older DuckDB, a RecordBatchReader in newer
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result
