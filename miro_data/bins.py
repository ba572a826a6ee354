"""Stage `miro data bins`: per-reward quantile levels, versioned in DuckDB with statistics.

MIRO conditions on each reward's bin index normalised to [0, 1]. On continuous scores the
levels are B quantile bins, as in the authors' code. Ties need care: when scores take few
distinct values (the discrete `shapes_alignment`), quantile edges collapse, so

- a reward with at most B distinct values gets one level per value;
- otherwise edges are the distinct quantiles, and the maximum gets a level of its own when
  it is tied (a clipped or saturated score), so "top level" means the best scores.

Normalised value = level / (n_levels − 1): 0 is the lowest level present, 1 the highest, so
the sampler's "all high" target is always a level the model has seen. A reward with a single
level gets 1.0. Undefined scores (NaN/NULL) get no level; the trainer treats them as missing.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from miro_data import db
from miro_data.checks import check_int, check_names, check_seed
from miro_data.common import MiroError, check_output, dumps_json, output_file
from miro_data.options import NAMES, opt

log = logging.getLogger(__name__)

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
STAT_COLUMNS = ("count", "nan_count", "mean", "std", "min", *(f"p{p}" for p in PERCENTILES), "max")


@dataclass(frozen=True)
class BinsConfig:
    """How many bins, over which rewards, estimated from how large a sample."""

    db: Path = field(metadata=opt(help="DuckDB file written by annotate."))
    n_bins: int = field(default=64, metadata=opt(help="Quantile bins per reward (B)."))
    rewards: tuple[str, ...] | None = field(  # None: every annotated reward
        default=None,
        metadata=opt("--rewards", "-r", parser=NAMES, help="Comma-separated; default all."),
    )
    sample: int = field(
        default=100_000, metadata=opt(help="Scores per reward used to estimate the edges.")
    )
    seed: int = field(default=0, metadata=opt())
    export: Path | None = field(
        default=None, metadata=opt(help="Also write the edges and statistics as JSON.")
    )

    def __post_init__(self) -> None:
        check_int("--n-bins", self.n_bins, 2)
        check_int("--sample", self.sample, self.n_bins)
        check_seed("--seed", self.seed)
        check_names("--rewards", self.rewards)
        if self.export is not None and self.export.suffix.lower() != ".json":
            raise MiroError(f"--export must be a .json path, not {self.export}")


@dataclass(frozen=True)
class Levels:
    """A reward's bin edges and how values map onto levels."""

    edges: np.ndarray  # increasing, distinct
    n_levels: int
    top_level: bool

    def assign(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bin index, normalised value) per value; -1 and NaN where the value is NaN."""
        values = np.asarray(values, dtype=np.float64)
        idx = np.searchsorted(self.edges, values, side="right") - 1
        idx = np.clip(idx, 0, max(self.n_levels - 1, 0))
        norm = idx / (self.n_levels - 1) if self.n_levels > 1 else np.ones_like(values)
        missing = np.isnan(values)
        return np.where(missing, -1, idx), np.where(missing, np.nan, norm)


def compute_levels(values: np.ndarray, n_bins: int) -> Levels:
    """Levels of a reward from a sample of its finite scores (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Levels(np.array([]), 0, False)
    distinct = np.unique(v)
    if distinct.size <= n_bins:
        return Levels(distinct, int(distinct.size), True)
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)))
    top_tied = int((v == edges[-1]).sum()) >= 2
    return Levels(edges, int(edges.size if top_tied else edges.size - 1), top_tied)


# ----------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------


def reward_stats(con, reward: str, version: str) -> dict[str, float | int | None]:
    """count, nan_count, mean, std, min, p1 … p99, max of one reward version's scores."""
    row = con.execute(
        """SELECT count(value), count(*) - count(value), avg(value), stddev_samp(value), min(value),
           quantile_cont(value, $q), max(value)
        FROM scores WHERE reward = $reward AND version = $version""",
        {"reward": reward, "version": version, "q": [p / 100 for p in PERCENTILES]},
    ).fetchone()
    count, nan_count, mean, std, lo, quantiles, hi = row
    quantiles = quantiles or [None] * len(PERCENTILES)
    values = [count, nan_count, mean, std, lo, *quantiles, hi]
    return dict(zip(STAT_COLUMNS, values, strict=True))


def _sample(con, reward: str, version: str, n: int, seed: int) -> np.ndarray:
    """Up to n finite scores, chosen by a seeded hash of the key: the same sample every run."""
    rows = con.execute(
        """SELECT value FROM scores
        WHERE reward = $reward AND version = $version AND value IS NOT NULL AND isfinite(value)
        ORDER BY hash(shard, key, $seed) LIMIT $n""",
        {"reward": reward, "version": version, "seed": seed, "n": n},
    ).fetchnumpy()
    return np.asarray(rows["value"], dtype=np.float64)


