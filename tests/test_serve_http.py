"""`miro serve` over HTTP (Starlette's TestClient): every page, and every kind of bad input.

The app reads a copy of the session pipeline's real database and shards and a tiny run trained
for two steps; bad input must be a 4xx with a message, never a 500, and nothing may change.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import replace
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import numpy as np
import polars as pl
import pytest
from PIL import Image
from serve_fixtures import corpus_copy, tiny_run
from starlette.testclient import TestClient
from typer.testing import CliRunner
from wids.wids_mmtar import MMIndexedTar

from cli.main import app as cli_app
from miro_data.bins import load_levels
from miro_data.common import MiroError
from miro_serve import ServeConfig, create_app
from miro_serve.app import _bind


@pytest.fixture(scope="module")
def served(pipeline, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    db = corpus_copy(pipeline, root)
    run = tiny_run(pipeline, root)
    cfg = ServeConfig(db=db, shards=str(pipeline.shards), run=run, max_rows=500, query_seconds=5)
    with TestClient(
        create_app(cfg), base_url="http://127.0.0.1", raise_server_exceptions=False
    ) as client:
        yield client, cfg, pipeline


def _get(client, url, status=200, **params):
    response = client.get(url, params=params or None)  # None keeps a query already in url
    assert response.status_code == status, (url, params, response.text[:500])
    return response


def _message(response) -> str:
    """The one-line message of an error page or API error."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["error"]
    found = re.search(r'<p class="error" id="error">(.*?)</p>', response.text, re.S)
    assert found, response.text[:500]
    return unescape(found.group(1))


