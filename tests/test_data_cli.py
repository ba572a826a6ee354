"""The `miro data` commands through Typer's CliRunner: outputs, and bad input as one clean line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def run(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_clean_error(result, fragment: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_query_prints_and_writes_every_format(pipeline, tmp_path: Path) -> None:
    sql = "SELECT reward, count(*) AS n FROM scores GROUP BY reward ORDER BY reward"
    result = run("data", "query", pipeline.db, sql)
    assert result.exit_code == 0 and "shapes_alignment" in result.stdout
    for suffix in (".parquet", ".csv", ".json", ".jsonl"):
        out = tmp_path / f"q{suffix}"
        assert run("data", "query", pipeline.db, sql, "--out", out).exit_code == 0
        df = {
            ".parquet": pl.read_parquet, ".csv": pl.read_csv,
            ".json": pl.read_json, ".jsonl": pl.read_ndjson,
        }[suffix](out)  # fmt: skip
        assert df["n"].to_list() == [pipeline.n] * 5


def test_query_is_read_only_by_default(pipeline) -> None:
    assert_clean_error(run("data", "query", pipeline.db, "DELETE FROM scores"), "--write")
    assert_clean_error(run("data", "query", pipeline.db, "SELEC 1"), "SQL error")
    assert_clean_error(run("data", "query", pipeline.db, "SELECT * FROM nowhere"), "nowhere")


def test_stats_prints_a_table_and_draws_a_png(pipeline, tmp_path: Path) -> None:
    plot = tmp_path / "stats.png"
    result = run("data", "stats", pipeline.db, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "sharpness" in result.stdout and "p99" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_clean_error(run("data", "stats", pipeline.db, "--plot", tmp_path / "x.jpg"), ".png")


def test_rewards_lists_the_weight_free_rewards() -> None:
    result = run("data", "rewards")
    assert result.exit_code == 0
    for name in ("sharpness", "noise", "colorfulness", "contrast", "shapes_alignment"):
        assert name in result.stdout


def test_bad_inputs_get_one_line_and_a_nonzero_exit(pipeline, tmp_path: Path) -> None:
    no_caption = tmp_path / "urls.csv"
    no_caption.write_text("url,text\nhttp://x/1.png,hello\n")
    empty_db = tmp_path / "empty.duckdb"
    from miro_data.db import connect

    connect(empty_db, create=True).close()
    cases = [
        (("data", "synth", tmp_path / "s", "--degrade", "blur=2"), "blur must be in [0, 1]"),
        (("data", "download", tmp_path / "missing.parquet", tmp_path / "d"), "URL list not found"),
        (("data", "download", no_caption, tmp_path / "d"), "lacks column(s) caption"),
        (
            ("data", "annotate", pipeline.shards, tmp_path / "a.duckdb", "-r", "sharpness,beauty"),
            "unknown reward 'beauty'",
        ),
        (
            (
                "data",
                "annotate",
                pipeline.shards,
                tmp_path / "a.duckdb",
                "-r",
                "tests.plugin_rewards:NotAReward",
            ),
            "not a subclass",
        ),
        (
            ("data", "annotate", tmp_path / "no-shards", tmp_path / "a.duckdb", "-r", "sharpness"),
            "no .tar shards",
        ),
        (
            (
                *("data", "annotate", pipeline.shards, tmp_path / "a.duckdb", "-r", "sharpness"),
                "--decode-workers",
                "-1",
            ),
            "--decode-workers must be 0 or more",
        ),
        (("data", "bins", tmp_path / "missing.duckdb"), "database not found"),
        (("data", "bins", empty_db), "no scores yet"),
        (("data", "query", tmp_path / "missing.duckdb", "SELECT 1"), "database not found"),
        (
            (
                "data",
                "reshard",
                pipeline.shards,
                pipeline.db,
                tmp_path / "o",
                "--where",
                "sharpness >",
            ),
            "bad --where",
        ),
        (("data", "reshard", pipeline.shards, empty_db, tmp_path / "o"), "no bin edges yet"),
        (
            ("data", "reshard", pipeline.shards, pipeline.db, tmp_path / "o", "-r", "aesthetic"),
            "no bin edges for aesthetic",
        ),
    ]
    for args, fragment in cases:
        assert_clean_error(run(*args), fragment)


def test_reshard_never_loses_an_existing_output(pipeline, tmp_path: Path) -> None:
    out = tmp_path / "train"
    shutil.copytree(pipeline.train, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_clean_error(run("data", "reshard", pipeline.shards, pipeline.db, out), "--overwrite")
    # a failure half-way (the source shards are gone) leaves the old output as it was
    assert_clean_error(
        run("data", "reshard", tmp_path / "nothing-here", pipeline.db, out, "--overwrite"),
        "no .tar shards",
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no staging folder left behind
    # a successful overwrite replaces it
    result = run(
        "data",
        "reshard",
        pipeline.shards,
        pipeline.db,
        out,
        "--overwrite",
        "--where",
        "shapes_alignment = 1",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["where"] == "shapes_alignment = 1" and 0 < manifest["total"] < pipeline.n


@pytest.mark.parametrize("flag", ["--help"])
def test_every_data_command_has_help(flag: str) -> None:
    for command in (
        "synth",
        "download",
        "annotate",
        "bins",
        "query",
        "stats",
        "reshard",
        "rewards",
    ):
        assert run("data", command, flag).exit_code == 0
