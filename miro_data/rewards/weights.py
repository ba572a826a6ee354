"""Finding, fingerprinting and safely loading the files of learned rewards.

A file is looked for at an explicit path (rewards config or `--reward-option`) or, failing
that, in the local Hugging Face cache by repo id (`$HF_HOME/hub/models--ORG--NAME/snapshots/…`,
the layout `HF_HUB_OFFLINE=1` resolves). Only `download_missing` touches the network (for
`--allow-download`); otherwise a missing file is a
`MiroError` naming every file and every place looked. Checkpoints load with `weights_only=True`
or safetensors (no arbitrary pickle) and into the model strictly. Importing this module does
not import torch, so `miro data rewards` can tell what is available without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from miro_data.common import MiroError, first_line
from miro_data.hub import OPT_IN, download_file
from miro_data.rewards.base import WeightStatus

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIGESTS: dict[tuple[str, int, int], str] = {}


# ----------------------------------------------------------------------------
# Locating files
# ----------------------------------------------------------------------------


def hub_cache(hf_home: str | os.PathLike | None = None) -> Path:
    """The hub cache folder: `<hf_home>/hub`, else $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/…/hub."""
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def repo_folder(repo: str, hf_home: str | os.PathLike | None = None) -> Path:
    return hub_cache(hf_home) / ("models--" + repo.replace("/", "--"))


def _snapshots(repo: str, hf_home: str | os.PathLike | None, revision: str) -> list[Path]:
    """Snapshot folders to search: the one `refs/<revision>` names, else all, newest first."""
    folder = repo_folder(repo, hf_home)
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        return [folder / "snapshots" / commit]
    snaps = folder / "snapshots"
    if not snaps.is_dir():
        return []
    return sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: -p.stat().st_mtime)


@dataclass(frozen=True)
class Wanted:
    """One file a reward needs: one of `filenames`, in `folder` if given, else in HF repo `repo`
    (or exactly `explicit`, a file path, if given)."""

    label: str
    filenames: tuple[str, ...] = ()
    repo: str | None = None
    folder: str | None = None
    explicit: str | None = None
    revision: str = "main"

    def candidates(self, hf_home: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
        """(description, path) of every place looked, in order."""
        if self.explicit:
            path = Path(self.explicit).expanduser()
            return [(str(path), path)]
        if self.folder:
            paths = [Path(self.folder).expanduser() / name for name in self.filenames]
            return [(str(p), p) for p in paths]
        out: list[tuple[str, Path]] = []
        snaps = _snapshots(self.repo, hf_home, self.revision) if self.repo else []
        for name in self.filenames:
            pattern = repo_folder(self.repo or "", hf_home) / "snapshots" / "*" / name
            out.extend((f"HF cache {pattern}", snap / name) for snap in snaps)
            if not snaps:
                out.append((f"HF cache {pattern}", pattern))
        return out

    def find(self, hf_home: str | os.PathLike | None = None) -> Path | None:
        return next((p for _, p in self.candidates(hf_home) if p.is_file()), None)

    def where(self, hf_home: str | os.PathLike | None = None) -> str:
        found = self.find(hf_home)
        if found is not None:
            return str(found)
        if self.explicit or self.folder:
            return " or ".join(desc for desc, _ in self.candidates(hf_home))
        names = " or ".join(self.filenames)
        return f"HF cache: {self.repo}/{names} (under {hub_cache(hf_home)})"

    def status(self, hf_home: str | os.PathLike | None = None) -> WeightStatus:
        found = self.find(hf_home) is not None
        return WeightStatus(where=f"{self.label}: {self.where(hf_home)}", available=found)


def resolve(
    reward: str, wanted: Sequence[Wanted], hf_home: str | os.PathLike | None = None
) -> list[Path]:
    """Paths of all `wanted` files, or one MiroError listing each missing file and where looked."""
    found, missing = [], []
    for w in wanted:
        path = w.find(hf_home)
        found.append(path)
        if path is None:
            places = "; ".join(dict.fromkeys(desc for desc, _ in w.candidates(hf_home)))
            missing.append(
                f"{w.label} ({' or '.join(w.filenames) or w.explicit}) — looked in: {places}"
            )
    if missing:
        raise MiroError(
            f"reward {reward!r}: weights not found: "
            + " | ".join(missing)
            + ". Put them in the Hugging Face cache (e.g. `hf download REPO FILE` on a "
            "machine with network, then copy the cache), give explicit paths "
            f"(`--reward-option {reward}.KEY=PATH`, see docs/rewards.md), or {OPT_IN}."
        )
    return [p for p in found if p is not None]


def shard_names(index: Path) -> list[str]:
    """The files a sharded checkpoint's `*.index.json` names (relative, inside its folder)."""
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise MiroError(f"cannot read the shard index {index}: {err}") from None
    for name in names:
        parts = PurePosixPath(str(name)).parts
        if not isinstance(name, str) or not parts or parts[0] == "/" or ".." in parts:
            raise MiroError(f"shard index {index} names {name!r}, not a file beside it")
    return names