def _ok_samples(db, n=3) -> list[tuple[str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT shard, key FROM samples WHERE status = 'ok' ORDER BY shard, key LIMIT $n",
            {"n": n},
        ).fetchall()
    finally:
        con.close()


def test_every_page_renders(served):
    client, _, pipeline = served
    html = _get(client, "/").text
    rewards = ["colorfulness", "contrast", "noise", "shapes_alignment", "sharpness"]
    assert html.count('class="hist-card"') == len(rewards)
    assert f"Bin edges shown: version {pipeline.edges_version}" in html
    assert 'class="edge"' in html
    failures = html[
        html.index('id="failures"') : html.index("</table>", html.index('id="failures"'))
    ]
    assert failures.count("<td>download</td>") == 2  # the 404 and the non-image in the URL list
    assert "failed_to_download" in failures and "failed_to_resize" in failures
    assert all(f'data-reward="{r}"' in html for r in rewards)
    assert html.count("<td style=") == len(rewards) ** 2  # the correlation matrix
    for r in rewards:
        assert f"Bins of {r}" in _get(client, "/bins", reward=r).text
    assert "Example queries" in _get(client, "/query").text
    shard, key = _ok_samples(pipeline.db, 1)[0]
    page = _get(client, "/sample", shard=shard, key=key).text
    assert 'id="full"' in page and 'id="meta"' in page and page.count("<tr") > len(rewards)
    assert 'class="target"' in _get(client, "/generate").text
    assert _get(client, "/static/style.css").headers["content-type"].startswith("text/css")


def test_bins_page_counts_and_draws_follow_the_levels(served):
    client, _, pipeline = served
    con = duckdb.connect(str(pipeline.db), read_only=True)
    _, levels = load_levels(con)
    values = con.execute(
        "SELECT value FROM scores WHERE reward = 'sharpness' AND isfinite(value)"
    ).fetchnumpy()["value"]
    con.close()
    lv = levels["sharpness"][1]
    expected = np.bincount(lv.assign(values)[0], minlength=lv.n_levels)
    html = _get(client, "/bins", reward="sharpness", per=5, seed=1).text
    sections = re.findall(r'data-level="(\d+)">.*?· ([\d,]+) samples', html, re.S)
    shown = {int(level): int(n.replace(",", "")) for level, n in sections}
    assert shown == {i: int(c) for i, c in enumerate(expected) if c}
    assert [int(level) for level, _ in sections] == sorted(shown, reverse=True)  # top first
    again = _get(client, "/bins", reward="sharpness", per=5, seed=1).text
    other = _get(client, "/bins", reward="sharpness", per=5, seed=2).text
    thumbs = re.findall(r'src="(/image\?[^"]+)"', html)
    assert thumbs == re.findall(r'src="(/image\?[^"]+)"', again)
    assert thumbs != re.findall(r'src="(/image\?[^"]+)"', other)
    assert all(_get(client, unescape(t)).headers["content-type"] == "image/png" for t in thumbs[:5])


def test_query_pages_thumbnails_and_exports(served):
    client, _, pipeline = served
    sql = "SELECT shard, key, caption FROM samples WHERE status = 'ok' ORDER BY shard, key"
    html = _get(client, "/query", sql=sql, rows=10, page=2).text
    assert "rows 11–20" in html and 'id="next"' in html and 'id="prev"' in html
    thumbs = [unescape(t) for t in re.findall(r'class="thumb small"[^>]*src="([^"]+)"', html)]
    assert len(thumbs) == 10
    query = parse_qs(urlparse(thumbs[0]).query)
    shard, key = query["shard"][0], query["key"][0]
    tar = MMIndexedTar(str(pipeline.shards / f"{shard}.tar"), verbose=False)
    stored = bytes(tar.get_by_name(f"{key}.png")[1])
    tar.close()
    assert _get(client, thumbs[0]).content == stored  # 32 px: the stored bytes, no re-encode
    full = _get(client, "/image", shard=shard, key=key, size="full")
    assert full.content == stored and full.headers["x-content-type-options"] == "nosniff"
    con = duckdb.connect(str(pipeline.db), read_only=True)
    expected = con.sql(sql).pl()
    con.close()
    parquet = _get(client, "/export", sql=sql, format="parquet")
    assert pl.read_parquet(io.BytesIO(parquet.content)).equals(expected)
    csv = _get(client, "/export", sql=sql, format="csv")
    assert pl.read_csv(io.BytesIO(csv.content)).height == expected.height
    assert 'filename="query.csv"' in csv.headers["content-disposition"]


WRITES = [
    "DROP TABLE samples",
    "DELETE FROM scores",
    "UPDATE samples SET caption = 'x'",
    "INSERT INTO failures VALUES ('a', 'b', 'read', NULL, NULL, 'x')",
    "CREATE TABLE t AS SELECT 1",
    "COPY samples TO '{out}/copied.csv'",
    "COPY (SELECT * FROM samples) TO '{out}/copied.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{out}/exported'",
    "ATTACH '{out}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA version",
    "CALL duckdb_settings()",
    "SELECT 1; DROP TABLE samples",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_text('{db}')",
    "SELECT * FROM read_parquet('{out}/*.parquet')",
    "CHECKPOINT",
    "VACUUM",
]


def test_sql_that_writes_or_reaches_outside_is_refused(served, tmp_path):
    client, cfg, _ = served
    before = hashlib.sha256(cfg.db.read_bytes()).hexdigest()
    for template in WRITES:
        text = template.format(out=tmp_path, db=cfg.db)
        for url, params in (("/query", {}), ("/export", {"format": "csv"})):
            response = client.get(url, params={"sql": text, **params})
            assert response.status_code == 400, (text, response.text[:300])
            message = _message(response)
            assert message and "Traceback" not in response.text, text
    assert list(tmp_path.iterdir()) == []
    assert hashlib.sha256(cfg.db.read_bytes()).hexdigest() == before
    refused = _message(client.get("/query", params={"sql": "DROP TABLE samples"}))
    assert "only read-only SELECT queries" in refused and "DROP" in refused
    assert "one statement at a time" in _message(
        client.get("/query", params={"sql": "SELECT 1; DROP TABLE samples"})
    )
    outside = _message(client.get("/query", params={"sql": "SELECT * FROM glob('/*')"}))
    assert "disabled by configuration" in outside


def test_row_and_time_limits(served):
    client, cfg, _ = served
    huge = "SELECT range AS i FROM range(1000000000000) LIMIT 1000000000000"
    html = _get(client, "/query", sql=huge, rows=500).text
    assert html.count("<tr>") == 1 + 500 and "row limit reached" in html and 'id="next"' not in html
    exported = _get(client, "/export", sql=huge, format="parquet")
    assert pl.read_parquet(io.BytesIO(exported.content)).height == cfg.max_rows == 500
    assert "past the row limit" in _message(_get(client, "/query", 400, sql=huge, page=2, rows=500))
    slow = "SELECT sum(a.range * b.range) FROM range(1000000000) a, range(1000000000) b"
    stopped = TestClient(
        create_app(replace(cfg, run=None, query_seconds=0.2)), base_url="http://127.0.0.1"
    )
    with stopped:
        message = _message(_get(stopped, "/query", 400, sql=slow))
    assert "time limit of 0.2 s" in message
    for bad in ({"page": "x"}, {"page": "0"}, {"rows": "100000"}, {"rows": "-1"}):
        assert _message(_get(client, "/query", 400, sql="SELECT 1", **bad))
    assert "parquet or csv" in _message(_get(client, "/export", 400, sql="SELECT 1", format="xlsx"))
    assert "SQL error" in _message(_get(client, "/query", 400, sql="SELEC oops"))
    assert "no table" not in _get(client, "/query", sql="DESCRIBE samples").text


def test_image_route_serves_only_database_shards_by_name(served):
    client, _, pipeline = served
    shard, key = _ok_samples(pipeline.db, 1)[0]
    tar = str(pipeline.shards / f"{shard}.tar")
    for bad_shard in (
        f"../shards/{shard}", f"../../{shard}", tar, f"{shard}.tar", "/etc/passwd",
        f"{pipeline.shards}/{shard}", "", "..", f"{shard}/../{shard}",
    ):  # fmt: skip
        response = client.get("/image", params={"shard": bad_shard, "key": key})
        assert response.status_code in (400, 404) and _message(response), bad_shard
    for bad_key in ("../../etc/passwd", "/etc/passwd", f"{key}.json", "nope", f"{key}.png"):
        response = client.get("/image", params={"shard": shard, "key": bad_key})
        assert response.status_code == 404, bad_key
        assert "no image with key" in _message(response)
    for path in ("/image/../../etc/passwd", "/static/../app.py", "/static/%2e%2e/app.py"):
        response = client.get(path)
        assert response.status_code == 404 and b"import" not in response.content, path
    assert "size must be" in _message(_get(client, "/image", 400, shard=shard, key=key, size="x"))
    assert "'key' is missing" in _message(_get(client, "/image", 400, shard=shard))


def test_bad_keys_rewards_and_versions_are_clear_4xx(served):
    client, _, pipeline = served
    shard, key = _ok_samples(pipeline.db, 1)[0]
    assert "no sample with shard" in _message(_get(client, "/sample", 404, shard=shard, key="zz"))
    assert "no sample" in _message(_get(client, "/sample", 404, shard="../x", key=key))
    assert "no scores for reward" in _message(_get(client, "/bins", 404, reward="nope"))
    assert "no bin-edge version 99" in _message(_get(client, "/", 404, version=99))
    assert "whole number" in _message(_get(client, "/", 400, version="1; DROP TABLE x"))
    assert "per must be between" in _message(_get(client, "/bins", 400, per=10**9))
    assert "no such page" in _message(_get(client, "/nope", 404))
    assert client.post("/query", data={"sql": "DROP TABLE samples"}).status_code == 405
    evil = client.get("/", headers={"host": "attacker.example"})
    assert evil.status_code == 400  # DNS rebinding: only this machine's names


def _generate(client, status=200, **params):
    response = client.get("/api/generate", params={"prompt": "a photo of a red circle", **params})
    assert response.status_code == status, (params, response.text[:300])
    return response.json()


def test_generate_api_images_and_manifest_rows(served):
    client = served[0]
    first = _generate(client, target="sharpness=0.25,noise=1", seed=3, steps=3)
    png = base64.b64decode(first["image"].removeprefix("data:image/png;base64,"))
    image = Image.open(io.BytesIO(png))
    assert image.size == (16, 16) and image.mode == "RGB"
    row = first["manifest"]
    assert row["targets"]["sharpness"] == 0.25 and row["targets"]["colorfulness"] == 1.0
    assert row["negatives"] == dict.fromkeys(row["targets"], 0.0) and row["seed"] == 3
    same = _generate(client, target="sharpness=0.25,noise=1", seed=3, steps=3)
    assert same["image"] == first["image"]  # an image depends only on its settings and seed
    moved = _generate(client, target="sharpness=1,noise=1", seed=3, steps=3)
    assert moved["image"] != first["image"]
    iso = _generate(client, preset="isolate:noise", steps=2)["manifest"]
    assert iso["negatives"]["noise"] == 0.0 and iso["negatives"]["sharpness"] == 1.0
    pair = _generate(client, preset="pair:noise,sharpness@0.25", steps=2)["manifest"]
    assert pair["negatives"]["noise"] == 0.25 and pair["negatives"]["sharpness"] == 0.75
    best = _generate(client, best_of=3, select_by="colorfulness", seed=5, steps=2)["manifest"]
    assert best["best_of"] == 3 and best["seed"] == 5 and best["draw"] in (0, 1, 2)
    assert best["score"] is not None
    # ω over part of the trajectory: another image from the same noise, recorded in its row
    part = _generate(client, target="sharpness=0.25,noise=1", seed=3, steps=3,
                     guidance_interval="0.5,1")  # fmt: skip
    assert part["manifest"]["guidance_interval"] == [0.5, 1.0] and part["image"] != first["image"]
    assert first["manifest"]["guidance_interval"] == [0.0, 1.0]
    assert first["manifest"]["caption_guidance"] == 0.0


@pytest.mark.parametrize(
    "params, words",
    [
        ({"target": "sharpness=1.5"}, "outside [0, 1]"),
        ({"target": "sharpness=-0.1"}, "outside [0, 1]"),
        ({"negative": "noise=2"}, "outside [0, 1]"),
        ({"target": "sharpness=nan"}, "outside [0, 1]"),
        ({"target": "sharpness=abc"}, "not a number"),
        ({"target": "aesthetic=0.5"}, "knows no reward"),
        ({"target": "sharpness"}, "REWARD=VALUE"),
        ({"guidance": "1e9"}, "guidance must be between"),
        ({"guidance": "nan"}, "guidance must be between"),
        ({"guidance_interval": "0.5"}, "two noise levels LO,HI"),
        ({"guidance_interval": "0.8,0.2"}, "LO must be below HI"),
        ({"guidance_interval": "0,2"}, "guidance_interval"),
        ({"guidance_interval": "a,b"}, "two numbers LO,HI"),
        ({"caption_guidance": "2"}, "trained without caption dropout"),
        ({"caption_guidance": "-1"}, "caption_guidance must be between"),
        ({"steps": "0"}, "steps must be between"),
        ({"steps": "100000"}, "steps must be between"),
        ({"steps": "2.5"}, "whole number"),
        ({"seed": "-1"}, "seed must be between"),
        ({"best_of": "17"}, "best_of must be between"),
        ({"best_of": "2"}, "needs a reward to select by"),
        ({"best_of": "2", "select_by": "nope"}, "nope"),
        ({"preset": "bogus"}, "unknown preset"),
        ({"preset": "pair:noise@2"}, "pair:A,B@t"),
        ({"preset": "isolate:nope"}, "knows no reward"),
        ({"prompt": ""}, "write a prompt"),
        ({"prompt": "x" * 501}, "longer than 500"),
    ],
)
def test_generate_rejects_out_of_range_values(served, params, words):
    client, _, _ = served
    error = _generate(client, 400, **params)["error"]
    assert words in error, error


def test_without_run_and_bad_start(served, tmp_path):
    _, cfg, pipeline = served
    bare = TestClient(create_app(replace(cfg, run=None, shards=None)), base_url="http://127.0.0.1")
    with bare:
        assert "--run" in _message(_get(bare, "/generate", 404))
        assert "no model" in _generate(bare, 404)["error"]
        assert 'href="/generate"' not in _get(bare, "/").text
        shard, key = _ok_samples(pipeline.db, 1)[0]
        assert "no shard named" in _message(_get(bare, "/image", 404, shard=shard, key=key))
    with pytest.raises(MiroError, match="database not found"):
        create_app(replace(cfg, db=tmp_path / "missing.duckdb"))
    (tmp_path / "empty.duckdb").write_bytes(b"")
    with pytest.raises(MiroError):
        create_app(replace(cfg, db=tmp_path / "empty.duckdb"))
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    with pytest.raises(MiroError, match="not a miro database"):
        create_app(replace(cfg, db=tmp_path / "other.duckdb"))
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", str(tmp_path / "missing.duckdb")])
    assert result.exit_code == 2 and "database not found" in result.output
    result = runner.invoke(cli_app, ["serve", str(cfg.db), "--port", "70000"])
    assert result.exit_code == 2 and "--port must be between" in result.output


def test_cli_serves_until_interrupted(served):
    """`miro serve` as a real process: it prints its URL, answers, and stops on Ctrl-C."""
    _, cfg, pipeline = served
    args = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        str(cfg.db),
        "--shards",
        str(pipeline.shards),
    ]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [*args, "--port", "0"], stderr=subprocess.PIPE, text=True, env=env, cwd=root
    )
    try:
        url = None
        for line in proc.stderr:  # the URL line is the sync point: the socket listens before it
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url, "no URL printed"
        with urllib.request.urlopen(url + "query") as response:  # queued until accepted
            assert response.status == 200 and b"Example queries" in response.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with _bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only then
