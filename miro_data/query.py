"""Stage `miro data query`: run SQL on the database, read-only unless asked otherwise.

Useful tables and views (ARCHITECTURE.md has the full schema): `scores_wide` (one row per
sample, one column per reward), `scores` (long form), `samples`, `failures`, `ledger`,
`bin_edges`.

The statement can change nothing but the database, and that only with `--write`: it runs on
a sandboxed connection (`db.SANDBOX_CONFIG`: no file access — COPY, EXPORT, ATTACH,
read_csv/read_parquet of other files —, no extensions, no settings), and is checked first to
be exactly one statement of an allowed type, so a refusal names the reason.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import duckdb
import polars as pl

from miro_data import db
from miro_data.checks import check_choice
from miro_data.common import MiroError, check_output, dumps_json, first_line, output_file
from miro_data.options import opt

WRITERS = {
    ".parquet": lambda df, p: df.write_parquet(p),
    ".csv": lambda df, p: df.write_csv(p),
    ".json": lambda df, p: df.write_json(p),
    ".jsonl": lambda df, p: df.write_ndjson(p),
}

Format = Literal["table", "csv", "markdown", "json"]
FORMATS: tuple[Format, ...] = get_args(Format)

T = duckdb.StatementType
# Without --write: statements that only read (DESCRIBE, SHOW, SUMMARIZE and FROM-first
# queries parse as SELECT).
READ_TYPES = {T.SELECT, T.EXPLAIN, T.PRAGMA, T.CALL}
# Never, even with --write: files, extensions, other databases, settings and transactions
# are not the database's content (the sandbox refuses most of them too; this says why).
REFUSED_TYPES = {
    T.COPY: "COPY (files)",
    T.EXPORT: "EXPORT DATABASE (files)",
    T.ATTACH: "ATTACH (other databases)",
    T.DETACH: "DETACH",
    T.LOAD: "INSTALL/LOAD (extensions)",
    T.EXTENSION: "extension statements",
    T.SET: "SET/RESET/USE (settings)",
    T.COPY_DATABASE: "COPY FROM DATABASE",
    T.TRANSACTION: "transaction control (each query is one transaction)",
    T.PREPARE: "PREPARE",
    T.EXECUTE: "EXECUTE",
}


@dataclass(frozen=True)
class QueryConfig:
    """One SQL statement against one database."""

    db: Path = field(metadata=opt(help="DuckDB file."))
    sql: str = field(
        metadata=opt(help="One SQL statement, e.g. 'SELECT * FROM scores_wide LIMIT 5'.")
    )
    out: Path | None = field(
        default=None, metadata=opt(help="Also write the result (.parquet, .csv, .json, .jsonl).")
    )
    # read-write for CREATE VIEW and the like
    write: bool = field(default=False, metadata=opt(help="Open the database read-write."))
    format: Format = field(default="table", metadata=opt(
        help="How to print the result: a table that fits the terminal, or csv, markdown, json."
    ))  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.sql, str) or not self.sql.strip().strip(";").strip():
            raise MiroError("the SQL statement is empty")
        if self.out is not None and self.out.suffix.lower() not in WRITERS:
            raise MiroError(f"--out must end in one of {', '.join(WRITERS)}")
        check_choice("--format", self.format, FORMATS)


def check_statement(sql: str, write: bool) -> None:
    """Exactly one statement, of a type this mode allows; else a one-line MiroError."""
    try:
        kinds = [statement.type for statement in duckdb.extract_statements(sql)]
    except duckdb.Error as err:
        raise MiroError(f"SQL error: {first_line(err)}") from None
    except ValueError:  # a statement type the Python binding cannot name (UPDATE EXTENSIONS)
        raise MiroError("SQL error: this kind of statement is not allowed here") from None
    if len(kinds) != 1:
        raise MiroError(f"give exactly one SQL statement (got {len(kinds)})")
    kind = kinds[0]
    if kind in REFUSED_TYPES:
        raise MiroError(f"SQL error: {REFUSED_TYPES[kind]} is not allowed in `miro data query`")
    if not write and kind not in READ_TYPES:
        raise MiroError(
            f"SQL error: a {kind.name} statement changes the database: it is opened read-only "
            "(pass --write to modify the database)"
        )


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    try:
        relation = con.sql(sql)
        return relation.pl() if relation is not None else pl.DataFrame()
    except duckdb.Error as err:
        message = first_line(err)
        if "read-only" in message:
            message += " (pass --write to modify the database)"
        raise MiroError(f"SQL error: {message}") from None


def _run_and_write(con: duckdb.DuckDBPyConnection, sql: str, out: Path) -> pl.DataFrame:
    """Run, write the result file, and only then commit: a failed write changes nothing."""
    committed = False
    con.execute("BEGIN TRANSACTION")
    try:
        df = _run(con, sql)
        with output_file(out, "--out") as tmp:
            try:
                WRITERS[out.suffix.lower()](df, tmp)
            except pl.exceptions.PolarsError as err:
                raise MiroError(f"cannot write --out {out}: {first_line(err)}") from None
            try:
                con.execute("COMMIT")
            except duckdb.Error as err:
                raise MiroError(f"SQL error: {first_line(err)}") from None
            committed = True
    except BaseException:
        if not committed:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                con.execute("ROLLBACK")
        raise
    return df


def query(cfg: QueryConfig) -> pl.DataFrame:
    """The statement's result as a DataFrame; also written to cfg.out when given.

    With --write and --out, the result file is written before the change is committed: a
    file that cannot be written leaves the database as it was.
    """
    if cfg.out is not None:
        check_output(cfg.out, "--out", keep=(cfg.db,))
    check_statement(cfg.sql, cfg.write)
    con = db.connect(cfg.db, read_only=not cfg.write, sandbox=True)
    try:
        return _run(con, cfg.sql) if cfg.out is None else _run_and_write(con, cfg.sql, cfg.out)
    finally:
        con.close()


# ----------------------------------------------------------------------------
# Printing a result
# ----------------------------------------------------------------------------


def cell(value: object) -> str:
    """A value as a table or markdown cell shows it."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_text(df: pl.DataFrame, fmt: Format) -> str:
    """The rows as csv, markdown or json (a list of row objects) text."""
    if fmt == "csv":
        buf = io.StringIO()
        df.write_csv(buf)
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return dumps_json(df.to_dicts(), indent=2)
    if fmt == "markdown":

        def line(cells: list[str]) -> str:
            escaped = (c.replace("|", "\\|").replace("\n", " ") for c in cells)
            return "| " + " | ".join(escaped) + " |"

        rows = [line([cell(v) for v in row]) for row in df.iter_rows()]
        rule = "|" + "|".join("---:" if t.is_numeric() else "---" for t in df.dtypes) + "|"
        return "\n".join([line(df.columns), rule, *rows])
    raise ValueError(f"not a text format: {fmt}")


