"""Stage `miro data reshard`: training shards whose samples carry scores, bins and bin values.

Selects scored samples (optionally filtered by a SQL predicate over the reward columns) and
shuffles them across source shards out of core: DuckDB sorts the selection by a seeded hash
(spilling to disk past `sort_memory`) and streams it in record batches, cut into output
shards one after another, so memory holds about one output shard, not the corpus. Each
image's bytes are copied as they are (no re-encode), one ranged read each, at the offset a
member index of the source tars (built once, a DuckDB temporary table) gives. An output
shard is written by `reshard_write.write_job`: in this process (`--engine local`) or by one
Ray task each (`--engine ray`). The output appears only when complete: a folder is staged
beside OUT and renamed into place, a bucket prefix is staged and committed
(`miro_data.folders`); the manifest comes last. Sample format: miro_data.trainshards.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from miro_data.checks import (
    check_device,
    check_names,
    check_nonempty_text,
    check_optional_positive,
    check_positive,
    check_seed,
)
from miro_data.common import MiroError, user_os_error
from miro_data.folders import (
    bucket_recover,
    bucket_staging,
    bucket_swap,
    check_bucket_output,
    recover_folder,
    staging_folder,
    swap_folder,
)
from miro_data.hooks import parse_hooks
from miro_data.hub import allow_download_field
from miro_data.options import NAMES, opt
from miro_data.processes import output_lock
from miro_data.raycluster import check_ray_address, ray_session
from miro_data.reshard_engines import run_local, run_ray
from miro_data.reshard_select import LevelTable, Selection, open_selection
from miro_data.reshard_write import WriteContext
from miro_data.storage import filesystem, is_url
from miro_data.trainshards import MANIFEST, HookModels, Manifest, ManifestSource, ShardEntry

log = logging.getLogger(__name__)

Engine = Literal["local", "ray"]


@dataclass(frozen=True)
class ReshardConfig:
    """Which samples, which bin edges, how to cut and shuffle, what to precompute, and where."""

    shards: str = field(metadata=opt(help="The source shards (as given to annotate)."))
    db: Path = field(metadata=opt(help="DuckDB file with scores and bin edges."))
    out: str = field(metadata=opt(help="New folder (or s3://bucket/prefix) for the shards."))
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
    allow_download: bool = allow_download_field("a hook's model")
    overwrite: bool = field(default=False, metadata=opt(
        help="Replace OUT if it exists (only once the new one is complete)."
    ))  # fmt: skip
    engine: Engine = field(default="local", metadata=opt(
        help="local: output shards written here, one after another; ray: one Ray task each."
    ))  # fmt: skip
    ray_address: str | None = field(default=None, metadata=opt(
        help="With --engine ray: auto | HOST:PORT | ray://HOST:PORT (default: start a local Ray)."
    ))  # fmt: skip
    sort_memory_mb: int = field(default=1024, metadata=opt(
        help="Memory for the shuffle, in MB; a larger selection is sorted in parts on disk."
    ))  # fmt: skip
    in_flight: int | None = field(default=None, metadata=opt(
        help="With --engine ray: output shards written at once (default: twice the cluster's CPUs)."
    ))  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", str(self.out))  # a Path from Python callers is fine
        check_positive("--shard-size", self.shard_size)
        check_positive("hook_batch_size", self.hook_batch_size)
        check_positive("--sort-memory-mb", self.sort_memory_mb)
        check_optional_positive("--in-flight", self.in_flight)
        check_seed("--shuffle-seed", self.shuffle_seed)
        check_optional_positive("--edges-version", self.edges_version)
        check_names("--rewards", self.rewards)
        check_device("--device", self.device)
        if self.where is not None:
            check_nonempty_text("--where", self.where)
        if self.engine not in ("local", "ray"):
            raise MiroError(f"--engine {self.engine!r}: use local or ray")
        if self.ray_address is not None and self.engine != "ray":
            raise MiroError("--ray-address needs --engine ray")
        if self.ray_address is not None:
            check_ray_address(self.ray_address)
        parse_hooks(self.hooks)


@dataclass(frozen=True)
class ReshardReport:
    out: str | Path  # a Path for a local folder, else the URL
    shards: int
    samples: int
    excluded_unscored: int


def _manifest(
    cfg: ReshardConfig, names: list[str], levels: LevelTable, version: int,
    written: tuple[ShardEntry, ...],
) -> Manifest:  # fmt: skip
    """What the shards hold and where it came from."""
    models = dict(parse_hooks(cfg.hooks))
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
    if is_url(cfg.out):
        with _engine(cfg) as ray:
            return _reshard_bucket(cfg, ray)
    out = Path(cfg.out)
    with output_lock(out):  # one writer per output; its leftovers are only then stale
        recover_folder(out)
        if out.exists() and not out.is_dir():
            raise MiroError(f"cannot write {out}: it is a file, not a folder")
        if out.exists() and any(out.iterdir()) and not cfg.overwrite:
            raise MiroError(f"{out} exists and is not empty (pass --overwrite to replace it)")
        with _engine(cfg) as ray:
            return _reshard_local(cfg, out, ray)


@contextlib.contextmanager
def _engine(cfg: ReshardConfig) -> Iterator[Any]:
    """Ray connected (None for the local engine): before anything is written."""
    if cfg.engine == "local":
        yield None
        return
    with ray_session("--engine ray", cfg.ray_address) as ray:
        yield ray


def _run(cfg: ReshardConfig, sel: Selection, dest: str, ray: Any) -> tuple[ShardEntry, ...]:
    """Every output shard into `dest`, by the configured engine."""
    names = sel.rewards
    ctx = WriteContext(
        sources=sel.sources, rewards=tuple(names), edges_version=sel.version,
        levels={r: sel.levels[r][1] for r in names}, dest=dest,
    )  # fmt: skip
    if ray is not None:
        return run_ray(cfg, sel.jobs(), ctx, sel.total, ray)
    return run_local(cfg, sel.jobs(), ctx, sel.total)


def _reshard_local(cfg: ReshardConfig, out: Path, ray: Any) -> ReshardReport:
    with open_selection(cfg) as sel:
        staging = staging_folder(out)  # replaces `out` only when complete
        try:
            staging.mkdir(parents=True)
            written = _run(cfg, sel, str(staging), ray)
            manifest = _manifest(cfg, sel.rewards, sel.levels, sel.version, written)
            tmp = staging / f".{MANIFEST}.tmp"
            tmp.write_text(manifest.to_json())
            tmp.rename(staging / MANIFEST)
            swap_folder(staging, out, fault="reshard.finalize")
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            mapped = _user_error(err, out)
            if mapped is None:
                raise
            raise mapped from None
    return _report(out, written, sel)


def _reshard_bucket(cfg: ReshardConfig, ray: Any) -> ReshardReport:
    fs, prefix = filesystem(cfg.out)
    check_bucket_output(fs, prefix, cfg.out)
    bucket_recover(fs, prefix)
    if _has_objects(fs, prefix) and not cfg.overwrite:
        raise MiroError(f"{cfg.out} exists and is not empty (pass --overwrite to replace it)")
    with open_selection(cfg) as sel:
        staging = bucket_staging(prefix)
        protocol = cfg.out.split("://", 1)[0]
        try:
            written = _run(cfg, sel, f"{protocol}://{staging}", ray)
            manifest = _manifest(cfg, sel.rewards, sel.levels, sel.version, written)
            fs.pipe_file(f"{staging}/{MANIFEST}", manifest.to_json().encode())
            bucket_swap(fs, staging, prefix, fault="reshard.finalize")
        except BaseException as err:
            _remove_quietly(fs, staging)
            mapped = _bucket_error(err, cfg.out)
            if mapped is None:
                raise
            raise mapped from None
    return _report(cfg.out, written, sel)


def _report(out: str | Path, written: tuple[ShardEntry, ...], sel: Selection) -> ReshardReport:
    samples = sum(e.count for e in written)
    log.info("wrote %d samples in %d shards to %s", samples, len(written), out)
    return ReshardReport(out, len(written), samples, sel.excluded)


def _has_objects(fs, prefix: str) -> bool:
    try:
        return bool(fs.find(prefix, maxdepth=None, withdirs=False))
    except FileNotFoundError:
        return False


def _remove_quietly(fs, path: str) -> None:
    try:
        fs.rm(path, recursive=True)
    except (OSError, ValueError):
        log.warning("could not remove %s", path)


def _user_error(err: BaseException, out: Path) -> MiroError | None:
    """A full disk or a read-only folder names OUT (the old OUT, if any, is untouched)."""
    if not isinstance(err, Exception):
        return None
    named = getattr(err, "filename", None) is not None
    return user_os_error(err, None if named else out, True)


def _bucket_error(err: BaseException, out: str) -> MiroError | None:
    if isinstance(err, MiroError):
        return err
    if isinstance(err, PermissionError | FileNotFoundError):
        return MiroError(f"cannot write {out}: {err}")
    return None
