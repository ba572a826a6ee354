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
import tarfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import polars as pl
from wids.wids_mmtar import MMIndexedTar

from miro_data import db
from miro_data.bins import Levels, load_levels
from miro_data.checks import (
    check_device,
    check_names,
    check_nonempty_text,
    check_optional_positive,
    check_positive,
    check_seed,
)
from miro_data.common import MiroError, progress_bar, user_os_error
from miro_data.decode import decode_image
from miro_data.folders import recover_folder, staging_folder, swap_folder
from miro_data.hooks import Hook, build_hooks, parse_hooks
from miro_data.options import NAMES, opt
from miro_data.processes import fault_point, output_lock
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

    shards: str = field(metadata=opt(help="The source shards (as given to annotate)."))
    db: Path = field(metadata=opt(help="DuckDB file with scores and bin edges."))
    out: Path = field(metadata=opt(help="New folder for the training shards."))
    # over shard, key, caption, url and the reward columns
    where: str | None = field(default=None, metadata=opt(
        help="SQL predicate, e.g. \"aesthetic > 5 AND caption LIKE '%dog%'\"."
    ))  # fmt: skip
    shard_size: int = field(default=10_000, metadata=opt(help="Samples per output shard."))
    shuffle_seed: int = field(default=0, metadata=opt())
    edges_version: int | None = field(
        default=None, metadata=opt(help="Bin-edge version (default: the latest).")
    )
    # subset and conditioning order; None: all, by name
    rewards: tuple[str, ...] | None = field(default=None, metadata=opt(
        "--rewards", "-r", parser=NAMES, help="Subset and order; default all."
    ))  # fmt: skip
    hooks: tuple[str, ...] = field(default=(), metadata=opt(
        "--hook", help="text=MODEL or vae=MODEL: precompute into samples."
    ))  # fmt: skip
    hook_batch_size: int = 64
    device: str = field(default="cpu", metadata=opt(help="Device for the hooks' models."))
    allow_download: bool = field(default=False, metadata=opt("--allow-download", help=(
        "Fetch a hook's model missing from the local Hugging Face cache from the Hub."
    )))  # fmt: skip
    overwrite: bool = field(default=False, metadata=opt(
        help="Replace OUT if it exists (only once the new one is complete)."
    ))  # fmt: skip

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


def _member_index(path: Path, exact: bool) -> dict[str, tuple[int, int]]:
    """Member name → (data offset, size); the first member where a tar repeats a name.

    wids' mmap index reads plain ustar headers fast (a fifth of tarfile's time); `exact` reads
    the tar with tarfile, which also knows PAX and GNU long names and non-UTF-8 bytes.
    """
    index: dict[str, tuple[int, int]] = {}
    if not exact:
        tar = MMIndexedTar(str(path), verbose=False)
        try:
            for name, offset, size in tar.by_index:
                index.setdefault(name, (offset + 512, size))
        finally:
            tar.close()
        return index
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                index.setdefault(member.name, (member.offset_data, member.size))
    return index


class _Sources:
    """Random access to source images by (shard, key), one index per tar, built lazily.

    A name a tar holds twice resolves to its first member, the one annotate's streaming read
    scored (later samples under the key failed as duplicates)."""

    def __init__(self, shards: str) -> None:
        self.paths = {s.name: s.path for s in list_shards(shards)}
        self.files: dict[str, BinaryIO] = {}
        self.index: dict[str, dict[str, tuple[int, int]]] = {}
        self.exact: set[str] = set()  # shards indexed by tarfile

    def _open(self, shard: str, exact: bool) -> None:
        if shard not in self.paths:
            raise MiroError(
                f"source shard {shard!r} (in the database) is not under the shards given"
            )
        try:
            self.index[shard] = _member_index(self.paths[shard], exact)
        except (UnicodeDecodeError, ValueError):  # names wids cannot read
            exact, self.index[shard] = True, _member_index(self.paths[shard], exact=True)
        if exact:
            self.exact.add(shard)
        if shard not in self.files:
            self.files[shard] = open(self.paths[shard], "rb")  # noqa: SIM115 — closed by close()

    def read(self, shard: str, key: str, ext: str) -> bytes:
        name = f"{key}.{ext}"
        if shard not in self.index:
            self._open(shard, exact=False)
        if name not in self.index[shard] and shard not in self.exact:
            self._open(shard, exact=True)  # a long or PAX name: wids saw only its ustar stub
        if name not in self.index[shard]:
            raise MiroError(f"{name} is missing from source shard {self.paths[shard]}")
        offset, size = self.index[shard][name]
        f = self.files[shard]
        f.seek(offset)
        return f.read(size)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


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
                fault_point("reshard.shard")
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
    with output_lock(cfg.out):  # one writer per output; its leftovers are only then stale
        recover_folder(cfg.out)
        if cfg.out.exists() and not cfg.out.is_dir():
            raise MiroError(f"cannot write {cfg.out}: it is a file, not a folder")
        if cfg.out.exists() and any(cfg.out.iterdir()) and not cfg.overwrite:
            raise MiroError(f"{cfg.out} exists and is not empty (pass --overwrite to replace it)")
        return _reshard(cfg)


def _reshard(cfg: ReshardConfig) -> ReshardReport:
    version, levels, names, df, excluded = _load_selection(cfg)
    hooks = build_hooks(cfg.hooks, cfg.device, cfg.allow_download)
    # Everything is written into a hidden staging folder that replaces `out` only when complete.
    staging = staging_folder(cfg.out)
    try:
        staging.mkdir(parents=True)
        written = _write_shards(cfg, staging, df, names, levels, version, hooks)
        swap_folder(staging, cfg.out, fault="reshard.finalize")
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