@dataclass(frozen=True)
class ColumnFit:
    name: str
    numeric: bool
    width: int  # the cell text's width; longer text is cut with …


MIN_TEXT = 10  # a text column narrower than this says too little to be worth showing
MAX_CELL = 60
BORDER = 3  # a cell's padding and its right border


def fit_columns(df: pl.DataFrame, width: int) -> tuple[list[ColumnFit], int]:
    """The leading columns that fit a `width`-character table, each kept readable (a numeric
    column whole, a text one at least MIN_TEXT wide, then widened in turn with what is
    left), and the number of columns left out."""
    wanted: list[tuple[str, bool, int, int]] = []  # name, numeric, least, widest
    used = 1  # the left border
    for name, dtype in zip(df.columns, df.dtypes, strict=True):
        numeric = dtype.is_numeric()
        longest = max([len(name), *(len(cell(v)) for v in df[name].to_list())])
        widest = min(longest, MAX_CELL)
        least = widest if numeric else min(widest, MIN_TEXT)
        if wanted and used + least + BORDER > width:
            break
        wanted.append((name, numeric, least, widest))
        used += least + BORDER
    spare = max(width - used, 0)
    fits = []
    for name, numeric, least, widest in wanted:
        extra = min(widest - least, spare)
        spare -= extra
        fits.append(ColumnFit(name, numeric, least + extra))
    return fits, len(df.columns) - len(fits)
