"""Shards, parts and training shards in a bucket: a real S3 endpoint (moto's server) on 127.0.0.1.

Annotating from the bucket must leave the same tables as annotating the local folder; the
trainer must stream the same samples; every storage failure is one line, exit 2, nothing written.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import requests
from typer.testing import CliRunner

from cli.main import app
from miro_data import db, handoff, storage
from miro_data.annotate import AnnotateConfig, annotate, recover_parts
from miro_data.common import MiroError
from miro_data.shards import iter_samples, list_shards
from tests import s3_fixtures
from tests.conftest import CLASSIC

s3, s3_endpoint = s3_fixtures.s3, s3_fixtures.s3_endpoint  # the fixtures, for this module

TABLES = {
    "samples": "shard, key, caption, url, width, height, image_ext, status, error, meta",
    "scores": "shard, key, reward, version, value",
    "failures": "shard, key, stage, reward, version, reason",
    "ledger": "shard, reward, version, n_read, n_scored, n_failed",
}


@pytest.fixture(autouse=True)
def _quiet_server() -> Iterator[None]:
    """moto's server runs in this process: its request log would reach the CLI's stderr."""
    server_log = logging.getLogger("werkzeug")
    level = server_log.level
    server_log.setLevel(logging.WARNING)
    yield
    server_log.setLevel(level)


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_one_line(result, fragment: str) -> str:
    """Exit status 2, one line on stderr, `error:` + the fragment, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def _rows(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            t: con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").fetchall()
            for t, cols in TABLES.items()
        }


def _upload(s3, folder: Path, prefix: str) -> str:
    fs = s3.fs()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            fs.put_file(str(f), f"{s3.bucket}/{prefix}/{f.relative_to(folder)}")
    return s3.url(prefix)


def _objects(s3, prefix: str) -> list[str]:
    fs = s3.fs()
    fs.invalidate_cache()
    return fs.find(f"{s3.bucket}/{prefix}") if fs.exists(f"{s3.bucket}/{prefix}") else []


# ----------------------------------------------------------------------------
# storage.py
# ----------------------------------------------------------------------------


def test_locations_parse_join_and_commit(s3, tmp_path: Path) -> None:
    assert storage.scheme("s3://b/x") == "s3" and storage.scheme("pipe:cat x") == "pipe"
    assert not storage.is_url("/a/b") and not storage.is_url("file:///a/b")
    assert storage.looks_like_url(Path("s3://b/x")) and not storage.looks_like_url("x/y.duckdb")
    assert storage.join("s3://b/p/", "q", "r.tar") == "s3://b/p/q/r.tar"
    url = s3.url("dir", "f.bin")
    storage.write_bytes(url, b"abc")
    assert storage.read_bytes(url) == b"abc" and storage.exists(url)
    assert storage.read_if_exists(s3.url("dir", "none")) is None
    local = tmp_path / "part"
    local.mkdir()
    for name in ("done.json", "a.parquet", "b.parquet"):
        (local / name).write_bytes(name.encode())
    storage.put_folder(local, s3.url("part"), last="done.json")
    assert storage.list_names(s3.url("part")) == ["a.parquet", "b.parquet", "done.json"]
    storage.remove(s3.url("part"))
    assert storage.list_names(s3.url("part")) == []
    with pytest.raises(MiroError, match="read-only"):
        storage.write_bytes("https://example.invalid/x", b"")


def test_shards_are_listed_and_streamed_from_a_bucket_a_pipe_and_a_brace_list(pipeline, s3) -> None:
    local = list_shards(pipeline.shards)
    root = _upload(s3, pipeline.shards, "src")
    for source in (root, f"{root}/*.tar", f"{root}/{{00000..00002}}.tar"):
        remote = list_shards(source)
        assert [s.name for s in remote] == [s.name for s in local], source
    one = list_shards(f"{root}/00001.tar")
    assert [s.name for s in one] == ["00001"]
    errors: list[str] = []
    keys = [r.key for r in iter_samples(one[0], errors)]
    assert not errors and keys == [r.key for r in iter_samples(local[1])]
    as_file_url = list_shards(f"file://{pipeline.shards}")
    assert [(s.name, s.path) for s in as_file_url] == [(s.name, s.path) for s in local]
    assert (
        handoff.parts_dir(Path("x.db"), f"file://{pipeline.db.parent}/p")
        == pipeline.db.parent / "p"
    )
    piped = list_shards(f"pipe:cat {local[1].path}")
    assert [r.key for r in iter_samples(piped[0], errors)] == keys and not errors


