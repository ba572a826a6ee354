"""Reshard out of core: the shuffle is a DuckDB sort that spills past its memory limit, and the
rows stream to the writer one output shard at a time."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import duckdb
import pytest

from miro_data.bins import BinsConfig, bins
from miro_data.db import connect
from miro_data.reshard import ReshardConfig, reshard
from miro_data.reshard_select import open_selection
from miro_data.trainshards import read_manifest, read_samples

N = 30_000  # samples, each with a 2 KB json record: a 60 MB selection
META = 2048
MEMORY = 16  # MB of budget: each part of the shuffle holds at most about half


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """One source tar of N tiny members and a database scoring them all (one reward)."""
    root = tmp_path_factory.mktemp("scale")
    with tarfile.open(root / "s.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(N):
            data = i.to_bytes(4, "big")  # reshard copies bytes, it never decodes them
            info = tarfile.TarInfo(f"{i:06d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    db = root / "big.duckdb"
    con = connect(db, create=True)
    pad = json.dumps({"pad": "x" * META})
    con.execute(
        """INSERT INTO samples SELECT 's', lpad(i::VARCHAR, 6, '0'), 'c' || i, NULL, 8, 8, 'png',
           'ok', NULL, ? FROM range(?) t(i)""",
        [pad, N],
    )
    con.execute(
        "INSERT INTO scores SELECT 's', lpad(i::VARCHAR, 6, '0'), 'r1', '1', (i * 7919) % 1000 "
        "FROM range(?) t(i)",
        [N],
    )
    con.execute("INSERT INTO reward_versions VALUES ('r1', '1', now(), now())")
    con.close()
    bins(BinsConfig(db=db, n_bins=8))
    return root, db


def test_the_shuffle_sorts_past_its_memory_limit_and_streams_shard_by_shard(corpus) -> None:
    root, db = corpus
    cfg = ReshardConfig(str(root / "s.tar"), db, str(root / "out"), shard_size=7_000,
                        shuffle_seed=5, sort_memory_mb=MEMORY)  # fmt: skip
    with open_selection(cfg) as sel:
        # 16 MB for a 60 MB selection: streamed into parts of at most half that, on disk
        assert len(sel.parts) == 8
        assert max(p.stat().st_size for p in sel.parts) < MEMORY / 2 * 1.3 * 2**20
        shards = [job.columns["key"] for job in sel.jobs()]
    assert [len(s) for s in shards] == [7_000] * 4 + [2_000]
    order = [k for s in shards for k in s]
    assert sorted(order) == [f"{i:06d}" for i in range(N)]
    expected = duckdb.connect(str(db), read_only=True).execute(
        "SELECT key FROM samples ORDER BY hash(shard, key, 5), shard, key"
    )
    assert order == [k for (k,) in expected.fetchall()]  # the seeded order, nothing else
    with open_selection(ReshardConfig(str(root), db, "o", shuffle_seed=6)) as sel:
        other = [k for job in sel.jobs() for k in job.columns["key"]]
    assert other != order and sorted(other) == sorted(order)


def test_a_memory_bound_reshard_writes_every_sample_once(corpus) -> None:
    root, db = corpus
    out = root / "train"
    report = reshard(ReshardConfig(str(root), db, out, shard_size=10_000, where="r1 < 50",
                                   sort_memory_mb=MEMORY))  # fmt: skip
    expected = {f"{i:06d}" for i in range(N) if (i * 7919) % 1000 < 50}
    assert report.samples == len(expected) and report.shards == 1
    samples = list(read_samples(out))
    assert {s.key for s in samples} == expected
    assert all(s.image == int(s.key).to_bytes(4, "big") for s in samples)
    assert samples[0].meta.source == {"pad": "x" * META}
    assert read_manifest(out).total == len(expected)


def test_written_tars_read_back_with_tarfile_and_the_member_index(tmp_path: Path) -> None:
    """Headers built directly: tarfile's own bytes for a short name, its GNU long name past
    100 bytes; the archive ends on a whole record."""
    from miro_data.tarindex import member_index, ustar_header
    from miro_data.trainshards import SampleMeta, TrainSample
    from miro_data.trainshards_write import write_tar

    info = tarfile.TarInfo("000000001.jpg")
    info.size, info.mtime, info.mode = 1234, 0, 0o444
    assert ustar_header("000000001.jpg", 1234, 0) == info.tobuf(tarfile.USTAR_FORMAT)
    keys = ["a", "k" * 150]
    samples = [
        TrainSample(SampleMeta(k, "c", None, "s", 1, {}, {}, {}, {}), "c", b"x" * 700, "png")
        for k in keys
    ]
    with open(tmp_path / "t.tar", "wb") as f:
        assert write_tar(f, samples) == 2
    assert (tmp_path / "t.tar").stat().st_size % 10240 == 0
    with tarfile.open(tmp_path / "t.tar") as tar:
        names = tar.getnames()
        assert tar.extractfile(f"{keys[1]}.png").read() == b"x" * 700
    assert names == [f"{k}.{s}" for k in keys for s in ("json", "png", "txt")]
    with open(tmp_path / "t.tar", "rb") as f:
        assert [n for n, _, _ in member_index(f)] == names
