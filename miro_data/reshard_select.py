"""Reshard's selection, out of core: DuckDB selects the scored samples, joins each to its
image's byte range in its source tar (a member index, one temporary table) and a seeded hash,
and streams them once into hash partitions on disk (`shuffle`); read back part by part in
hash order, they are cut here into output-shard jobs.

DuckDB works within `sort_memory_mb` (at least DUCKDB_MIN_MB; its joins spill to a temporary
folder), each part of the shuffle holds about half of it, and Python holds one part and one output shard's rows: memory is
bounded by the settings, not the corpus. The order is that of (hash(shard, key, seed),
shard, key) alone: the same seed gives the same shards.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from miro_data import db
from miro_data.bins import Levels, load_levels
from miro_data.common import MiroError, first_line
from miro_data.reshard_write import OFFSET, SIZE, ShardJob
from miro_data.shards import list_shards
from miro_data.shuffle import HASH, n_partitions, partition, sorted_batches
from miro_data.storage import open_seekable
from miro_data.tarindex import member_index
from miro_data.trainshards_write import member_problem

if TYPE_CHECKING:
    from miro_data.reshard import ReshardConfig

log = logging.getLogger(__name__)

SELECTED = ("shard", "key", "caption", "url", "image_ext", "width", "height", "meta")
BATCH = 4096  # rows per record batch from DuckDB
DUCKDB_MIN_MB = 256  # below ~100 MB DuckDB's joins fail rather than spill (duckdb 2.0)
LevelTable = dict[str, tuple[str, Levels]]  # {reward: (reward version, its levels)}


@dataclass
class Selection:
    """The shuffled selection, ready to stream as jobs (once)."""

    parts: list[Path]  # the selection, hash-partitioned (shuffle.partition)
    rewards: list[str]
    levels: LevelTable
    version: int
    sources: dict[str, str]
    total: int  # rows selected (before unsafe names are left out)
    excluded: int  # samples lacking a score for some reward
    shard_size: int
    where: str | None

    def jobs(self) -> Iterator[ShardJob]:
        """Output shards in order, each `shard_size` samples (the last one fewer)."""
        columns = [*SELECTED, OFFSET, SIZE, *self.rewards]
        pending: dict[str, list] = {c: [] for c in columns}
        index = 0
        unsafe: list[str] = []
        for batch in sorted_batches(self.parts, ("shard", "key"), BATCH):
            rows = batch.to_pydict()
            keep = self._keep(rows, unsafe)
            for c in columns:
                pending[c] += itertools.compress(rows[c], keep)
            while len(pending["key"]) >= self.shard_size:
                yield ShardJob(index, {c: v[: self.shard_size] for c, v in pending.items()})
                pending = {c: v[self.shard_size :] for c, v in pending.items()}
                index += 1
        if pending["key"]:
            yield ShardJob(index, pending)
            index += 1
        if unsafe:
            log.warning("%d samples left out: %s", len(unsafe), unsafe[0])
        if index == 0:
            raise _nothing(self.where)

    def _keep(self, rows: dict[str, list], unsafe: list[str]) -> list[bool]:
        """Which rows can be written: a key or extension that cannot name a tar member (a
        database annotated by an older version, or edited by hand) is left out; a member the
        source tar lacks is an error."""
        keep = []
        for shard, key, ext, offset in zip(
            rows["shard"], rows["key"], rows["image_ext"], rows[OFFSET], strict=True
        ):
            problem = member_problem(key, ext)
            if problem is not None:
                unsafe.append(problem)
            elif offset is None:
                if shard not in self.sources:
                    raise MiroError(
                        f"source shard {shard!r} (in the database) is not under the shards given"
                    )
                raise MiroError(f"{key}.{ext} is missing from source shard {self.sources[shard]}")
            keep.append(problem is None)
        return keep


def _nothing(where: str | None) -> MiroError:
    return MiroError("no samples to write" + (f" match --where {where!r}" if where else ""))


def choose_rewards(levels: LevelTable, wanted: tuple[str, ...] | None) -> list[str]:
    if wanted is None:
        return sorted(levels)
    unknown = [r for r in wanted if r not in levels]
    if unknown:
        raise MiroError(
            f"no bin edges for {', '.join(unknown)} in this version; have: {', '.join(levels)}"
        )
    return list(wanted)


@contextlib.contextmanager
def open_selection(cfg: ReshardConfig) -> Iterator[Selection]:
    """The selection of `cfg`, checked and counted, then its source tars indexed."""
    with tempfile.TemporaryDirectory(prefix="miro-reshard-sort-") as spill:
        settings = {
            "memory_limit": f"{max(cfg.sort_memory_mb, DUCKDB_MIN_MB)}MB",
            "temp_directory": spill,
            "enable_progress_bar": "false",
        }
        con = db.connect(cfg.db, read_only=True, sandbox=True, settings=settings)  # user SQL
        try:
            version, levels = load_levels(con, cfg.edges_version)
            names = choose_rewards(levels, cfg.rewards)
            con.execute(
                "CREATE TEMP TABLE members "
                "(m_shard VARCHAR, m_name VARCHAR, m_offset BIGINT, m_size BIGINT)"
            )
            relation, total, excluded, size = _select(
                con, {r: levels[r][0] for r in names}, cfg.where, cfg.shuffle_seed
            )
            if total == 0:
                raise _nothing(cfg.where)
            if excluded:
                log.warning(
                    "%d samples lack a score for some reward (failed or not annotated): excluded",
                    excluded,
                )
            sources = _index_sources(con, cfg.shards)
            parts = n_partitions(size, cfg.sort_memory_mb << 20)
            try:
                files = partition(relation.to_arrow_reader(BATCH), Path(spill) / "parts", parts)
            except duckdb.Error as err:
                raise _query_error(err, cfg.where) from None
            yield Selection(
                files, names, levels, version, sources, total, excluded, cfg.shard_size,
                cfg.where,
            )  # fmt: skip
        finally:
            con.close()


def _index_sources(con: duckdb.DuckDBPyConnection, shards: str) -> dict[str, str]:
    """Fill the temporary table `members` from the headers of every source tar that the
    database has samples of (one sequential pass each); returns shard name → location."""
    sources = {s.name: str(s.path) for s in list_shards(shards)}
    known = {s for (s,) in con.execute("SELECT DISTINCT shard FROM samples").fetchall()}
    for shard in sorted(known & sources.keys()):
        with open_seekable(sources[shard]) as f:
            entries = list(member_index(f))
        # list parameters, unnested side by side (registering an Arrow table imports pandas)
        con.execute(
            "INSERT INTO members SELECT ?, unnest(?::VARCHAR[]), unnest(?::BIGINT[]), "
            "unnest(?::BIGINT[])",
            [shard, [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]],
        )
    return sources


def _select(
    con: duckdb.DuckDBPyConnection, rewards: dict[str, str], where: str | None, seed: int
) -> tuple[duckdb.DuckDBPyRelation, int, int, int]:
    """(the selection with its seeded hash, its rows, samples excluded for a missing score,
    about how many bytes it holds).

    `where` is bound as ONE expression through the relational API (`filter`), never pasted
    into statement text, so `1=1); COPY …` is a parse error rather than a second statement;
    `con` must be sandboxed by then so that an expression's subqueries cannot reach files.
    """
    counts = [
        f'count(*) FILTER (WHERE {db.reward_condition(r, v, "sc")}) AS "__n_{r}"'
        for r, v in rewards.items()
    ]
    # scores are pivoted alone, then joined: the samples' wide columns (meta) never pass
    # through an aggregate, only through a join and the sort, both of which spill
    wide = [f'w."{r}"' for r in rewards] + [
        f'coalesce(w."__n_{r}", 0) AS "__n_{r}"' for r in rewards
    ]
    inner = f"""SELECT s.shard, s.key, s.caption, s.url, s.image_ext, s.width, s.height, s.meta,
            {", ".join(wide)}
        FROM samples s LEFT JOIN (
            SELECT sc.shard, sc.key, {", ".join([*db.wide_columns(rewards, "sc"), *counts])}
            FROM scores sc GROUP BY sc.shard, sc.key
        ) w ON w.shard = s.shard AND w.key = s.key
        WHERE s.status = 'ok'"""
    scored = " AND ".join(f'"__n_{r}" > 0' for r in rewards)
    selected = ", ".join([*SELECTED, *(f'"{r}"' for r in rewards)])
    try:
        relation = con.sql(inner)
        if where is not None:
            relation = relation.filter(where)
        width = "64 + strlen(key) + strlen(shard) + " + " + ".join(
            f"coalesce(strlen({c}), 0)" for c in ("caption", "url", "meta::VARCHAR")
        )
        ((total, excluded, size),) = relation.aggregate(
            f"count(*) FILTER (WHERE {scored}), count(*) FILTER (WHERE NOT ({scored})), "
            f"coalesce(sum({width}) FILTER (WHERE {scored}), 0)"
        ).fetchall()
        picked = relation.filter(scored).join(
            con.table("members"), "shard = m_shard AND key || '.' || image_ext = m_name", "left"
        )
        hashed = picked.project(
            f"{selected}, m_offset AS {OFFSET}, m_size AS {SIZE}, hash(shard, key, {seed}) AS {HASH}"
        )
    except duckdb.Error as err:
        raise _query_error(err, where) from None
    return hashed, int(total), int(excluded), int(size)


def _query_error(err: duckdb.Error, where: str | None) -> MiroError:
    if isinstance(err, duckdb.OutOfMemoryException):
        return MiroError(f"DuckDB ran out of memory selecting the samples: {first_line(err)}")
    if where is None:
        return MiroError(f"cannot select the samples: {first_line(err)}")
    return MiroError(f"bad --where predicate {where!r}: {first_line(err)}")
