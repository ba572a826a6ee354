"""The training-shard format, in one place: what `reshard` (and the test fixtures) write and
`miro_train` reads.

A folder of `NNNNNN.tar` WebDataset shards and `manifest.json`. Each sample is a group of tar
members `KEY.SUFFIX` (suffixes below); its `json` member is a `SampleMeta`, the manifest a
`Manifest`. Both validate when built or read: a malformed record read from disk is one
MiroError line naming its file. `trainshards_write.ShardWriter` writes a folder,
`read_manifest` / `read_sample` / `read_samples` read one. Unknown keys are ignored on reading, so a newer
writer may add fields. This module must not import DuckDB: the trainer imports it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from miro_data import jsonfields as jf
from miro_data.common import MiroError, dumps_json
from miro_data.shards import IMAGE_EXTS

FORMAT = "miro-shards/2"
# /1 named the manifest's `n_levels` `n_bins` (which in `bin_versions` means the requested B).
FORMAT_1 = "miro-shards/1"
MANIFEST = "manifest.json"
# Member suffixes besides the image's (one of IMAGE_EXTS, lowercase).
JSON = "json"
TXT = "txt"
TEXT_EMB = "txt_emb.npy"  # float16 (L, D) caption token embeddings (reshard hook `text`)
LATENT = "latent.npy"  # float16 (C, h, w) unscaled VAE latents (reshard hook `vae`)


# ----------------------------------------------------------------------------
# The records
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleMeta:
    """A sample's `json` member. Maps are keyed by reward; None (null) = undefined for it."""

    key: str
    caption: str | None
    url: str | None
    source_shard: str
    edges_version: int
    scores: Mapping[str, float | None]  # raw scores; NaN is written (and read back) as null
    bins: Mapping[str, int | None]  # level index
    bin_values: Mapping[str, float | None]  # level / (n_levels − 1), in [0, 1]
    source: Mapping[str, Any]  # the source sample's own json
    image_size: tuple[int, int] | None = None  # (w, h) as annotate decoded and scored it

    def __post_init__(self) -> None:
        norm = object.__setattr__  # normalise in place: numpy scalars → Python, NaN → None
        jf.string("key", self.key)
        jf.string("caption", self.caption, optional=True)
        jf.string("url", self.url, optional=True)
        jf.string("source_shard", self.source_shard)
        norm(self, "edges_version", jf.integer("edges_version", self.edges_version))
        norm(self, "scores", jf.mapping("scores", self.scores, jf.finite_or_none))
        norm(self, "bins", jf.mapping("bins", self.bins, jf.optional_int))
        norm(self, "bin_values", jf.mapping("bin_values", self.bin_values, jf.finite_or_none))
        if not isinstance(self.source, Mapping):
            raise jf.FieldError(f"'source' is {jf.describe(self.source)}, not an object")
        if self.image_size is not None:
            size = self.image_size
            if not isinstance(size, list | tuple) or len(size) != 2:
                raise jf.FieldError(f"'image_size' is {jf.describe(size)}, not [width, height]")
            norm(
                self,
                "image_size",
                (jf.integer("image_size", size[0], 1), jf.integer("image_size", size[1], 1)),
            )

    def reward_values(self, rewards: tuple[str, ...], where: str) -> list[float]:
        """The bin values of `rewards`, in order, NaN where undefined; MiroError if absent."""
        if rewards and not self.bin_values:
            raise MiroError(f"{where} has no bin_values: these shards carry no reward fields")
        values = []
        for name in rewards:
            if name not in self.bin_values:
                raise MiroError(f"{where} has no bin value for reward {name!r}")
            v = self.bin_values[name]
            if v is not None and not 0.0 <= v <= 1.0:
                raise MiroError(f"{where}: bin value {v} of {name!r} is outside [0, 1]")
            values.append(math.nan if v is None else v)
        return values

    def to_json(self) -> bytes:
        """The member's bytes; NaN anywhere (a source record's own) is written as null."""
        obj: dict[str, Any] = {
            "key": self.key, "caption": self.caption, "url": self.url,
            "source_shard": self.source_shard, "edges_version": self.edges_version,
        }  # fmt: skip
        if self.image_size is not None:
            obj["image_size"] = list(self.image_size)
        obj |= {"scores": self.scores, "bins": self.bins, "bin_values": self.bin_values}
        obj["source"] = self.source
        try:  # the fields are normalised already: the plain dump is the common, fast path
            return json.dumps(obj, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError):
            return dumps_json(obj).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str, where: str) -> SampleMeta:
        """Parse and check a `json` member; `where` names the sample and its tar in errors."""
        try:
            obj = jf.load_object(data)
            jf.required(obj, _SAMPLE_KEYS)
            return cls(**{k: obj[k] for k in _SAMPLE_KEYS}, image_size=obj.get("image_size"))
        except jf.FieldError as err:
            raise MiroError(f"{where}: malformed json member: {err}") from None