def download_missing(
    reward: str, wanted: Iterable[Wanted], hf_home: str | os.PathLike | None = None
) -> None:
    """Fetch each Hub file of `wanted` that the cache lacks, and the shards of a sharded
    checkpoint's index (explicit paths and folders are the user's own)."""
    cache = hub_cache(hf_home)
    for w in wanted:
        if not w.repo or w.explicit or w.folder:
            continue
        path = w.find(hf_home)
        if path is None:
            log.info("reward %s: %s not in the cache, downloading from %s", reward, w.label, w.repo)
            path = download_file(w.repo, w.filenames, revision=w.revision, cache_dir=cache)
        if path.name.endswith(".index.json"):
            for name in shard_names(path):
                if not (path.parent / name).is_file():
                    download_file(w.repo, [name], revision=w.revision, cache_dir=cache)


def statuses(
    wanted: Iterable[Wanted], hf_home: str | os.PathLike | None = None
) -> list[WeightStatus]:
    return [w.status(hf_home) for w in wanted]


# ----------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per process (HF cache blobs are named by it already)."""
    real = Path(path).resolve()
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        if real.parent.name == "blobs" and _SHA256.match(real.name):
            _DIGESTS[key] = real.name  # the hub verified this sha256 when it stored the file
        else:
            h = hashlib.sha256()
            with real.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def short_digest(path: str | os.PathLike, n: int = 12) -> str:
    return file_digest(path)[:n]


# Files a transformers tokenizer or processor may read from its folder: each can change tokens
# or pixels (a `do_lower_case`, an added token, a mean or crop size), hence scores.
PROCESSOR_FILES = (
    "preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "vocab.txt", "merges.txt", "special_tokens_map.json", "added_tokens.json",
    "spiece.model", "generation_config.json",
)  # fmt: skip


def present(folder: str | os.PathLike, names: Iterable[str] = PROCESSOR_FILES) -> list[Path]:
    """The files among `names` that exist in `folder`."""
    return [Path(folder) / name for name in names if (Path(folder) / name).is_file()]


def inputs_digest(files: Iterable[str | os.PathLike] = (), values: Any = None, n: int = 8) -> str:
    """Short sha256 over every input but the checkpoint that the scores depend on: the contents
    of `files` (configs, tokenizers, processors; by file name and content) and `values` (options
    such as QuickGELU, the preprocessing, a model config), canonical JSON."""
    h = hashlib.sha256()
    # by name and content, not by place: the same files elsewhere give the same version
    for entry in sorted(f"{Path(p).name}\0{file_digest(p)}\n" for p in files):
        h.update(entry.encode())
    h.update(json.dumps(values, sort_keys=True, default=str).encode())
    return h.hexdigest()[:n]


# ----------------------------------------------------------------------------
# Safe, strict loading
# ----------------------------------------------------------------------------


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch checkpoint (`weights_only=True`), on the CPU.

    `key` picks a nested dict (HPSv2 stores `{"state_dict": …}`). Any failure to read is a
    MiroError naming the file.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=_zipfile(path))
    except Exception as err:  # corrupt, truncated, or a pickle that is not plain tensors
        reason = first_line(err)
        raise MiroError(f"cannot read checkpoint {path}: {reason[:300]}") from None
    if key is not None and isinstance(data, dict) and key in data:
        data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise MiroError(f"checkpoint {path} does not hold a state dict of tensors")
    return data


def _zipfile(path: Path) -> bool:
    """torch's zip format can be memory-mapped; the legacy format cannot."""
    with path.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_strict(
    module: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    ignorable: Sequence[str] = (),
) -> None:
    """Load every parameter and buffer of `module`; any missing, extra or mis-shaped key is a
    MiroError. Keys starting with an `ignorable` prefix are dropped first: parts the published
    checkpoint may carry that scoring never uses (the module must not have them)."""
    expected = module.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(tuple(ignorable))}
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    for what, items in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
        if items:
            more = ", …" if len(items) > 4 else ""
            problems.append(f"{len(items)} {what} ({', '.join(items[:4])}{more})")
    if problems:
        raise MiroError(f"checkpoint {path} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)
