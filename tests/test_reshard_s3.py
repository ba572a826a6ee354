"""Reshard with both ends in a bucket (a real S3 endpoint: moto's server on 127.0.0.1): source
tars read by ranged reads, the output uploaded and committed manifest last, read back with
webdataset; a rerun replaces it only once complete; a missing bucket is one line."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

from miro_data.reshard import ReshardConfig, reshard
from miro_data.trainshards import MANIFEST, Manifest, read_manifest, read_sample
from tests.s3_fixtures import s3, s3_endpoint  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _pipe(url: str) -> str:
    """A webdataset `pipe:` URL that streams an object with s3fs (the endpoint from the env)."""
    code = f"import s3fs, sys; sys.stdout.buffer.write(s3fs.S3FileSystem().cat({url!r}))"
    return f"pipe:{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def _read_back(store, prefix: str) -> tuple[Manifest, dict[str, list]]:
    fs = store.fs()
    fs.invalidate_cache()
    manifest = Manifest.from_json(fs.cat(f"{store.bucket}/{prefix}/{MANIFEST}"), prefix)
    samples = {}
    for entry in manifest.shards:
        raw = wds.WebDataset(_pipe(store.url(prefix, entry.name)), shardshuffle=False)
        samples[entry.name] = [read_sample(r) for r in raw]
    return manifest, samples


def test_reshard_from_a_bucket_to_a_bucket(pipeline, s3, tmp_path) -> None:  # noqa: F811
    fs = s3.fs()
    for tar in sorted(pipeline.shards.glob("*.tar")):
        fs.put_file(str(tar), f"{s3.bucket}/src/{tar.name}")
    args = dict(db=pipeline.db, shard_size=64, shuffle_seed=3)  # as the pipeline's own
    report = reshard(ReshardConfig(shards=s3.url("src"), out=s3.url("train"), **args))
    manifest, samples = _read_back(s3, "train")
    local = read_manifest(pipeline.train)
    assert manifest.shards == local.shards and report.samples == local.total
    for entry in local.shards:  # the same tars as a local reshard, byte for byte
        assert (
            fs.cat(f"{s3.bucket}/train/{entry.name}") == (pipeline.train / entry.name).read_bytes()
        )
    first = samples[local.shards[0].name][0]
    assert first.image and first.meta.bins and first.meta.source_shard  # read back whole
    # a rerun needs --overwrite; with it, a smaller output replaces the old one whole
    with pytest.raises(Exception, match="--overwrite"):
        reshard(ReshardConfig(shards=s3.url("src"), out=s3.url("train"), **args))
    where = "sharpness > 0"
    reshard(ReshardConfig(shards=s3.url("src"), out=s3.url("train"), overwrite=True,
                          where=where, **args))  # fmt: skip
    manifest, samples = _read_back(s3, "train")
    names = {p.rpartition("/")[2] for p in fs.find(f"{s3.bucket}/train")}
    assert manifest.where == where and names == {e.name for e in manifest.shards} | {MANIFEST}
    assert sum(len(v) for v in samples.values()) == manifest.total
    assert fs.ls(s3.bucket, detail=False, refresh=True) == [
        f"{s3.bucket}/src",
        f"{s3.bucket}/train",
    ]


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)], cwd=ROOT, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_a_killed_commit_is_finished_by_the_next_run(pipeline, s3) -> None:  # noqa: F811
    fs = s3.fs()
    out = s3.url("train")
    base = ("data", "reshard", pipeline.shards, pipeline.db, out, "--shard-size", "64")
    assert _cli(*base).returncode == 0
    old = _objects(fs, s3, "train")
    env_fault = {**os.environ, "PYTHONPATH": str(ROOT), "MIRO_FAULT": "reshard.finalize"}
    killed = subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, base), "--overwrite", "--where",
         "sharpness > 0"], cwd=ROOT, capture_output=True, timeout=120, env=env_fault,
    )  # fmt: skip
    assert killed.returncode == -9
    assert _objects(fs, s3, "train") == old  # the marker is down, the old output whole
    # the next run (even one that then fails) finishes the replacement the killed run began
    result = _cli("data", "reshard", pipeline.shards, pipeline.db, out)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    fs.invalidate_cache()
    manifest = Manifest.from_json(fs.cat(f"{s3.bucket}/train/{MANIFEST}"), "m")
    assert manifest.where == "sharpness > 0"
    assert all(p.startswith(f"{s3.bucket}/train") for p in fs.find(s3.bucket))


def _objects(fs, store, prefix: str) -> list[str]:
    fs.invalidate_cache()  # another process changed the bucket
    return sorted(fs.find(f"{store.bucket}/{prefix}"))


@pytest.mark.parametrize("where", ["missing-bucket", "bucket-root"])
def test_a_missing_bucket_is_one_line_and_writes_nothing(pipeline, s3, where) -> None:  # noqa: F811
    out = "s3://no-such-bucket-here/train" if where == "missing-bucket" else f"s3://{s3.bucket}"
    result = _cli("data", "reshard", pipeline.shards, pipeline.db, out)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert ("does not exist" if where == "missing-bucket" else "give a prefix") in result.stderr
    fs = s3.fs()
    fs.invalidate_cache()
    assert fs.find(s3.bucket) == []
