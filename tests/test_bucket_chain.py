"""The data stages end to end with both ends in a bucket (a real S3 endpoint: moto's server on
127.0.0.1): download (URL list and shards in the bucket) → annotate (shards and parts in the
bucket) → bins → reshard (into the bucket), read back with webdataset — the same training
samples as the session pipeline's, which ran the same stages on local folders."""

from __future__ import annotations

import shlex
import sys

import polars as pl
import webdataset as wds

from miro_data.annotate import AnnotateConfig, annotate
from miro_data.bins import BinsConfig, bins
from miro_data.download import DownloadConfig, download, file_urls
from miro_data.reshard import ReshardConfig, reshard
from miro_data.trainshards import MANIFEST, Manifest, read_manifest, read_sample
from tests.conftest import CLASSIC
from tests.s3_fixtures import s3, s3_endpoint  # noqa: F401


def _pipe(url: str) -> str:
    """A webdataset `pipe:` URL streaming an object with s3fs (the endpoint from the env)."""
    code = f"import s3fs, sys; sys.stdout.buffer.write(s3fs.S3FileSystem().cat({url!r}))"
    return f"pipe:{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def _samples(urls: list[str]) -> dict[str, tuple]:
    """key → (caption, levels, image bytes) of every sample in the tars."""
    out = {}
    for raw in wds.WebDataset(urls, shardshuffle=False):
        sample = read_sample(raw)
        out[sample.meta.key] = (sample.meta.caption, dict(sample.meta.bins), sample.image)
    return out


def test_download_annotate_bins_reshard_with_both_ends_in_a_bucket(
    pipeline,
    s3,  # noqa: F811
    tmp_path,
) -> None:
    fs = s3.fs()
    # The session pipeline's URL list, its paths as the file:// URLs download made of them
    # (a list in a bucket has no folder that relative paths could be read from).
    urls = pl.read_parquet(pipeline.url_list)
    local_list = tmp_path / "urls.parquet"
    urls.with_columns(file_urls(urls["url"], pipeline.url_list.parent)).write_parquet(local_list)
    fs.put_file(str(local_list), f"{s3.bucket}/urls.parquet")

    report = download(
        DownloadConfig(
            url_list=s3.url("urls.parquet"), out=s3.url("shards"), image_size=32,
            resize_mode="no", encode_format="png", processes=1, threads=8, shard_size=100,
        )
    )  # fmt: skip
    assert report.successes == pipeline.n and report.count == pipeline.n + pipeline.extra_urls
    db = tmp_path / "corpus.duckdb"
    annotate(AnnotateConfig(shards=s3.url("shards"), db=db, rewards=CLASSIC,
                            parts=s3.url("parts")))  # fmt: skip
    bins(BinsConfig(db=db, n_bins=8))
    reshard(ReshardConfig(shards=s3.url("shards"), db=db, out=s3.url("train"), shard_size=64,
                          shuffle_seed=3))  # fmt: skip

    fs.invalidate_cache()
    manifest = Manifest.from_json(fs.cat(f"{s3.bucket}/train/{MANIFEST}"), "train")
    local = read_manifest(pipeline.train)
    assert [(e.name, e.count) for e in manifest.shards] == [(e.name, e.count) for e in local.shards]
    remote = _samples([_pipe(s3.url("train", e.name)) for e in manifest.shards])
    assert len(remote) == local.total
    assert remote == _samples([str(pipeline.train / e.name) for e in local.shards])
    assert not fs.find(f"{s3.bucket}/parts", withdirs=False) or all(
        p.endswith(".miro-parts-owner") for p in fs.find(f"{s3.bucket}/parts")
    )  # every part ingested and removed
