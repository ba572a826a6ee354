"""Stage `miro data reshard`: training shards whose samples carry scores, bins and bin values.

Selects scored samples (optionally filtered by a SQL predicate over the reward columns),
shuffles them across source shards with a seed, and copies each image's bytes as they are
(no re-encode) into new WebDataset tars, reading the sources by random access (wids' mmap
index). The output folder appears only when complete: everything is written to a hidden
sibling and renamed into place. Sample format and manifest: miro_data.trainshards.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from wids.wids_mmtar import MMIndexedTar

from miro_data import db
from miro_data.bins import Levels, load_levels
from miro_data.common import (
    MiroError,
    check_device,
    check_names,
    check_nonempty_text,
    check_optional_positive,
    check_positive,
    check_seed,
    progress_bar,
    user_os_error,
)
from miro_data.decode import decode_image
from miro_data.hooks import Hook, build_hooks, parse_hooks
from miro_data.shards import list_shards
from miro_data.trainshards import (
    HookModels,
    Manifest,
    ManifestSource,
    SampleMeta,
    ShardEntry,
    ShardWriter,
    TrainSample,
    member_problem,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReshardConfig:
    """Which samples, which bin edges, how to cut and shuffle, what to precompute."""

    shards: str
    db: Path
    out: Path
    where: str | None = None  # SQL predicate over shard, key, caption, url and reward columns
    shard_size: int = 10_000
    shuffle_seed: int = 0
    edges_version: int | None = None  # None: the latest
    rewards: tuple[str, ...] | None = None  # subset and conditioning order; None: all, by name
    hooks: tuple[str, ...] = ()  # "text=MODEL", "vae=MODEL"
    hook_batch_size: int = 64
    device: str = "cpu"
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_positive("--shard-size", self.shard_size)
        check_positive("hook_batch_size", self.hook_batch_size)
        check_seed("--shuffle-seed", self.shuffle_seed)
        check_optional_positive("--edges-version", self.edges_version)
        check_names("--rewards", self.rewards)
        check_device("--device", self.device)
        if self.where is not None:
            check_nonempty_text("--where", self.where)
        parse_hooks(self.hooks)


@dataclass(frozen=True)
class ReshardReport:
    out: Path
    shards: int
    samples: int
    excluded_unscored: int


# ----------------------------------------------------------------------------
# Selecting and shuffling
# ----------------------------------------------------------------------------


def _choose_rewards(
    levels: dict[str, tuple[str, Levels]], wanted: tuple[str, ...] | None
) -> list[str]:
    if wanted is None:
        return sorted(levels)
    unknown = [r for r in wanted if r not in levels]
    if unknown:
        raise MiroError(
            f"no bin edges for {', '.join(unknown)} in this version; have: {', '.join(levels)}"
        )
    return list(wanted)


def select_samples(con, rewards: dict[str, str], where: str | None) -> tuple[pl.DataFrame, int]:
    """Decoded samples with a score row for every reward (failed ones have none), filtered.

    `where` is bound as ONE expression through the relational API (`filter`), never pasted
    into statement text, so `1=1); COPY …` is a parse error rather than a second statement;
    `con` must be a sandboxed connection (`db.connect(sandbox=True)`) so that an expression's
    subqueries cannot reach files either.
    """
    counts = [
        f'count(*) FILTER (WHERE {db.reward_condition(r, v, "sc")}) AS "__n_{r}"'
        for r, v in rewards.items()
    ]
    inner = f"""SELECT s.shard, s.key, s.caption, s.url, s.image_ext, s.width, s.height, s.meta,
            {", ".join([*db.wide_columns(rewards, "sc"), *counts])}
        FROM samples s LEFT JOIN scores sc ON sc.shard = s.shard AND sc.key = s.key
        WHERE s.status = 'ok' GROUP BY ALL"""
    if where is not None and not where.strip():
        raise MiroError('--where is empty: give a predicate, e.g. "sharpness > 0.5"')
    try:
        relation = con.sql(inner)
        if where is not None:
            relation = relation.filter(where)
        df = relation.order("shard, key").pl()
    except duckdb.Error as err:
        raise MiroError(f"bad --where predicate {where!r}: {str(err).splitlines()[0]}") from None
    scored = pl.all_horizontal([pl.col(f"__n_{r}") > 0 for r in rewards])
    excluded = df.height - df.filter(scored).height
    df = df.filter(scored).drop([f"__n_{r}" for r in rewards])
    return df, excluded


def _sample_meta(
    row: dict, rewards: list[str], bins: dict, values: dict, i: int, version: int
) -> SampleMeta:
    """Row `i` of the selection with its levels (NaN scores and values are written as null)."""
    return SampleMeta(
        key=row["key"],
        caption=row["caption"],
        url=row["url"],
        source_shard=row["shard"],
        edges_version=version,
        scores={r: row[r] for r in rewards},
        bins={r: (None if bins[r][i] < 0 else int(bins[r][i])) for r in rewards},
        bin_values={r: values[r][i] for r in rewards},
        source=json.loads(row["meta"]) if row["meta"] else {},
        image_size=(row["width"], row["height"]),  # as annotate decoded and scored it
    )


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


class _Sources:
    """Random access to source images by (shard, key), one mmap index per tar, opened lazily."""

    def __init__(self, shards: str) -> None:
        self.paths = {s.name: s.path for s in list_shards(shards)}
        self.open: dict[str, MMIndexedTar] = {}

    def read(self, shard: str, key: str, ext: str) -> bytes:
        if shard not in self.open:
            if shard not in self.paths:
                raise MiroError(
                    f"source shard {shard!r} (in the database) is not under the shards given"
                )
            self.open[shard] = MMIndexedTar(str(self.paths[shard]), verbose=False)
        _, data = self.open[shard].get_by_name(f"{key}.{ext}")
        return bytes(data)

    def close(self) -> None:
        for tar in self.open.values():
            tar.close()


def _with_array(sample: TrainSample, hook: Hook, array: np.ndarray) -> TrainSample:
    if hook.kind == "text":
        return replace(sample, txt_emb=array)
    return replace(sample, latent=array)


def _apply_hooks(
    hooks: list[Hook], samples: list[TrainSample], batch_size: int
) -> list[TrainSample]:
    """The samples with the hooks' arrays, computed `batch_size` at a time."""
    done: list[TrainSample] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        captions = [s.caption for s in chunk]
        images = (
            [decode_image(s.image, math.prod(s.meta.image_size or ())) for s in chunk]
            if any(h.kind == "vae" for h in hooks)
            else []
        )
        for hook in hooks:
            arrays = hook(images, captions)
            chunk = [_with_array(s, hook, a) for s, a in zip(chunk, arrays, strict=True)]
        done += chunk
    return done