def select_rewards(con, wanted: tuple[str, ...] | None) -> dict[str, str]:
    """{reward: current version} for the wanted rewards (all when None), checked to exist."""
    versions = db.current_versions(con)
    if not versions:
        raise MiroError("the database has no scores yet: run `miro data annotate` first")
    if wanted is None:
        return versions
    unknown = [r for r in wanted if r not in versions]
    if unknown:
        raise MiroError(
            f"no scores for {', '.join(unknown)}; annotated rewards: {', '.join(versions)}"
        )
    return {r: versions[r] for r in wanted}


def _insert_version(con, cfg: BinsConfig, rows: list) -> int:
    """The new version's rows, inside the caller's transaction; returns its number."""
    (new_version,) = con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM bin_versions"
    ).fetchone()
    con.execute(
        "INSERT INTO bin_versions VALUES ($v, now(), $b, $s, $seed)",
        {"v": new_version, "b": cfg.n_bins, "s": cfg.sample, "seed": cfg.seed},
    )
    for reward, version, levels, stats in rows:
        con.execute(
            f"INSERT INTO bin_edges VALUES ($v, $r, $rv, $n, $edges, $top, {', '.join('$' + c for c in STAT_COLUMNS)})",
            {"v": new_version, "r": reward, "rv": version, "n": levels.n_levels,
             "edges": levels.edges.tolist(), "top": levels.top_level, **stats},
        )  # fmt: skip
    return int(new_version)


def _store(con, cfg: BinsConfig, rows: list) -> int:
    """Insert and commit the new version; with --export, the file is written first (to a
    temporary name, renamed after the commit), so an unwritable path commits nothing."""
    committed = False
    con.execute("BEGIN TRANSACTION")
    try:
        new_version = _insert_version(con, cfg, rows)
        if cfg.export is None:
            con.execute("COMMIT")
            return new_version
        with output_file(cfg.export, "--export") as tmp:
            tmp.write_text(dumps_json(edges_payload(con, new_version), indent=2))
            con.execute("COMMIT")
            committed = True
        return new_version
    except BaseException:
        if not committed:
            with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                con.execute("ROLLBACK")
        raise


def bins(cfg: BinsConfig) -> int:
    """Compute and store a new bin-edge version; returns its number."""
    if cfg.export is not None:  # fail before the work; _store makes a late failure harmless
        check_output(cfg.export, "--export", keep=(cfg.db,))
    con = db.connect(cfg.db)
    try:
        rewards = select_rewards(con, cfg.rewards)
        rows = []
        for reward, version in rewards.items():
            levels = compute_levels(_sample(con, reward, version, cfg.sample, cfg.seed), cfg.n_bins)
            if levels.n_levels == 0:
                log.warning("%s has no defined scores: it gets no levels", reward)
            stats = reward_stats(con, reward, version)
            rows.append((reward, version, levels, stats))
            log.info("%s: %d levels from %s scores", reward, levels.n_levels, f"{stats['count']:,}")
        return _store(con, cfg, rows)
    finally:
        con.close()


# ----------------------------------------------------------------------------
# Reading versions back
# ----------------------------------------------------------------------------


def load_levels(con, version: int | None = None) -> tuple[int, dict[str, tuple[str, Levels]]]:
    """A bin-edge version (the latest when None): {reward: (reward_version, Levels)}."""
    if version is None:
        (version,) = con.execute("SELECT max(version) FROM bin_versions").fetchone()
        if version is None:
            raise MiroError("no bin edges yet: run `miro data bins` first")
    rows = con.execute(
        "SELECT reward, reward_version, edges, n_levels, top_level FROM bin_edges WHERE version = $v ORDER BY reward",
        {"v": version},
    ).fetchall()
    if not rows:
        raise MiroError(f"bin-edge version {version} does not exist")
    return int(version), {
        r: (rv, Levels(np.asarray(e, dtype=np.float64), int(n), bool(top)))
        for r, rv, e, n, top in rows
    }


def edges_payload(con, version: int) -> dict:
    """A bin-edge version with its statistics, as the JSON that --export writes."""
    _, levels = load_levels(con, version)
    stats = con.execute(
        f"SELECT reward, {', '.join(STAT_COLUMNS)} FROM bin_edges WHERE version = $v",
        {"v": version},
    ).fetchall()
    by_reward = {row[0]: dict(zip(STAT_COLUMNS, row[1:], strict=True)) for row in stats}
    return {
        "version": version,
        "rewards": {
            r: {
                "reward_version": rv,
                "n_levels": lv.n_levels,
                "top_level": lv.top_level,
                "edges": lv.edges.tolist(),
                "stats": by_reward[r],
            }
            for r, (rv, lv) in levels.items()
        },
    }
