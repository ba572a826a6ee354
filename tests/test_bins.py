"""Bins: balanced on continuous scores, exact on ties, NaN-aware, versioned in DuckDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from miro_data.bins import BinsConfig, Levels, bins, compute_levels, load_levels
from miro_data.common import MiroError
from tests.conftest import CLASSIC


def test_continuous_scores_fill_bins_evenly() -> None:
    rng = np.random.default_rng(0)
    for values in (rng.normal(size=50_000), rng.lognormal(size=50_000), rng.uniform(size=50_000)):
        levels = compute_levels(values, 64)
        assert levels.n_levels == 64 and not levels.top_level
        idx, norm = levels.assign(values)
        counts = np.bincount(idx, minlength=64)
        assert counts.min() > 0.9 * len(values) / 64 and counts.max() < 1.1 * len(values) / 64
        assert norm.min() == 0.0 and norm.max() == 1.0


def test_method_formula_on_continuous_data() -> None:
    """Away from exact edge values, levels equal METHOD.md's max(0, bucketize(v, e) − 1)."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=10_000)
    levels = compute_levels(values, 16)
    probe = rng.normal(size=2_000)
    bucketize = np.searchsorted(levels.edges, probe, side="left")  # torch.bucketize(right=False)
    expected = np.clip(np.maximum(0, bucketize - 1), 0, 15)
    assert np.array_equal(levels.assign(probe)[0], expected)


def test_discrete_scores_get_one_level_each_from_zero_to_one() -> None:
    values = np.repeat([0.0, 1 / 3, 0.5, 1.0], [200, 50, 150, 600])
    levels = compute_levels(values, 64)
    assert levels.n_levels == 4
    idx, norm = levels.assign(np.array([0.0, 1 / 3, 0.5, 1.0]))
    assert idx.tolist() == [0, 1, 2, 3] and norm.tolist() == [0.0, 1 / 3, 2 / 3, 1.0]


def test_tied_top_scores_form_the_top_level() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.uniform(0, 9, 7_000), np.full(3_000, 10.0)])  # a saturated score
    levels = compute_levels(values, 64)
    assert levels.top_level
    _, norm = levels.assign(np.array([10.0, 8.99]))
    assert norm[0] == 1.0 and norm[1] < 1.0
    # the continuous part keeps roughly balanced bins
    counts = np.bincount(levels.assign(values)[0])[:-1]
    assert counts.max() < 3 * counts.mean()


def test_nan_gets_no_level_and_constant_gets_one() -> None:
    levels = compute_levels(np.array([np.nan, 1.0, 2.0, 3.0, np.inf]), 2)
    idx, norm = levels.assign(np.array([np.nan, 1.0, 3.0]))
    assert idx[0] == -1 and np.isnan(norm[0]) and norm[1] == 0.0 and norm[2] == 1.0
    const = compute_levels(np.full(100, 5.0), 8)
    assert const.n_levels == 1 and const.assign(np.array([5.0]))[1][0] == 1.0
    assert compute_levels(np.array([np.nan]), 8).n_levels == 0


def test_unseen_values_clip_to_the_end_levels() -> None:
    levels = Levels(np.array([0.0, 1.0, 2.0, 3.0]), 3, False)
    assert levels.assign(np.array([-5.0, 0.5, 2.999, 3.0, 9.0]))[0].tolist() == [0, 0, 2, 2, 2]


@pytest.fixture
def db_copy(pipeline, tmp_path: Path) -> Path:
    path = tmp_path / "copy.duckdb"
    shutil.copy(pipeline.db, path)
    return path


def test_versions_and_statistics_in_duckdb(db_copy: Path, tmp_path: Path) -> None:
    export = tmp_path / "edges.json"
    v2 = bins(
        BinsConfig(db=db_copy, n_bins=4, rewards=("sharpness", "shapes_alignment"), export=export)
    )
    con = duckdb.connect(str(db_copy), read_only=True)
    version, levels = load_levels(con)
    assert version == v2 == 2 and set(levels) == {"sharpness", "shapes_alignment"}
    assert set(load_levels(con, 1)[1]) == set(CLASSIC)  # version 1 is kept
    values = np.array(
        [
            v
            for (v,) in con.execute(
                "SELECT value FROM scores WHERE reward = 'sharpness'"
            ).fetchall()
        ]
    )
    row = con.execute(
        "SELECT count, nan_count, mean, min, p50, max FROM bin_edges WHERE version = 2 AND reward = 'sharpness'"
    ).fetchone()
    assert row[0] == len(values) and row[1] == 0
    assert (
        row[2] == pytest.approx(values.mean()) and row[3] == values.min() and row[5] == values.max()
    )
    assert row[4] == pytest.approx(np.median(values))
    (nan_count,) = con.execute(
        "SELECT nan_count FROM bin_edges WHERE version = 2 AND reward = 'shapes_alignment'"
    ).fetchone()
    assert (
        nan_count
        == con.execute(
            "SELECT count(*) FROM scores WHERE reward = 'shapes_alignment' AND value IS NULL"
        ).fetchone()[0]
        > 0
    )
    exported = json.loads(export.read_text())
    assert exported["version"] == 2 and exported["rewards"]["sharpness"]["n_levels"] == 4


def test_sample_is_deterministic_and_bounded(db_copy: Path) -> None:
    a = bins(BinsConfig(db=db_copy, n_bins=8, sample=100, seed=3))
    b = bins(BinsConfig(db=db_copy, n_bins=8, sample=100, seed=3))
    con = duckdb.connect(str(db_copy), read_only=True)
    ea = con.execute(
        "SELECT reward, edges FROM bin_edges WHERE version = ? ORDER BY reward", [a]
    ).fetchall()
    eb = con.execute(
        "SELECT reward, edges FROM bin_edges WHERE version = ? ORDER BY reward", [b]
    ).fetchall()
    assert ea == eb


def test_bins_refuse_unknown_rewards_and_empty_databases(db_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(MiroError, match="no scores for aesthetic"):
        bins(BinsConfig(db=db_copy, rewards=("aesthetic",)))
    empty = tmp_path / "empty.duckdb"
    from miro_data.db import connect

    connect(empty, create=True).close()
    with pytest.raises(MiroError, match="no scores yet"):
        bins(BinsConfig(db=empty))
