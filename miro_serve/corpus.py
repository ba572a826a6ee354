"""Read-only views of the annotated corpus for the Overview, Bins and Sample pages.

One DuckDB connection is opened read-only with external access disabled (no file, network
or extension access from SQL) for the server's lifetime; each request works on its own
cursor, which is DuckDB's way of sharing a database between threads. The database cannot
change while it is open here (DuckDB's file lock keeps writers out), so what is computed once
— the Overview, the list of shards — is cached.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from miro_data import db
from miro_data.bins import Levels, load_levels
from miro_data.common import MiroError
from miro_data.stats import spearman_matrix
from miro_serve.config import BadRequest, NotFound

log = logging.getLogger(__name__)

TABLES = ("samples", "scores", "failures", "bin_versions", "bin_edges", "reward_versions")
CORRELATION_SAMPLE = 20_000  # samples behind the correlation matrix
HISTOGRAM_BINS = 60


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """The database, read-only, on the sandboxed connection all user SQL runs on
    (db.SANDBOX_CONFIG: no files, network or extensions; settings locked)."""
    if not Path(path).is_file():
        raise MiroError(f"database not found: {path}")
    con = db.connect(Path(path), read_only=True, sandbox=True)
    present = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    missing = [t for t in TABLES if t not in present]
    if missing:
        con.close()
        raise MiroError(f"{path} is not a miro database (no table {', '.join(missing)})")
    return con


@dataclass(frozen=True)
class Histogram:
    reward: str
    version: str
    counts: list[int]
    lo: float
    hi: float
    edges: list[float]  # bin edges of the shown version, [] when none match this reward version
    n: int
    n_undefined: int
    mean: float | None


class Corpus:
    """Queries behind the pages; every method opens its own cursor."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.con = open_read_only(self.path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of this thread's own to the database (close it after use)."""
        with self._lock:  # the parent connection is not thread-safe; its cursors are
            return self.con.cursor()

    def _rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        with self.cursor() as cur:
            return cur.execute(sql, params or {}).fetchall()

    # -- versions and levels -------------------------------------------------

    @functools.cached_property
    def reward_versions(self) -> dict[str, str]:
        with self.cursor() as cur:
            return db.current_versions(cur)

    @functools.cached_property
    def bin_versions(self) -> list[tuple[int, str, int]]:
        """(version, created at, bins requested), newest first."""
        rows = self._rows(
            "SELECT version, strftime(created_at, '%Y-%m-%d %H:%M'), n_bins FROM bin_versions "
            "ORDER BY version DESC"
        )
        return [(int(v), str(c), int(n)) for v, c, n in rows]

    @functools.cached_property
    def shard_names(self) -> frozenset[str]:
        return frozenset(r[0] for r in self._rows("SELECT DISTINCT shard FROM samples"))

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one Corpus per server, kept for its lifetime
    def levels(self, version: int | None) -> tuple[int | None, dict[str, tuple[str, Levels]]]:
        """A bin-edge version's levels (the latest when None; (None, {}) when there are none)."""
        if version is None and not self.bin_versions:
            return None, {}
        if version is not None and version not in {v for v, _, _ in self.bin_versions}:
            known = ", ".join(str(v) for v, _, _ in self.bin_versions) or "none"
            raise NotFound(f"no bin-edge version {version} (versions: {known})")
        with self.cursor() as cur:
            return load_levels(cur, version)

    def current_levels(self, reward: str, version: int | None) -> Levels | None:
        """The reward's levels in a version, if they were computed for its current scores."""
        _, levels = self.levels(version)
        if reward in levels and levels[reward][0] == self.reward_versions.get(reward):
            return levels[reward][1]
        return None

    def check_reward(self, reward: str) -> str:
        if reward not in self.reward_versions:
            known = ", ".join(self.reward_versions) or "none"
            raise NotFound(f"no scores for reward {reward!r}; annotated rewards: {known}")
        return self.reward_versions[reward]

    # -- Overview ------------------------------------------------------------

    @functools.lru_cache(maxsize=16)  # noqa: B019
    def overview(self, version: int | None) -> dict[str, Any]:
        shown, _ = self.levels(version)
        status = self._rows(
            "SELECT status, count(*) AS n FROM samples GROUP BY status ORDER BY n DESC"
        )
        # Downloads that failed live in `samples` (img2dataset's status and message); reads,
        # decodes and scores that failed, in `failures`.
        failures = self._rows(
            """SELECT stage, reward, left(reason, 300) AS reason, count(*) AS n FROM (
                SELECT 'download' AS stage, '' AS reward, status || coalesce(': ' || error, '') AS reason
                FROM samples WHERE status NOT IN ('ok', 'undecodable')
                UNION ALL
                SELECT stage, coalesce(reward, ''), reason FROM failures)
            GROUP BY ALL ORDER BY n DESC, stage, reward, reason LIMIT 50"""
        )
        rewards = list(self.reward_versions)
        return {
            "version": shown,
            "status": status,
            "total": sum(n for _, n in status),
            "failures": failures,
            "histograms": [self._histogram(r, shown) for r in rewards],
            "rewards": rewards,
            "correlation": self._correlation(),
        }

    def _histogram(self, reward: str, version: int | None) -> Histogram:
        rv = self.reward_versions[reward]
        with self.cursor() as cur:
            values = cur.execute(
                "SELECT value FROM scores WHERE reward = $r AND version = $v",
                {"r": reward, "v": rv},
            ).fetchnumpy()["value"]
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        levels = self.current_levels(reward, version)
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        counts, _ = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi if hi > lo else lo + 1))
        return Histogram(
            reward, rv, counts.tolist(), lo, hi,
            levels.edges.tolist() if levels is not None else [],
            int(finite.size), int(values.size - finite.size),
            float(finite.mean()) if finite.size else None,
        )  # fmt: skip

    def _correlation(self) -> list[list[float | None]]:
        """Spearman between rewards over a seeded sample of the corpus (pairwise complete)."""
        rewards = self.reward_versions
        if not rewards:
            return []
        columns = ", ".join(db.wide_columns(rewards))
        with self.cursor() as cur:
            data = cur.execute(
                f"""WITH k AS (SELECT shard, key FROM samples WHERE status = 'ok'
                               ORDER BY hash(shard, key) LIMIT {CORRELATION_SAMPLE})
                SELECT {columns} FROM scores JOIN k USING (shard, key) GROUP BY shard, key"""
            ).fetchnumpy()
        matrix = spearman_matrix({r: np.asarray(data[r], dtype=np.float64) for r in rewards})
        return [[None if np.isnan(x) else float(x) for x in row] for row in matrix]

    # -- Bins ----------------------------------------------------------------

    def bin_rows(self, reward: str, version: int | None, per: int, seed: int) -> dict[str, Any]:
        """One row per level, top first: range, count and a seeded draw of `per` samples."""
        rv = self.check_reward(reward)
        shown, _ = self.levels(version)
        levels = self.current_levels(reward, version)
        if levels is None or levels.n_levels == 0:
            raise NotFound(
                f"no bin edges for {reward} at its current scores"
                + (f" in version {shown}" if shown else "")
                + ": run `miro data bins`"
            )
        n = levels.n_levels
        # Level of a value = Levels.assign: the last edge at or below it, clipped to [0, n-1].
        case = " ".join(f"WHEN value >= $edges[{k + 1}] THEN {k}" for k in range(n - 1, 0, -1))
        level = f"CASE {case} ELSE 0 END" if n > 1 else "0"
        rows = self._rows(
            f"""SELECT lvl, count(*), min(value), max(value),
                   min_by({{'shard': shard, 'key': key}}, hash(shard, key, $seed), $per)
            FROM (SELECT shard, key, value, {level} AS lvl FROM scores
                  WHERE reward = $r AND version = $v AND isfinite(value))
            GROUP BY lvl ORDER BY lvl DESC""",
            {"edges": levels.edges.tolist(), "seed": seed, "per": per, "r": reward, "v": rv},
        )
        edges = levels.edges.tolist()
        out = []
        for lvl, count, vmin, vmax, draw in rows:
            hi = edges[lvl + 1] if lvl + 1 < len(edges) else edges[lvl]
            out.append(
                {"level": int(lvl), "lo": edges[lvl], "hi": hi, "count": int(count),
                 "min": vmin, "max": vmax, "samples": [(d["shard"], d["key"]) for d in draw]}
            )  # fmt: skip
        return {
            "reward": reward,
            "reward_version": rv,
            "version": shown,
            "n_levels": n,
            "rows": out,
        }

    # -- Sample --------------------------------------------------------------

    def sample(self, shard: str, key: str, version: int | None) -> dict[str, Any]:
        """Everything known about one sample: record, scores with level and percentile, failures."""
        with self.cursor() as cur:
            rel = cur.execute(
                "SELECT * FROM samples WHERE shard = $s AND key = $k", {"s": shard, "k": key}
            )
            names = [d[0] for d in rel.description]
            row = rel.fetchone()
        if row is None:
            raise NotFound(f"no sample with shard {shard!r} and key {key!r}")
        record = dict(zip(names, row, strict=True))
        meta = record.pop("meta")
        try:
            meta_text = json.dumps(json.loads(meta), indent=2, ensure_ascii=False) if meta else ""
        except ValueError:
            meta_text = str(meta)
        scores = self._rows(
            """SELECT reward, version, value FROM scores WHERE shard = $s AND key = $k
            ORDER BY reward, version""",
            {"s": shard, "k": key},
        )
        failures = self._rows(
            "SELECT stage, reward, version, reason FROM failures WHERE shard = $s AND key = $k",
            {"s": shard, "k": key},
        )
        return {
            "record": record,
            "meta": meta_text,
            "scores": [self._score_row(r, v, x, version) for r, v, x in scores],
            "failures": failures,
        }

    def _score_row(self, reward: str, rv: str, value: float | None, version: int | None) -> dict:
        current = self.reward_versions.get(reward) == rv
        levels = self.current_levels(reward, version) if current else None
        level = percentile = None
        if value is not None and np.isfinite(value):
            if levels is not None and levels.n_levels:
                level = int(levels.assign(np.array([value]))[0][0])
            (percentile,) = self._rows(
                """SELECT 100 * avg(CASE WHEN value <= $x THEN 1.0 ELSE 0.0 END) FROM scores
                WHERE reward = $r AND version = $v AND isfinite(value)""",
                {"x": value, "r": reward, "v": rv},
            )[0]
        return {
            "reward": reward, "version": rv, "current": current, "value": value, "level": level,
            "n_levels": levels.n_levels if levels is not None else None, "percentile": percentile,
        }  # fmt: skip


def check_version(text: str | None) -> int | None:
    """The `version` parameter: empty → the latest."""
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"version must be a whole number, not {text!r}") from None
