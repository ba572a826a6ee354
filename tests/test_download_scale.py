"""`miro data download` beyond one process: img2dataset's Ray distributor on a local Ray and on
a two-node `ray.cluster_utils.Cluster`, a URL list and shards in a bucket (a real S3 endpoint
on 127.0.0.1), and the one-line refusals when an engine, a cluster or a bucket is missing."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest
import webdataset as wds
from typer.testing import CliRunner

from cli.main import app
from miro_data.download import DownloadConfig, download, file_urls, summarize
from tests.s3_fixtures import s3, s3_endpoint  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _samples(shards: str | Path) -> dict[str, str]:
    """Every downloaded sample's source URL → its caption, whichever way the tars were written."""
    urls = sorted(str(p) for p in Path(shards).glob("*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=False).decode()
    return {s["json"]["url"]: s["txt"] for s in dataset}


def _cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "data", "download", *map(str, args)],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def assert_one_line(result, fragment: str) -> None:
    """Exit 2 and one `error:` line naming the problem, last on stderr; no traceback."""
    code = getattr(result, "returncode", getattr(result, "exit_code", None))
    assert code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert result.stderr.rstrip().endswith(errors[0].rstrip()), result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------


def test_ray_distributor_on_a_local_ray_downloads_what_multiprocessing_does(
    pipeline, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    cfg = DownloadConfig(
        url_list=pipeline.url_list, out=out, image_size=32, resize_mode="no",
        encode_format="png", processes=2, threads=4, shard_size=121, distributor="ray",
    )  # fmt: skip
    report = download(cfg)  # no --ray-address: starts a local 2-CPU Ray and shuts it down
    expected = summarize(pipeline.shards)
    assert (report.count, report.successes, report.failures) == (
        expected.count, expected.successes, expected.failures,
    )  # fmt: skip
    assert report.successes == pipeline.n and report.shards == 2
    assert _samples(out) == _samples(pipeline.shards)
    import ray

    assert not ray.is_initialized()  # the Ray it started is gone


def test_ray_distributor_on_a_two_node_cluster_by_address(
    pipeline, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        out = tmp_path / "cluster"
        cfg = DownloadConfig(
            url_list=pipeline.url_list, out=out, image_size=32, resize_mode="no",
            encode_format="png", threads=4, shard_size=121, distributor="ray",
            ray_address=cluster.address,
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="miro_data.download"):
            report = download(cfg)
    finally:
        cluster.shutdown()
    # file:// URLs on a cluster: the log says they must be on a shared filesystem
    assert any("Ray has 2 nodes" in r.message and "shared" in r.message for r in caplog.records)
    assert report.successes == pipeline.n and report.shards == 2  # 242 rows / 121
    assert report.count == pipeline.n + pipeline.extra_urls
    assert _samples(out) == _samples(pipeline.shards)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--distributor", "ray", "--ray-address", "127.0.0.1:1"), "cannot reach Ray at --ray-address 127.0.0.1:1"),
        (("--distributor", "ray", "--ray-address", "ray://127.0.0.1:1"), "cannot reach Ray at --ray-address ray://"),
        (("--distributor", "ray", "--ray-address", "nowhere"), "use auto, HOST:PORT or ray://HOST:PORT"),
        (("--ray-address", "auto"), "--ray-address is for --distributor ray"),
    ],
)  # fmt: skip
def test_a_ray_address_that_cannot_work_is_one_line(
    pipeline, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "download", str(pipeline.url_list), str(out), *args])
    assert_one_line(result, fragment)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize(
    ("distributor", "fragment"),
    [("ray", 'needs Ray: pip install "miro[ray]"'), ("pyspark", "needs pyspark: pip install")],
)
def test_a_missing_engine_is_one_line_naming_what_to_install(
    pipeline, tmp_path: Path, distributor: str, fragment: str
) -> None:
    # the engine's import fails as if it were not installed (a None entry in sys.modules)
    hide = f"import sys; sys.modules[{distributor!r}] = None; from cli.main import main; main()"
    argv = ["data", "download", str(pipeline.url_list), str(tmp_path / "o"), "--distributor"]
    result = subprocess.run(
        [sys.executable, "-c", hide, *argv, distributor],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_one_line(result, fragment)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# A bucket
# ----------------------------------------------------------------------------


def _upload_url_list(pipeline, s3, name: str = "urls.parquet") -> str:  # noqa: F811
    """The session's URL list with its paths made absolute file:// URLs, put in the bucket."""
    df = pl.read_parquet(pipeline.url_list)
    df = df.with_columns(file_urls(df["url"], pipeline.url_list.parent))
    buffer = io.BytesIO()
    df.write_parquet(buffer)
    s3.fs().pipe_file(f"{s3.bucket}/lists/{name}", buffer.getvalue())
    return s3.url("lists", name)


def test_url_list_and_shards_in_a_bucket(pipeline, s3, tmp_path: Path) -> None:  # noqa: F811
    url_list, out = _upload_url_list(pipeline, s3), s3.url("shards") + "/"  # "/" is dropped
    result = runner.invoke(
        app,
        ["data", "download", url_list, out, "--image-size", "32", "--resize-mode", "no",
         "--encode-format", "png", "--processes", "1", "--threads", "4", "--shard-size", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report, local = summarize(out), summarize(pipeline.shards)  # stats read from the bucket
    assert (report.shards, report.count, report.successes, report.failures) == (
        local.shards, local.count, local.successes, local.failures,
    )  # fmt: skip
    fs = s3.fs()
    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{s3.bucket}/shards"))
    assert names == sorted(
        f"{i:05d}{ext}" for i in range(3) for ext in (".tar", ".parquet", "_stats.json")
    )
    for name in names:  # the tars read back through s3fs hold what the local ones do
        if name.endswith(".tar"):
            fs.get_file(f"{s3.bucket}/shards/{name}", str(tmp_path / name))
    with (
        tarfile.open(tmp_path / "00000.tar") as tar,
        tarfile.open(pipeline.shards / "00000.tar") as ref,
    ):
        assert sorted(tar.getnames()) == sorted(ref.getnames())  # threads order them
    assert _samples(tmp_path) == _samples(pipeline.shards)


def test_a_bucket_that_cannot_be_used_is_one_line_and_nothing_is_written(
    pipeline,
    s3,  # noqa: F811
    tmp_path: Path,
) -> None:
    url_list = _upload_url_list(pipeline, s3)
    relative = s3.url("lists", "relative.parquet")
    s3.fs().put_file(str(pipeline.url_list), relative.removeprefix("s3://"))
    before = sorted(s3.fs().find(s3.bucket))
    cases = [
        ((url_list, "s3://no-such-bucket-miro/shards"), "cannot write s3://no-such-bucket-miro/shards"),
        (("s3://no-such-bucket-miro/urls.parquet", s3.url("o")), "URL list not found"),
        ((s3.url("lists", "missing.parquet"), s3.url("o")), "URL list not found"),
        ((relative, s3.url("o")), "needs full URLs"),
        ((url_list, "nosuchproto://x/y"), "nosuchproto"),
    ]  # fmt: skip
    for args, fragment in cases:
        result = runner.invoke(app, ["data", "download", *args])
        assert_one_line(result, fragment)
    # a wrong endpoint, in a process of its own (this one's s3fs caches its filesystems)
    result = _cli(pipeline.url_list, s3.url("o"), env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert_one_line(result, f"cannot write {s3.url('o')}")
    s3.fs().invalidate_cache()
    assert sorted(s3.fs().find(s3.bucket)) == before  # no probe, no _tmp, no shard
    assert list(tmp_path.iterdir()) == []


def test_pyspark_without_java_is_one_line(pipeline, tmp_path: Path) -> None:
    # pyspark itself is not installed here: an empty package stands in for it, so the check
    # that follows the import (Java, which pyspark starts) is what the test exercises
    (tmp_path / "site" / "pyspark").mkdir(parents=True)
    (tmp_path / "site" / "pyspark" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "data", "download", str(pipeline.url_list),
         str(tmp_path / "o"), "--distributor", "pyspark"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**env, "PATH": str(tmp_path), "PYTHONPATH": f"{REPO}:{tmp_path / 'site'}"},
    )  # fmt: skip
    assert_one_line(result, "--distributor pyspark needs Java")
    assert not (tmp_path / "o").exists()