def _drop_unsafe_names(df: pl.DataFrame) -> pl.DataFrame:
    """Samples whose key or extension cannot name a tar member (a database annotated by an
    older version, or edited by hand) are left out: reshard never writes such a name."""
    safe = [member_problem(k, e) is None for k, e in zip(df["key"], df["image_ext"], strict=True)]
    if all(safe):
        return df
    bad = df.filter(~pl.Series(safe))
    log.warning(
        "%d samples left out: %s", bad.height, member_problem(bad["key"][0], bad["image_ext"][0])
    )
    return df.filter(pl.Series(safe))


def _finalize(staging: Path, out: Path) -> None:
    """Swap the finished staging folder into place; an old output is removed only after."""
    trash = None
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(trash)
    staging.rename(out)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


LevelTable = dict[str, tuple[str, Levels]]  # {reward: (reward version, its levels)}


def _load_selection(cfg: ReshardConfig) -> tuple[int, LevelTable, list[str], pl.DataFrame, int]:
    """Bin edges, the rewards to carry, and the selected samples in shuffled order."""
    con = db.connect(cfg.db, read_only=True, sandbox=True)  # --where is user SQL
    try:
        version, levels = load_levels(con, cfg.edges_version)
        names = _choose_rewards(levels, cfg.rewards)
        df, excluded = select_samples(con, {r: levels[r][0] for r in names}, cfg.where)
    finally:
        con.close()
    df = _drop_unsafe_names(df)
    if df.height == 0:
        raise MiroError(
            "no samples to write" + (f" match --where {cfg.where!r}" if cfg.where else "")
        )
    if excluded:
        log.warning(
            "%d samples lack a score for some reward (failed or not annotated): excluded", excluded
        )
    order = np.random.default_rng(cfg.shuffle_seed).permutation(df.height)
    return version, levels, names, df[order], excluded


