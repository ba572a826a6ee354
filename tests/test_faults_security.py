"""Issue 14, security: user SQL has no side effects beyond the database, `--where` is one
expression, tar member names stay plain keys, and a failed output file commits nothing.

Every bad case must end with exit status 2, one line on stderr, and no file created.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import duckdb
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def run(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_one_line_error(result, fragment: str = "") -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture(scope="module")
def db_copy(pipeline, tmp_path_factory) -> Path:
    """A private copy of the session database (tests here open it with --write)."""
    path = tmp_path_factory.mktemp("security") / "corpus.duckdb"
    shutil.copy(pipeline.db, path)
    return path


def count(db: Path, sql: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


SECRET = "miro_security_test_secret"
SECRET_FILE = Path.home() / ".duckdb" / "stored_secrets" / f"{SECRET}.duckdb_secret"

# Statements whose effect would land outside the database, or change the sandbox itself;
# `{d}` is an empty folder that must stay empty. The secret file is written into it.
SIDE_EFFECTS = [
    "COPY (SELECT 42) TO '{d}/x.csv'",
    "COPY scores TO '{d}/scores.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{d}/export'",
    "ATTACH '{d}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL json",
    "UPDATE EXTENSIONS",
    "SET enable_external_access = true",
    "SET profiling_output = '{d}/profile.json'",
    "PRAGMA enable_profiling",
    "SELECT 1; COPY (SELECT 42) TO '{d}/x.csv'",
    f"CREATE PERSISTENT SECRET {SECRET} (TYPE s3, KEY_ID 'a', SECRET 'b')",
]
# Reading files other than the database is refused too: queries are about the database,
# and an arbitrary file read (the sandbox's price) is an information leak.
FILE_READS = [
    "SELECT * FROM read_csv('{secret}')",
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM '{secret}'",
    "SELECT * FROM glob('{d}/*')",
]


@pytest.mark.parametrize("write", [False, True], ids=["read-only", "write"])
def test_query_cannot_touch_files(db_copy, tmp_path: Path, monkeypatch, write: bool) -> None:
    monkeypatch.chdir(tmp_path)  # relative targets must not land in the current folder either
    d = tmp_path / "target"
    d.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    before = files_under(tmp_path)
    for template in SIDE_EFFECTS + FILE_READS + ["COPY (SELECT 42) TO 'relative.csv'"]:
        sql = template.format(d=d, secret=secret)
        result = run("data", "query", db_copy, sql, *(["--write"] if write else []))
        assert_one_line_error(result)
        assert "hunter2" not in result.output, sql
        assert files_under(tmp_path) == before, sql
    assert not SECRET_FILE.exists()
    # The sandbox does not get in the way of reading and, with --write, changing the database.
    assert run("data", "query", db_copy, "SELECT count(*) FROM samples").exit_code == 0


def test_query_runs_exactly_one_statement(db_copy) -> None:
    n = count(db_copy, "SELECT count(*) FROM scores")
    stacked = "SELECT 1; DELETE FROM scores"
    assert_one_line_error(run("data", "query", db_copy, stacked, "--write"), "exactly one")
    assert_one_line_error(run("data", "query", db_copy, "   ;  "), "empty")
    assert count(db_copy, "SELECT count(*) FROM scores") == n
    assert_one_line_error(run("data", "query", db_copy, "CREATE VIEW v AS SELECT 1"), "--write")


def test_query_write_still_changes_the_database(db_copy) -> None:
    sql = "CREATE OR REPLACE VIEW good AS SELECT key FROM scores_wide WHERE sharpness > 0"
    assert run("data", "query", db_copy, sql, "--write").exit_code == 0
    assert count(db_copy, "SELECT count(*) FROM good") > 0


# ----------------------------------------------------------------------------
# reshard --where
# ----------------------------------------------------------------------------

WHERE_ATTACKS = [
    "1=1); COPY (SELECT 42) TO '{d}/x.csv'; SELECT * FROM (SELECT 1 AS shard",
    "1=1; COPY (SELECT 42) TO '{d}/x.csv'",
    "sharpness > 0) OR (1=1",
    "sharpness > 0 UNION SELECT 1",
    "key IN (SELECT column0 FROM read_csv('{secret}'))",
    "EXISTS (SELECT * FROM read_text('{secret}'))",
    "sharpness > 0, noise > 0",
    "   ",
    "count(*) > 0",
    "no_such_column > 1",
]


def test_where_is_one_expression_without_side_effects(pipeline, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "target"
    d.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    before = files_under(tmp_path)
    for template in WHERE_ATTACKS:
        where = template.format(d=d, secret=secret)
        result = run("data", "reshard", pipeline.shards, pipeline.db, tmp_path / "out", "--where", where)  # fmt: skip
        assert_one_line_error(result)
        assert "hunter2" not in result.output, where
        assert files_under(tmp_path) == before, where


def test_where_subqueries_over_the_database_still_work(pipeline, tmp_path: Path) -> None:
    out = tmp_path / "out"
    where = (
        "key IN (SELECT key FROM scores WHERE reward = 'noise' AND value >= 0) AND sharpness > 0"
    )
    result = run("data", "reshard", pipeline.shards, pipeline.db, out, "--where", where)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["where"] == where and 0 < manifest["total"] <= pipeline.n


# ----------------------------------------------------------------------------
# Tar member names
# ----------------------------------------------------------------------------

GOOD_KEYS = ["000001", "000002", "sample-3_v1"]
BAD_KEYS = ["../../x", "/abs/x", "sub/y", "a b"]


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", (16, 16), colour)
    image.paste((255, 255, 255), (4, 4, 12, 12))  # some edges, so sharpness is defined
    image.save(buf, "PNG")
    return buf.getvalue()


def _evil_shard(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, key in enumerate(GOOD_KEYS + BAD_KEYS):
            for ext, data in (
                ("png", _png((40 * i, 0, 0))),
                ("txt", f"caption {i}".encode()),
                ("json", json.dumps({"url": f"http://x/{i}.png"}).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _member_names(folder: Path) -> list[str]:
    names = []
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            names += tar.getnames()
    return names


def test_unsafe_member_names_fail_at_annotate_and_never_reach_training_tars(tmp_path) -> None:
    shards, db, out = tmp_path / "shards", tmp_path / "evil.duckdb", tmp_path / "train"
    shards.mkdir()
    _evil_shard(shards / "00000.tar")
    result = run("data", "annotate", shards, db, "-r", "sharpness", "--decode-workers", "0")
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    failed = dict(con.execute("SELECT key, reason FROM failures WHERE stage = 'decode'").fetchall())
    ok = {k for (k,) in con.execute("SELECT key FROM samples WHERE status = 'ok'").fetchall()}
    con.close()
    assert ok == set(GOOD_KEYS)
    assert set(failed) == set(BAD_KEYS)
    assert all("unsafe sample key" in reason for reason in failed.values())
    assert run("data", "bins", db, "--n-bins", "2", "--sample", "10").exit_code == 0

    # A database edited by hand (or written by an older version) may still hold such keys
    # as decoded samples: reshard leaves them out rather than writing those names.
    con = duckdb.connect(str(db))
    for key, ext in [("../../y", "png"), ("/abs/y", "png"), ("000009", "png/../../z")]:
        con.execute(
            "INSERT INTO samples VALUES ('00000', $k, 'c', NULL, 16, 16, $e, 'ok', NULL, '{}')",
            {"k": key, "e": ext},
        )
        con.execute(
            "INSERT INTO scores SELECT '00000', $k, reward, version, 1.0 FROM scores LIMIT 1",
            {"k": key},
        )
    con.close()
    result = run("data", "reshard", shards, db, out)
    assert result.exit_code == 0, result.output
    names = _member_names(out)
    assert sorted(names) == sorted(f"{k}.{e}" for k in GOOD_KEYS for e in ("png", "txt", "json"))


# ----------------------------------------------------------------------------
# Outputs are checked before anything is committed
# ----------------------------------------------------------------------------


def _unwritable_paths(tmp_path: Path, suffix: str) -> list[Path]:
    """Paths no process can create, root included (permission bits do not stop root)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = tmp_path / f"a-folder{suffix}"
    folder.mkdir(exist_ok=True)
    return [blocker / f"out{suffix}", blocker / "deeper" / f"out{suffix}", folder]