# ----------------------------------------------------------------------------
# annotate
# ----------------------------------------------------------------------------


def test_annotate_from_a_bucket_equals_annotating_the_local_folder(
    pipeline, s3, tmp_path: Path
) -> None:
    shards = _upload(s3, pipeline.shards, "shards")
    out = tmp_path / "remote.duckdb"
    cfg = AnnotateConfig(shards=shards, db=out, rewards=CLASSIC, parts=s3.url("parts"))
    report = annotate(cfg)
    assert report.unreadable == () and report.shards == 3
    assert _rows(out) == _rows(pipeline.db)  # download failures from the sidecars included
    # ingested parts are removed from the bucket; the record of whose parts these are stays
    assert _objects(s3, "parts") == [f"{s3.bucket}/parts/{handoff.OWNER}"]
    assert not Path(f"{out}.parts").exists()
    assert annotate(cfg).skipped == 3  # the ledger holds for URL shards too


def test_unreadable_and_cut_shard_objects_are_read_failures_the_rest_is_scored(
    pipeline, s3, tmp_path: Path
) -> None:
    root = _upload(s3, pipeline.shards, "shards")
    data = (pipeline.shards / "00001.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        cut = tar.getmembers()[30].offset  # a member boundary: tarfile would see a clean end
    s3.fs().pipe_file(f"{s3.bucket}/shards/00001.tar", data[:cut])
    out = tmp_path / "db.duckdb"
    report = annotate(
        AnnotateConfig(shards=f"{root}/{{00000..00003}}.tar", db=out, rewards=("sharpness",))
    )
    assert report.unreadable == ("00001", "00003")
    with duckdb.connect(str(out), read_only=True) as con:
        reasons = dict(
            con.execute("SELECT shard, reason FROM failures WHERE stage = 'read'").fetchall()
        )
        ledger = con.execute(
            "SELECT shard, n_read, n_scored + n_failed FROM ledger ORDER BY 1"
        ).fetchall()
    assert "truncated tar" in reasons["00001"] and "not found" in reasons["00003"]
    assert [s for s, _, _ in ledger] == ["00000", "00002"]  # only shards read to their end
    assert all(n_read == n and n_read > 0 for _, n_read, n in ledger)


def test_parts_left_in_a_bucket_are_recovered(s3, tmp_path: Path) -> None:
    parts = s3.url("parts")
    rows = {
        "samples": [{"shard": "s", "key": "k", "caption": "c", "status": "ok", "meta": "{}"}],
        "scores": [{"shard": "s", "key": "k", "reward": "r", "version": "1", "value": 0.5}],
        "failures": [],
    }
    marker = {"shard": "s", "retry": False, "rewards": {"r": {"version": "1", "seconds": 0}}}
    handoff.write_part(parts, "s", rows, marker)
    s3.fs().pipe_file(f"{s3.bucket}/parts/unfinished-1/samples.parquet", b"half")
    path = tmp_path / "db.duckdb"
    handoff.claim_parts(parts, path)
    handoff.claim_parts(parts, path)  # the same database again: its own
    with pytest.raises(MiroError, match="holds the parts of another database"):
        handoff.claim_parts(parts, tmp_path / "other.duckdb")
    con = db.connect(path, create=True)
    try:
        assert recover_parts(con, path, parts) == 1
        assert con.execute(
            "SELECT shard, key, n_read FROM ledger JOIN samples USING (shard)"
        ).fetchall() == [("s", "k", 1)]
    finally:
        con.close()
    assert _objects(s3, "parts") == [f"{s3.bucket}/parts/{handoff.OWNER}"]  # the owner record stays


# ----------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written
# ----------------------------------------------------------------------------


def test_a_missing_bucket_or_a_database_url_is_one_line(pipeline, s3, tmp_path: Path) -> None:
    out = tmp_path / "db.duckdb"
    common = ["data", "annotate", "--rewards", "sharpness"]
    result = run(*common, "s3://no-such-bucket-miro/shards", out)
    assert "the bucket s3://no-such-bucket-miro does not exist" in assert_one_line(
        result, "s3://no-such-bucket-miro"
    )
    result = run(*common, pipeline.shards, out, "--parts", "s3://no-such-bucket-miro/parts")
    assert_one_line(result, "does not exist")
    result = run(*common, pipeline.shards, "s3://bucket/x.duckdb")
    assert_one_line(result, "must be a local file path, not a URL")
    result = run(*common, pipeline.shards, out, "--parts", "https://host/parts")
    assert_one_line(result, "read-only")
    result = run("train", "s3://no-such-bucket-miro/train", "-o", tmp_path / "run")
    assert_one_line(result, "does not exist")
    assert list(tmp_path.iterdir()) == []  # nothing written: no database, no lock, no run


def _read_only_user(bucket: str) -> dict:
    """An IAM user allowed to list and get the bucket's objects, nothing else; its key."""
    import boto3

    iam = boto3.client("iam")
    name = f"reader-{bucket}"
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
              "Action": ["s3:ListBucket", "s3:GetObject"],
              "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}  # fmt: skip
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=name)["AccessKey"]