def _write_shards(
    cfg: ReshardConfig, staging: Path, df: pl.DataFrame, names: list[str], levels: LevelTable,
    version: int, hooks: list[Hook],
) -> tuple[ShardEntry, ...]:  # fmt: skip
    """The samples as numbered tars in `staging`, then the manifest; returns the shards."""
    bins, values = {}, {}
    for r in names:
        bins[r], values[r] = levels[r][1].assign(df[r].to_numpy().astype(np.float64))
    sources = _Sources(cfg.shards)
    try:
        with progress_bar("img") as bar, ShardWriter(staging, cfg.shard_size) as sink:
            task = bar.add_task("reshard", total=df.height)
            for start in range(0, df.height, cfg.shard_size):  # one output shard at a time
                rows = df[start : start + cfg.shard_size].iter_rows(named=True)
                samples = [
                    TrainSample(
                        _sample_meta(row, names, bins, values, i, version),
                        caption=row["caption"] or "",
                        image=sources.read(row["shard"], row["key"], row["image_ext"]),
                        image_ext=row["image_ext"],  # _drop_unsafe_names checked it
                    )
                    for i, row in enumerate(rows, start)
                ]
                if hooks:
                    samples = _apply_hooks(hooks, samples, cfg.hook_batch_size)
                for sample in samples:
                    sink.write(sample)
                bar.advance(task, len(samples))
            sink.finish(_manifest(cfg, names, levels, version, hooks, sink.shards))
            return sink.shards
    finally:
        sources.close()


def _manifest(
    cfg: ReshardConfig, names: list[str], levels: LevelTable, version: int, hooks: list[Hook],
    written: tuple[ShardEntry, ...],
) -> Manifest:  # fmt: skip
    """What the shards hold and where it came from."""
    models = {h.kind: h.model for h in hooks}
    return Manifest(
        rewards=tuple(names),
        reward_versions={r: levels[r][0] for r in names},
        edges_version=version,
        n_levels={r: levels[r][1].n_levels for r in names},
        edges={r: tuple(levels[r][1].edges.tolist()) for r in names},
        shards=written,
        where=cfg.where,
        shuffle_seed=cfg.shuffle_seed,
        hooks=HookModels(text=models.get("text"), vae=models.get("vae")),
        source=ManifestSource(shards=str(cfg.shards), db=str(cfg.db)),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def reshard(cfg: ReshardConfig) -> ReshardReport:
    """Write shuffled training shards with scores and bins; returns counts."""
    if cfg.out.exists() and not cfg.out.is_dir():
        raise MiroError(f"cannot write {cfg.out}: it is a file, not a folder")
    if cfg.out.exists() and any(cfg.out.iterdir()) and not cfg.overwrite:
        raise MiroError(f"{cfg.out} exists and is not empty (pass --overwrite to replace it)")
    version, levels, names, df, excluded = _load_selection(cfg)
    hooks = build_hooks(cfg.hooks, cfg.device)
    # Everything is written into a hidden staging folder that replaces `out` only when complete.
    staging = cfg.out.with_name(f".{cfg.out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir(parents=True)
        written = _write_shards(cfg, staging, df, names, levels, version, hooks)
        _finalize(staging, cfg.out)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        # a full disk or a read-only folder names OUT (the old OUT, if any, is untouched)
        named = getattr(err, "filename", None) is not None
        mapped = (
            user_os_error(err, None if named else cfg.out, True)
            if isinstance(err, Exception)
            else None
        )
        if mapped is None:
            raise
        raise mapped from None
    log.info("wrote %d samples in %d shards to %s", df.height, len(written), cfg.out)
    return ReshardReport(cfg.out, len(written), int(df.height), excluded)
