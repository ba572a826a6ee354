"""Round trip: synth → file:// URLs → img2dataset → annotate → bins → reshard → read back."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pytest
import webdataset as wds

from miro_data.bins import load_levels
from miro_data.decode import decode_image
from miro_data.detector import check
from miro_data.download import summarize
from miro_data.shapes import parse_caption
from tests.conftest import CLASSIC


def test_download_reports_successes_and_each_failure(pipeline) -> None:
    report = summarize(pipeline.shards)
    assert report.count == pipeline.n + pipeline.extra_urls
    assert report.successes == pipeline.n
    assert sum(report.failures.values()) == pipeline.extra_urls
    assert any("No such file" in reason for reason in report.failures)


def test_extra_columns_travel_into_the_sample_json(pipeline) -> None:
    sample = next(iter(wds.WebDataset(str(pipeline.shards / "00000.tar"), shardshuffle=False)))
    meta = json.loads(sample["json"])
    for column in ("clean_caption", "category", "degradations", "objects", "index"):
        assert column in meta
    # the local file's real place, not a temporary server's address
    assert (
        meta["url"] == (pipeline.corpus.resolve() / "images" / f"{meta['index']:07d}.png").as_uri()
    )


def test_database_holds_every_sample_and_score(pipeline) -> None:
    con = duckdb.connect(str(pipeline.db), read_only=True)
    status = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
    assert status["ok"] == pipeline.n
    assert sum(v for k, v in status.items() if k.startswith("failed")) == pipeline.extra_urls
    per_reward = dict(con.execute("SELECT reward, count(*) FROM scores GROUP BY 1").fetchall())
    assert per_reward == dict.fromkeys(CLASSIC, pipeline.n)
    wide = con.sql("SELECT * FROM scores_wide WHERE status = 'ok'").pl()
    assert wide.height == pipeline.n and set(CLASSIC) <= set(wide.columns)
    # shapes_alignment is NaN (NULL) exactly for captions outside the grammar.
    undefined = wide.filter(pl.col("shapes_alignment").is_null())["caption"].to_list()
    assert undefined and all(parse_caption(c) is None for c in undefined)


def test_reshard_round_trip_matches_the_database(pipeline) -> None:
    manifest = json.loads((pipeline.train / "manifest.json").read_text())
    assert manifest["rewards"] == sorted(CLASSIC)
    assert manifest["edges_version"] == pipeline.edges_version
    assert sum(s["count"] for s in manifest["shards"]) == manifest["total"] == pipeline.n

    con = duckdb.connect(str(pipeline.db), read_only=True)
    wide = {r["key"]: r for r in con.sql("SELECT * FROM scores_wide").pl().iter_rows(named=True)}
    _, levels = load_levels(con, pipeline.edges_version)
    urls = [str(pipeline.train / s["name"]) for s in manifest["shards"]]
    keys, source_order = [], []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        row = wide[sample["__key__"]]
        keys.append(sample["__key__"])
        source_order.append((meta["source_shard"], meta["key"]))
        assert sample["txt"].decode() == row["caption"] == meta["caption"]
        for r in CLASSIC:
            if row[r] is None:
                assert (
                    meta["scores"][r] is None
                    and meta["bins"][r] is None
                    and meta["bin_values"][r] is None
                )
                continue
            assert meta["scores"][r] == pytest.approx(row[r])
            idx, value = levels[r][1].assign(np.array([row[r]]))
            assert meta["bins"][r] == idx[0] and meta["bin_values"][r] == pytest.approx(value[0])
            assert 0.0 <= meta["bin_values"][r] <= 1.0
        # image bytes are copied, not re-encoded: they decode to the downloaded image
        img = decode_image(sample["png"])
        assert img.shape == (32, 32, 3)
        if (
            meta["source"]["degradations"] == "[]"
            and meta["caption"] == meta["source"]["clean_caption"]
        ):
            assert check(parse_caption(meta["caption"]), img)  # type: ignore[arg-type]
    assert len(keys) == len(set(keys)) == pipeline.n
    # shuffled across source shards: neighbours do not all come from one shard in order
    assert source_order != sorted(source_order)


def test_top_level_of_the_discrete_reward_is_one(pipeline) -> None:
    manifest = json.loads((pipeline.train / "manifest.json").read_text())
    values = []
    for sample in wds.WebDataset(
        [str(pipeline.train / s["name"]) for s in manifest["shards"]], shardshuffle=False
    ):
        meta = json.loads(sample["json"])
        if meta["scores"]["shapes_alignment"] == 1.0:
            values.append(meta["bin_values"]["shapes_alignment"])
    assert values and set(values) == {1.0}
