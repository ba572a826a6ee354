"""Opt-in downloads from the Hugging Face Hub (`--allow-download`, `allow_download=True`).

Offline is the default: rewards and encoders read the local Hugging Face cache only
(`rewards/weights.py`, `encoders.py`), and the Makefile and tests set `HF_HUB_OFFLINE=1`.
A user who is online opts in per command; only then do these functions fetch the missing
files into the standard cache (`hf_hub_download` / `snapshot_download`), after which the
usual offline resolution reads them. huggingface_hub reads `HF_HUB_OFFLINE` once, at import,
into `constants.HF_HUB_OFFLINE`, which every request checks: `online()` lifts it for our own
calls only and puts it back. The endpoint is read from `HF_ENDPOINT` at call time (the
constant is also fixed at import), so a mirror or a test server set later is honoured.
Every failure is one `MiroError` naming the repo, the file and the cause.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import posixpath
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from miro_data.common import MiroError
from miro_data.options import opt

log = logging.getLogger(__name__)

_LOCK = threading.Lock()  # one lifted-offline window at a time in a process
OPT_IN = "pass --allow-download (allow_download=True in Python) to fetch them from the Hub"


def allow_download_field(what: str) -> Any:
    """The `allow_download` config field of a command that loads `what` (e.g. "reward
    weights"): off by default, `--allow-download` on the command line."""
    return dataclasses.field(default=False, metadata=opt("--allow-download", help=(
        f"Fetch {what} missing from the local Hugging Face cache from the Hub."
    )))  # fmt: skip


def endpoint() -> str:
    """The Hub the downloads go to: $HF_ENDPOINT now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


@contextlib.contextmanager
def online() -> Iterator[None]:
    """huggingface_hub allowed to reach the network for the calls inside, whatever
    HF_HUB_OFFLINE said at import; the previous setting is restored afterwards."""
    from huggingface_hub import constants

    # its retry warnings (5 tries, printed twice: its handler and ours) would bury the one
    # error line a failure ends with
    hub_log = logging.getLogger("huggingface_hub")
    with _LOCK:
        saved = constants.HF_HUB_OFFLINE, hub_log.level
        constants.HF_HUB_OFFLINE = False
        hub_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved[0]
            hub_log.setLevel(saved[1])


def _cache(cache_dir: str | os.PathLike | None) -> str:
    """The hub cache, from the environment now (huggingface_hub fixed its own at import)."""
    from miro_data.rewards.weights import hub_cache  # (weights.py imports this module)

    return str(cache_dir if cache_dir is not None else hub_cache())


def _cause(err: BaseException) -> str:
    """The first line of an error and of what caused it: 'no network' reads as such."""
    parts: list[str] = []
    while err is not None and len(parts) < 3:
        text = str(err).strip()
        first = next((line for line in text.splitlines() if line.strip()), type(err).__name__)
        if first not in parts:
            parts.append(first[:200])
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return ": ".join(parts)


def _error(repo: str, what: str, err: BaseException) -> MiroError:
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{endpoint()}/{repo}"
    if isinstance(err, GatedRepoError):
        reason = "the repo is gated: accept its terms and set HF_TOKEN"
    elif isinstance(err, RepositoryNotFoundError):
        reason = "no such repo (or it is private: set HF_TOKEN)"
    elif isinstance(err, RevisionNotFoundError):
        reason = "no such revision"
    elif isinstance(err, LocalEntryNotFoundError):
        reason = f"the Hub cannot be reached ({_cause(err.__cause__ or err)})"
    elif isinstance(err, httpx2.TransportError):  # refused, timed out, no route, DNS
        reason = f"the Hub cannot be reached ({_cause(err)})"
    else:
        reason = _cause(err)
    return MiroError(f"cannot download {what} from {where}: {reason}")


def download_file(
    repo: str,
    filenames: Sequence[str],
    *,
    revision: str = "main",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The first of `filenames` the repo holds, fetched into the hub cache; its local path."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    for name in filenames:
        try:
            with online():
                path = hf_hub_download(repo, name, revision=revision, cache_dir=_cache(cache_dir),
                                       endpoint=endpoint())  # fmt: skip
        except RemoteEntryNotFoundError:
            continue  # another accepted name may be there (.safetensors or .bin)
        except Exception as err:
            raise _error(repo, " or ".join(filenames), err) from None
        log.info("downloaded %s/%s to %s", repo, name, path)
        return Path(path)
    names = " or ".join(filenames)
    raise MiroError(f"cannot download {names} from {endpoint()}/{repo}: the repo has no such file")


# Files of other frameworks and formats a torch `from_pretrained` never reads (a repo such as
# google/flan-t5-xl also holds TF and Flax copies of its weights, tens of GB)
_FOREIGN = (".msgpack", ".h5", ".ot", ".onnx", ".onnx_data", ".tflite", ".mlmodel", ".pb")
_FOREIGN_DIRS = {"onnx", "openvino", "coreml", "flax", "tf"}
_PICKLES = (".bin", ".pt", ".pth", ".ckpt")
_VARIANT = re.compile(r"\.(fp16|bf16|non_ema|ema)[.-][^/]*$")  # diffusers' weight variants


def torch_files(files: Sequence[str], subfolder: str | None = None) -> list[str]:
    """The repo files a torch `from_pretrained` reads (of `subfolder` only, if given):
    configs, tokenizers and one weight format per folder — safetensors where a folder has
    them (not its pickled copies nor fp16/EMA variants), else what it has."""
    if subfolder:
        files = [f for f in files if f.startswith(subfolder.strip("/") + "/")]
    files = [f for f in files
             if not f.endswith(_FOREIGN) and f.split("/")[0] not in _FOREIGN_DIRS]  # fmt: skip
    safe = {posixpath.dirname(f) for f in files
            if f.endswith(".safetensors") and not _VARIANT.search(f)}  # fmt: skip
    return [
        f
        for f in files
        if posixpath.dirname(f) not in safe or not (f.endswith(_PICKLES) or _VARIANT.search(f))
    ]


def download_snapshot(
    repo: str,
    *,
    revision: str = "main",
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A model repo (or one subfolder of it) fetched into the hub cache, the files a torch
    `from_pretrained` reads only (`torch_files`); the snapshot folder."""
    from huggingface_hub import HfApi, snapshot_download

    what = f"{subfolder}/" if subfolder else "the model"
    try:
        with online():
            files = HfApi(endpoint=endpoint()).list_repo_files(repo, revision=revision)
            wanted = torch_files(files, subfolder)
            if wanted:
                path = snapshot_download(repo, revision=revision, cache_dir=_cache(cache_dir),
                                         allow_patterns=[glob.escape(f) for f in wanted],
                                         endpoint=endpoint())  # fmt: skip
    except Exception as err:
        raise _error(repo, what, err) from None
    if not wanted:
        raise MiroError(f"cannot download {what} from {endpoint()}/{repo}: the repo has no "
                        f"{'such folder' if subfolder else 'files'}")  # fmt: skip
    log.info("downloaded %s (%d files) to %s", repo, len(wanted), path)
    return Path(path)


def local_model(name: str, allow_download: bool, subfolder: str | None = None) -> str:
    """What `from_pretrained` should load: `name` itself (a folder, or a repo id the offline
    cache resolves), or with `allow_download` and no such folder, the downloaded snapshot."""
    if not allow_download or Path(name).expanduser().exists():
        return name
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:  # a path, not ORG/NAME
        raise MiroError(f"{name}: no such folder (nor a Hub repo id to download)")
    return str(download_snapshot(name, subfolder=subfolder))