_SAMPLE_KEYS = ("key", "caption", "url", "source_shard", "edges_version", "scores", "bins",
                "bin_values", "source")  # fmt: skip


@dataclass(frozen=True)
class TrainSample:
    """One sample's members: image bytes as in the source (never re-encoded), caption, meta,
    and the arrays the reshard hooks precomputed (None: not stored)."""

    meta: SampleMeta
    caption: str  # the `txt` member
    image: bytes | None
    image_ext: str | None  # the image member's suffix, one of IMAGE_EXTS (written lowercase)
    txt_emb: np.ndarray | None = None
    latent: np.ndarray | None = None

    @property
    def key(self) -> str:
        return self.meta.key


@dataclass(frozen=True)
class ShardEntry:
    name: str  # a file in the folder, e.g. 000000.tar
    count: int

    def __post_init__(self) -> None:
        jf.string("shards[].name", self.name)
        if Path(self.name).name != self.name or self.name in ("", ".", ".."):
            raise jf.FieldError(f"shard name {self.name!r} is not a file name in the folder")
        object.__setattr__(self, "count", jf.integer("shards[].count", self.count, 0))


@dataclass(frozen=True)
class HookModels:
    """The models whose outputs the samples carry (TEXT_EMB, LATENT); None: not computed."""

    text: str | None = None
    vae: str | None = None

    def __post_init__(self) -> None:
        jf.string("hooks.text", self.text, optional=True)
        jf.string("hooks.vae", self.vae, optional=True)


@dataclass(frozen=True)
class ManifestSource:
    """Where the samples came from: the source shards as given, and the database."""

    shards: str
    db: str

    def __post_init__(self) -> None:
        jf.string("source.shards", self.shards)
        jf.string("source.db", self.db)


