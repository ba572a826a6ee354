"""Annotate: failures never stop a run, the ledger makes re-runs exact, workers agree."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from miro_data.annotate import AnnotateConfig, annotate, plan
from miro_data.db import connect
from miro_data.local_engine import process_shard
from miro_data.prefetch import Prefetcher, ShardJob
from miro_data.shards import list_shards
from miro_data.synth import SynthConfig, generate_sample

REPO = Path(__file__).resolve().parents[1]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size (a decompression bomb as PIL sees it)."""
    data = bytearray(_png(Image.new("RGB", (4, 4))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def messy_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards: one full of odd and broken images, one cut off in the middle of the tar."""
    root = tmp_path_factory.mktemp("messy")
    cfg = SynthConfig(out=root, n=40, seed=1)
    good = [generate_sample(i, cfg) for i in range(40)]
    rgb = Image.fromarray(good[0][0])
    odd = {
        "cmyk": ("jpg", _jpeg(rgb.convert("CMYK"))),
        "sixteen_bit": (
            "png",
            _png(Image.fromarray((np.arange(1024).reshape(32, 32) * 60).astype(np.uint16))),
        ),
        "rgba": ("png", _png(rgb.convert("RGBA"))),
        "palette": ("png", _png(rgb.convert("P", palette=Image.Palette.ADAPTIVE))),
        "gray": ("png", _png(rgb.convert("L"))),
        "one_pixel": ("png", _png(Image.new("RGB", (1, 1), (200, 30, 30)))),
    }
    broken = {
        "truncated": ("png", _png(rgb)[:60]),
        "zero_size": ("png", b""),
        "text": ("jpg", b"<html>not found</html>"),
        "bomb": ("png", _png_claiming(30_000, 30_000)),
    }
    with wds.TarWriter(str(root / "a.tar")) as sink:
        for i, (img, rec) in enumerate(good[:20]):
            sink.write(
                {"__key__": f"a{i:03d}", "png": _png(Image.fromarray(img)), "txt": rec["caption"]}
            )
        for name, (ext, data) in {**odd, **broken}.items():
            sink.write({"__key__": name, ext: data, "txt": "a photo of a red circle"})
        sink.write({"__key__": "no_image", "txt": "a caption without its image"})
    with wds.TarWriter(str(root / "b.tar")) as sink:
        for i, (img, rec) in enumerate(good[20:]):
            sink.write(
                {"__key__": f"b{i:03d}", "png": _png(Image.fromarray(img)), "txt": rec["caption"]}
            )
    data = (root / "b.tar").read_bytes()
    (root / "b.tar").write_bytes(data[: len(data) // 2 + 700])
    return root


REWARDS = ("sharpness", "noise", "colorfulness", "contrast", "shapes_alignment")


def test_failures_are_recorded_and_read_equals_scored_plus_failed(
    messy_shards: Path, tmp_path: Path
) -> None:
    db = tmp_path / "m.duckdb"
    annotate(AnnotateConfig(shards=str(messy_shards), db=db, rewards=REWARDS, batch_size=8))
    con = duckdb.connect(str(db), read_only=True)
    status = dict(con.execute("SELECT key, status FROM samples").fetchall())
    for key in ("cmyk", "sixteen_bit", "rgba", "palette", "gray", "one_pixel"):
        assert status[key] == "ok", key
    for key in ("truncated", "zero_size", "text", "bomb", "no_image"):
        assert status[key] == "undecodable", key
    reasons = dict(
        con.execute("SELECT key, reason FROM failures WHERE stage = 'decode'").fetchall()
    )
    assert "bomb" in reasons["bomb"] and "empty" in reasons["zero_size"]
    (read_failures,) = con.execute(
        "SELECT count(*) FROM failures WHERE stage = 'read' AND shard = 'b'"
    ).fetchone()
    assert read_failures == 1  # the cut-off tar is recorded, the run went on
    for shard, reward, n_read, n_scored, n_failed in con.execute(
        "SELECT shard, reward, n_read, n_scored, n_failed FROM ledger"
    ).fetchall():
        (read,) = con.execute(
            "SELECT count(*) FROM samples WHERE shard = ? AND status IN ('ok', 'undecodable')",
            [shard],
        ).fetchone()
        (scored,) = con.execute(
            "SELECT count(*) FROM scores WHERE shard = ? AND reward = ?", [shard, reward]
        ).fetchone()
        (failed,) = con.execute(
            "SELECT count(*) FROM failures WHERE shard = ? AND key IS NOT NULL AND (stage = 'decode' OR reward = ?)",
            [shard, reward],
        ).fetchone()
        assert n_read == read == scored + failed == n_scored + n_failed
    # all-white compositing of alpha, and 16-bit scaled to 8 bits (not clipped to white)
    (rgba_contrast,) = con.execute(
        "SELECT contrast FROM scores_wide WHERE key = 'sixteen_bit'"
    ).fetchone()
    assert rgba_contrast > 10


def test_retry_failed_redoes_only_failed_samples(
    messy_shards: Path, tmp_path: Path, monkeypatch
) -> None:
    db, log = tmp_path / "r.duckdb", tmp_path / "scored.txt"
    monkeypatch.setenv("MIRO_TEST_LOG", str(log))
    monkeypatch.setenv("MIRO_FLAKY", "1")
    rewards = ("tests.plugin_rewards:Flaky",)
    annotate(AnnotateConfig(shards=str(messy_shards / "a.tar"), db=db, rewards=rewards))
    con = connect(db, read_only=True)
    failed = {
        k for (k,) in con.execute("SELECT key FROM failures WHERE stage = 'score'").fetchall()
    }
    circles = {
        k
        for (k,) in con.execute(
            "SELECT key FROM samples WHERE status = 'ok' AND caption LIKE '%circle%'"
        ).fetchall()
    }
    con.close()
    assert failed and failed == circles
    log.unlink()
    monkeypatch.delenv("MIRO_FLAKY")
    annotate(
        AnnotateConfig(
            shards=str(messy_shards / "a.tar"), db=db, rewards=rewards, retry_failed=True
        )
    )
    rescored = log.read_text().splitlines()
    assert len(rescored) == len(
        failed
    )  # only the failed samples (decode failures fail again before scoring)
    con = connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM failures WHERE stage = 'score'").fetchone() == (0,)
    n_ok = con.execute("SELECT count(*) FROM samples WHERE status = 'ok'").fetchone()[0]
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM scores").fetchone() == (
        n_ok,
        n_ok,
    )


def test_adding_a_reward_scores_only_that_reward(pipeline, tmp_path: Path) -> None:
    db = tmp_path / "add.duckdb"
    annotate(AnnotateConfig(shards=str(pipeline.shards), db=db, rewards=("sharpness",)))
    con = connect(db, read_only=True)
    before = con.execute("SELECT shard, finished_at FROM ledger ORDER BY shard").fetchall()
    con.close()
    annotate(AnnotateConfig(shards=str(pipeline.shards), db=db, rewards=("sharpness", "contrast")))
    con = connect(db, read_only=True)
    after = con.execute(
        "SELECT shard, finished_at FROM ledger WHERE reward = 'sharpness' ORDER BY shard"
    ).fetchall()
    assert after == before
    counts = dict(con.execute("SELECT reward, count(*) FROM scores GROUP BY 1").fetchall())
    assert counts == {"sharpness": pipeline.n, "contrast": pipeline.n}


def test_killed_run_resumes_without_losing_or_duplicating(pipeline, tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    code = (
        "from pathlib import Path; from miro_data.annotate import AnnotateConfig, annotate; "
        f"annotate(AnnotateConfig(shards={str(pipeline.shards)!r}, db=Path({str(db)!r}), "
        "rewards=('tests.plugin_rewards:Crashy', 'contrast'), batch_size=50))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MIRO_CRASH_AT": "4"}  # mid second shard
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    con = connect(db, read_only=True)
    done_before = con.execute(
        "SELECT shard, reward, finished_at FROM ledger ORDER BY ALL"
    ).fetchall()
    con.close()
    assert {s for s, _, _ in done_before} == {"00000"}
    annotate(
        AnnotateConfig(
            shards=str(pipeline.shards), db=db, rewards=("tests.plugin_rewards:Crashy", "contrast")
        )
    )
    con = connect(db, read_only=True)
    for reward in ("crashy", "contrast"):
        assert con.execute(
            "SELECT count(*), count(DISTINCT key) FROM scores WHERE reward = ?", [reward]
        ).fetchone() == (pipeline.n, pipeline.n)
    kept = con.execute(
        "SELECT shard, reward, finished_at FROM ledger WHERE shard = '00000' ORDER BY ALL"
    ).fetchall()
    assert kept == done_before  # the first shard was not redone


def test_finished_parts_of_a_killed_run_are_ingested_not_redone(
    pipeline, tmp_path: Path, monkeypatch
) -> None:
    db, log = tmp_path / "p.duckdb", tmp_path / "scored.txt"
    cfg = AnnotateConfig(
        shards=str(pipeline.shards), db=db, rewards=("tests.plugin_rewards:Brightness",)
    )
    from miro_data.annotate import build_rewards

    rewards = build_rewards(cfg)
    con = connect(db, create=True)
    tasks = plan(con, list_shards(pipeline.shards), retry=False)
    con.close()
    with Prefetcher([ShardJob(t.shard) for t in tasks], 1, cfg.max_pixels) as prefetcher:
        for task in tasks:  # the work of a run killed after writing its parts, before ingesting
            process_shard(task, rewards, cfg, prefetcher)
    monkeypatch.setenv("MIRO_TEST_LOG", str(log))
    report = annotate(cfg)
    assert not log.exists()  # nothing was scored again
    assert report.scored == {"brightness": pipeline.n}


def test_any_number_of_workers_and_decoders_write_what_one_writes(pipeline, tmp_path: Path) -> None:
    rewards = ("sharpness", "shapes_alignment")
    query = "SELECT shard, key, reward, value FROM scores ORDER BY ALL"
    results = []
    for workers, decoders in ((1, 1), (2, 1), (1, 0), (1, 3)):
        db = tmp_path / f"w{workers}d{decoders}.duckdb"
        cfg = AnnotateConfig(
            shards=str(pipeline.shards),
            db=db,
            rewards=rewards,
            workers=workers,
            decode_workers=decoders,
        )
        annotate(cfg)
        results.append(duckdb.connect(str(db), read_only=True).execute(query).fetchall())
    assert len(results[0]) == 2 * pipeline.n
    assert all(r == results[0] for r in results[1:])