def test_bins_export_to_an_unwritable_path_commits_nothing(db_copy, tmp_path: Path) -> None:
    versions = count(db_copy, "SELECT count(*) FROM bin_versions")
    edges = count(db_copy, "SELECT count(*) FROM bin_edges")
    for bad in [*_unwritable_paths(tmp_path, ".json"), db_copy]:
        before = files_under(tmp_path)
        assert_one_line_error(run("data", "bins", db_copy, "--export", bad), "--export")
        assert count(db_copy, "SELECT count(*) FROM bin_versions") == versions
        assert count(db_copy, "SELECT count(*) FROM bin_edges") == edges
        assert files_under(tmp_path) == before
    good = tmp_path / "new" / "edges.json"
    assert run("data", "bins", db_copy, "--export", good).exit_code == 0
    assert json.loads(good.read_text())["version"] == versions + 1
    assert count(db_copy, "SELECT count(*) FROM bin_versions") == versions + 1


def test_query_write_out_to_an_unwritable_path_commits_nothing(db_copy, tmp_path: Path) -> None:
    scratch = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'"
    for bad in _unwritable_paths(tmp_path, ".csv"):
        sql = "CREATE TABLE scratch AS SELECT 1 AS x"
        assert_one_line_error(run("data", "query", db_copy, sql, "--write", "--out", bad), "--out")
        assert count(db_copy, scratch) == 0
    good = tmp_path / "scratch.csv"
    sql = "CREATE TABLE scratch AS SELECT 1 AS x"
    assert run("data", "query", db_copy, sql, "--write", "--out", good).exit_code == 0
    assert count(db_copy, scratch) == 1 and good.exists()


def test_stats_plot_to_an_unwritable_path_is_one_line(db_copy, tmp_path: Path) -> None:
    for bad in _unwritable_paths(tmp_path, ".png"):
        assert_one_line_error(run("data", "stats", db_copy, "--plot", bad), "--plot")