def test_wrong_credentials_are_one_line(pipeline, s3, tmp_path: Path, monkeypatch) -> None:
    shards = _upload(s3, pipeline.shards, "shards")
    # moto checks signatures only once INITIAL_NO_AUTH_ACTION_COUNT requests were served:
    # 0 from now on (its /moto-api/reset-auth), then back to never, for the other tests.
    reader = _read_only_user(s3.bucket)
    requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        out = tmp_path / "db.duckdb"
        result = run("data", "annotate", "--rewards", "sharpness", shards, out)
        line = assert_one_line(result, shards)
        assert "access denied" in line and "AWS_ACCESS_KEY_ID" in line
        result = run("data", "annotate", "--rewards", "sharpness", pipeline.shards, out,
                     "--parts", s3.url("parts"))  # fmt: skip
        assert_one_line(result, "access denied")
        # a user who may read the bucket but not write to it: --parts fails before anything
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader["SecretAccessKey"])
        assert len(list_shards(shards)) == 3
        result = run("data", "annotate", "--rewards", "sharpness", shards, out,
                     "--parts", s3.url("parts"))  # fmt: skip
        assert "cannot write" in assert_one_line(result, "access denied")
    finally:
        requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_endpoint_is_one_line(s3, tmp_path: Path, monkeypatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's standard setting: fail fast
    result = run("data", "annotate", "--rewards", "sharpness", s3.url("shards"), tmp_path / "d.db")
    assert_one_line(result, "the endpoint is unreachable")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# Training shards streamed from a bucket
# ----------------------------------------------------------------------------


def test_training_shards_stream_from_a_bucket(pipeline, s3) -> None:
    from miro_train.data import _samples_of, open_shards

    url = _upload(s3, pipeline.train, "train")
    local, remote = open_shards(pipeline.train), open_shards(url)
    assert remote.manifest == local.manifest and remote.counts == local.counts
    assert remote.urls[0].startswith(f"{url}/")
    keys = [s["__key__"] for s in _samples_of(list(remote.urls))]
    assert (
        keys == [s["__key__"] for s in _samples_of(list(local.urls))] and len(keys) == local.total
    )
    assert open_shards(Path(url)).urls == remote.urls  # a Path-typed option's `s3:/…` mended
    s3.fs().rm(f"{s3.bucket}/train/{local.manifest.shards[0].name}")
    with pytest.raises(MiroError, match="missing"):
        open_shards(url)


def test_miro_train_steps_on_shards_in_a_bucket(pipeline, s3, tmp_path: Path) -> None:
    from train_fixtures import micro_config

    url = _upload(s3, pipeline.train, "train")
    config = micro_config(tmp_path / "micro.json")
    out = tmp_path / "run"
    result = run("train", url, "-o", out, "--model", config, "--steps", "2", "--batch-size", "8",
                 "--ckpt-every", "2", "--log-every", "1", "--warmup", "1", "--workers", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 3  # a header and one row per step: batches came from the bucket


def test_without_s3fs_installed_a_bucket_is_one_line_saying_what_to_install(tmp_path) -> None:
    import subprocess
    import sys

    # a fresh interpreter in which s3fs cannot be imported, as where the extra is not installed
    code = (
        "import runpy, sys; sys.modules['s3fs'] = None; "
        f"sys.argv = ['miro', 'data', 'annotate', 's3://b/shards', {str(tmp_path / 'd.db')!r}, "
        "'-r', 'sharpness']; runpy.run_module('cli.main', run_name='__main__')"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert 's3://b/shards: needs s3fs, not installed: pip install "miro[s3]"' in lines[0]
    assert list(tmp_path.iterdir()) == []