def _edges(name: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, list | tuple | np.ndarray) or not all(jf.is_number(x) for x in v):
        raise jf.FieldError(f"{name!r} is {jf.describe(v)}, not an array of numbers")
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: what the shards hold and where it came from."""

    rewards: tuple[str, ...]  # conditioning order
    reward_versions: Mapping[str, str]
    edges_version: int
    n_levels: Mapping[str, int]  # effective levels (≤ the B requested from `miro data bins`)
    edges: Mapping[str, tuple[float, ...]]
    shards: tuple[ShardEntry, ...]
    where: str | None  # the --where predicate
    shuffle_seed: int
    hooks: HookModels
    source: ManifestSource
    created: str  # ISO 8601 time
    total: int = field(init=False)  # written; checked against the shards' counts on reading

    def __post_init__(self) -> None:
        norm = object.__setattr__
        if not isinstance(self.rewards, list | tuple):
            raise jf.FieldError(f"'rewards' is {jf.describe(self.rewards)}, not an array")
        norm(self, "rewards", tuple(jf.string("rewards[]", r) for r in self.rewards))
        norm(
            self, "reward_versions", jf.mapping("reward_versions", self.reward_versions, jf.string)
        )
        norm(self, "edges_version", jf.integer("edges_version", self.edges_version))
        norm(
            self,
            "n_levels",
            jf.mapping("n_levels", self.n_levels, lambda n, v: jf.integer(n, v, 1)),
        )
        norm(self, "edges", jf.mapping("edges", self.edges, _edges))
        if not isinstance(self.shards, list | tuple) or not all(
            isinstance(s, ShardEntry) for s in self.shards
        ):
            raise jf.FieldError("'shards' is not an array of {name, count}")
        norm(self, "shards", tuple(self.shards))
        jf.string("where", self.where, optional=True)
        norm(self, "shuffle_seed", jf.integer("shuffle_seed", self.shuffle_seed))
        jf.string("created", self.created)
        norm(self, "total", sum(s.count for s in self.shards))

    def to_json(self) -> str:
        obj = {
            "format": FORMAT, "rewards": list(self.rewards),
            "reward_versions": self.reward_versions, "edges_version": self.edges_version,
            "n_levels": self.n_levels, "edges": self.edges,
            "shards": [{"name": s.name, "count": s.count} for s in self.shards],
            "total": self.total, "where": self.where, "shuffle_seed": self.shuffle_seed,
            "hooks": {"text": self.hooks.text, "vae": self.hooks.vae},
            "source": {"shards": self.source.shards, "db": self.source.db},
            "created": self.created,
        }  # fmt: skip
        return dumps_json(obj, indent=2)

    def digest(self) -> str:
        """What the samples are, as 16 hex digits: rewards, bin edges, levels, filter, shuffle,
        shards and hook models — not where they came from or when (those differ by machine).
        Two experiments whose shards have one digest trained on the same data."""
        what = {
            "rewards": list(self.rewards), "reward_versions": dict(self.reward_versions),
            "edges_version": self.edges_version, "n_levels": dict(self.n_levels),
            "edges": {k: list(v) for k, v in self.edges.items()},
            "shards": [[s.name, s.count] for s in self.shards], "where": self.where,
            "shuffle_seed": self.shuffle_seed, "hooks": [self.hooks.text, self.hooks.vae],
        }  # fmt: skip
        canonical = dumps_json(what, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: bytes | str, path: str | Path) -> Manifest:
        """Parse and check a manifest (format /2, or /1 with `n_bins`); errors name `path`."""
        try:
            obj = jf.load_object(data)
        except jf.FieldError as err:
            raise MiroError(f"{path}: {err}") from None
        if obj.get("format") not in (FORMAT, FORMAT_1):
            raise MiroError(f"{path}: format {obj.get('format')!r}, expected {FORMAT!r}")
        levels = "n_bins" if obj["format"] == FORMAT_1 else "n_levels"
        try:
            jf.required(obj, (*_MANIFEST_KEYS, levels))
            manifest = cls(
                **{k: obj[k] for k in _MANIFEST_KEYS if k not in _NESTED},
                n_levels=obj[levels],
                shards=tuple(_entry(e) for e in jf.array("shards", obj["shards"])),
                hooks=HookModels(**jf.fields("hooks", obj["hooks"], ("text", "vae"))),
                source=ManifestSource(**jf.fields("source", obj["source"], ("shards", "db"))),
            )
            if obj["total"] != manifest.total:
                raise jf.FieldError(
                    f"'total' is {obj['total']!r}, the shards hold {manifest.total}"
                )
        except jf.FieldError as err:
            raise MiroError(f"{path}: malformed manifest: {err}") from None
        return manifest


_MANIFEST_KEYS = ("rewards", "reward_versions", "edges_version", "edges", "shards", "total",
                  "where", "shuffle_seed", "hooks", "source", "created")  # fmt: skip
_NESTED = ("shards", "total", "hooks", "source")  # built (or computed) separately


def _entry(v: Any) -> ShardEntry:
    return ShardEntry(**jf.fields("shards[]", v, ("name", "count")))


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> Manifest:
    """The folder's checked manifest; MiroError if there is none or it is malformed."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        hint = (
            ": these look like source shards (img2dataset's); annotate them, then run "
            "`miro data bins` and `miro data reshard` to make training shards"
            if _holds_source_shards(Path(folder))
            else ""
        )
        raise MiroError(f"{folder} is not a training-shard folder (no {MANIFEST}){hint}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise MiroError(f"cannot read {path}: {err.strerror or err}") from None
    return Manifest.from_json(data, path)


def _holds_source_shards(path: Path) -> bool:
    """Whether `path` is (or holds) a tar whose first members include an image."""
    tars = [path] if path.suffix == ".tar" and path.is_file() else []
    if not tars and path.is_dir():
        tars = sorted(path.glob("*.tar"))[:1] or sorted(path.glob("*/*.tar"))[:1]
    for tar in tars:
        try:
            with tarfile.open(tar) as archive:
                for _, member in zip(range(16), archive, strict=False):
                    if member.name.rpartition(".")[2].lower() in IMAGE_EXTS:
                        return True
        except (OSError, tarfile.TarError):
            return False
    return False


def sample_origin(raw: Mapping[str, Any]) -> str:
    """How error messages name a raw webdataset sample: its key and its tar."""
    return f"sample {raw.get('__key__')!r} of {raw.get('__url__')}"


def _array_member(raw: Mapping[str, Any], name: str, where: str) -> np.ndarray | None:
    if name not in raw:
        return None
    try:
        return np.load(io.BytesIO(raw[name]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise MiroError(f"{where}: its {name} member is not a .npy array ({err})") from None


def read_sample(raw: Mapping[str, Any]) -> TrainSample:
    """A raw webdataset sample (suffix → bytes, `__key__`, `__url__`) → its checked members.

    Members a sample lacks are None (the image, the arrays): the reader that needs one says so.
    """
    where = sample_origin(raw)
    if JSON not in raw:
        raise MiroError(f"{where} has no valid json member")
    meta = SampleMeta.from_json(raw[JSON], where)
    if "__key__" in raw and raw["__key__"] != meta.key:
        raise MiroError(f"{where}: malformed json member: its key is {meta.key!r}")
    try:
        caption = raw[TXT].decode("utf-8") if TXT in raw else (meta.caption or "")
    except UnicodeDecodeError:
        raise MiroError(f"{where}: its {TXT} member is not UTF-8") from None
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    return TrainSample(
        meta, caption, raw[ext] if ext else None, ext,
        txt_emb=_array_member(raw, TEXT_EMB, where), latent=_array_member(raw, LATENT, where),
    )  # fmt: skip


def read_samples(folder: str | Path) -> Iterator[TrainSample]:
    """Every sample of a folder, in manifest and tar order."""
    folder = Path(folder)
    for entry in read_manifest(folder).shards:
        yield from map(read_sample, wds.tarfile_samples([{"url": str(folder / entry.name)}]))
