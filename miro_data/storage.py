"""Locations that may be URLs: local paths, `file://`, object stores (`s3://` through s3fs,
`gs://`, any fsspec protocol), and read-only `https://` and webdataset `pipe:CMD`.

The one place that knows about them: parse and join, list with globs (and `{000..009}` brace
lists), open for streaming reads, write with commit semantics (local: write-then-rename;
object stores: the finished object is uploaded in one PUT, so readers never see half of it,
and a folder's marker goes last), exists, remove. Credentials come from the standard
environment and config files (botocore's chain for s3fs); nothing here adds options.

Every failure is one line naming the URL and the cause (a missing bucket, access denied,
an unreachable endpoint, a missing client library with its `pip install`): `MiroError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from miro_data.common import MiroError, atomic_path, first_line

log = logging.getLogger(__name__)

# `scheme://…`, or webdataset's `pipe:CMD` (a shell command whose stdout is the tar)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(//)?")
READ_ONLY = ("http", "https", "pipe")
# The client library each protocol needs, and the extra that installs it.
_INSTALL = {"s3": ("s3fs", 'pip install "miro[s3]"'), "s3a": ("s3fs", 'pip install "miro[s3]"'),
            "gs": ("gcsfs", "pip install gcsfs"), "gcs": ("gcsfs", "pip install gcsfs"),
            "az": ("adlfs", "pip install adlfs"), "abfs": ("adlfs", "pip install adlfs")}  # fmt: skip
_GLOB = re.compile(r"[*?\[]")
_BRACES = re.compile(r"\{[^{}]*\.\.[^{}]*\}|\{[^{}]*,[^{}]*\}")


def scheme(location: str | Path) -> str:
    """The URL's protocol (`s3`, `https`, `pipe`, `file`…), or "" for a local path."""
    m = _SCHEME.match(str(location))
    if not m or (m.group(1) != "pipe" and not m.group(2)):
        return ""  # `C:…`-like or `name:x` without `//` is a local name
    return m.group(1).lower()


def is_url(location: str | Path) -> bool:
    """Whether `location` is a URL (anything but a local path or `file://`)."""
    return scheme(location) not in ("", "file")


def looks_like_url(text: str | Path) -> bool:
    """A URL, also after pathlib collapsed its `//` (`Path("s3://b/x")` is `s3:/b/x`)."""
    m = _SCHEME.match(str(text))
    if m is None:
        return False
    return m.group(1).lower() == "pipe" or str(text)[m.end(1) :].startswith(":/")


def local_path(location: str | Path) -> Path:
    """A local path or `file://` URL as a Path."""
    text = str(location)
    return Path(text[len("file://") :]) if scheme(text) == "file" else Path(text)


def join(base: str | Path, *parts: str) -> str:
    """`base/part/…` for a URL or a path (a URL's `/` kept as written)."""
    if not is_url(base):
        return str(local_path(base).joinpath(*parts))
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def parent(location: str | Path) -> str:
    if not is_url(location):
        return str(local_path(location).parent)
    return str(location).rstrip("/").rsplit("/", 1)[0]


def name(location: str | Path) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def with_suffix(location: str | Path, old: str, new: str) -> str:
    """`x.tar` → `x.parquet`, `x_stats.json`…: `old` replaced at the end of the location."""
    text = str(location)
    return (text[: -len(old)] if text.endswith(old) else text) + new


def check_writable(location: str | Path, what: str) -> None:
    """A URL that a command would write to must not be read-only (`https://`, `pipe:`)."""
    if scheme(location) in READ_ONLY:
        raise MiroError(f"{what} {location}: {scheme(location)}: locations are read-only")


# ----------------------------------------------------------------------------
# Filesystems and their errors
# ----------------------------------------------------------------------------

_FILESYSTEMS: dict[tuple, Any] = {}


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path within it.

    One instance per (process, protocol, AWS_* environment): an instance is not fork-safe,
    and a changed credential must not reuse a session signed with the old one."""
    proto = scheme(url)
    try:
        import fsspec
        from fsspec.core import split_protocol

        cls = fsspec.get_filesystem_class(proto)
    except (ImportError, ValueError) as err:
        package, hint = _INSTALL.get(proto, ("", ""))
        cause = f"needs {package}, not installed: {hint}" if hint else f"unsupported: {err}"
        raise MiroError(f"{url}: {cause}") from None
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    key = (os.getpid(), proto, env)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = cls(skip_instance_cache=True)
    fs = _FILESYSTEMS[key]
    path = fs._strip_protocol(url) if proto != "file" else split_protocol(url)[1]
    return fs, path


def _bucket(url: str) -> str:
    return "/".join(str(url).split("/", 3)[:3])


def storage_error(url: str | Path, err: BaseException, doing: str = "read") -> MiroError:
    """One line naming the URL and what went wrong, for any error fsspec or botocore raise."""
    text = first_line(err)
    kind = type(err).__name__
    if isinstance(err, MiroError):
        return err
    if isinstance(err, FileNotFoundError) and "bucket does not exist" in text.lower():
        cause = f"the bucket {_bucket(str(url))} does not exist"
    elif isinstance(err, FileNotFoundError):
        cause = "not found"
    elif isinstance(err, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        cause = (
            f"access denied ({text}); check the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY / AWS_PROFILE or ~/.aws/credentials)"
        )
    elif "NoCredentials" in kind or "Unable to locate credentials" in text:
        cause = "no credentials found (set AWS_ACCESS_KEY_ID / AWS_PROFILE or ~/.aws/credentials)"
    elif "EndpointConnection" in kind or "ConnectTimeout" in kind or "Connector" in kind:
        cause = f"the endpoint is unreachable ({text})"
    elif isinstance(err, OSError) and err.strerror:
        cause = err.strerror
    else:
        cause = text
    return MiroError(f"cannot {doing} {url}: {cause}")


@contextlib.contextmanager
def errors(url: str | Path, doing: str = "read") -> Iterator[None]:
    """Turn any storage error inside the block into one line naming `url`."""
    try:
        yield
    except MiroError:
        raise
    except Exception as err:  # fsspec and botocore raise many kinds; all are the storage's
        raise storage_error(url, err, doing) from None


def check_reachable(url: str | Path, doing: str = "read", probe: bool = False) -> None:
    """Fail early, before anything is written: the bucket exists, the credentials work and
    the endpoint answers (a listing of the bucket's top); with `probe`, an empty object is
    written and removed under `url` too (write permission). Local paths and `pipe:` pass."""
    if not is_url(url) or scheme(url) in READ_ONLY:
        return
    fs, path = filesystem(str(url))
    bucket = _bucket(str(url))
    with errors(url, doing):
        fs.invalidate_cache()
        fs.ls(bucket, detail=False)
        if probe:
            marker = f"{path.rstrip('/')}/.miro-write-check-{os.getpid()}"
            fs.pipe_file(marker, b"")
            fs.rm(marker)


# ----------------------------------------------------------------------------
# Listing
# ----------------------------------------------------------------------------


def expand_braces(text: str) -> list[str]:
    """`x-{000..009}.tar` and `{a,b}` lists, as webdataset spells shard sets."""
    if not _BRACES.search(text):
        return [text]
    import braceexpand  # a webdataset dependency

    return list(braceexpand.braceexpand(text))


def _common_root(urls: Sequence[str]) -> str:
    """The deepest folder holding every URL."""
    folders = [u.rsplit("/", 1)[0].split("/") for u in urls]
    common: list[str] = []
    for parts in zip(*folders, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def list_files(location: str, suffix: str) -> tuple[str, list[str]]:
    """(root, files) for a folder (every `*suffix` below it), one file, a glob, or a brace
    list; file names starting with '.' (temporaries) are left out. URLs only: local paths are
    the callers' own (pathlib). A brace list is taken as written, without listing, so a
    missing member is found when it is read; `https://` and `pipe:` can only be listed so."""
    proto = scheme(location)
    expanded = expand_braces(location)
    if len(expanded) > 1 or proto in READ_ONLY:
        return _common_root(expanded), expanded
    fs, path = filesystem(location)
    with errors(location, "list"):
        fs.invalidate_cache()
        if _GLOB.search(path):
            found = fs.glob(path)
            root = path[: _GLOB.search(path).start()].rsplit("/", 1)[0]  # type: ignore[union-attr]
        elif fs.isdir(path):
            found, root = fs.find(path), path.rstrip("/")
        else:
            found, root = ([path], path.rsplit("/", 1)[0]) if fs.isfile(path) else ([], path)
        if not found:
            check_reachable(location, "list")  # a missing bucket says so, not "nothing found"
    prefix = f"{proto}://"
    files = sorted(prefix + f for f in found if f.endswith(suffix) and not name(f).startswith("."))
    return prefix + root, files


def relative(url: str, root: str) -> str:
    return url[len(root) :].lstrip("/") if url.startswith(root) else name(url)


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------

BLOCK = 8 << 20  # read-ahead of a streamed object: a few requests per shard, little memory


def open_read(location: str | Path) -> IO[bytes]:
    """A binary stream of the file (streamed: an object store is read in BLOCK ranges, a
    `pipe:` from its command's stdout). Raises MiroError naming the location."""
    proto = scheme(location)
    if not is_url(location):
        try:
            return open(local_path(location), "rb")
        except OSError as err:
            raise storage_error(location, err) from None
    if proto == "pipe":
        from webdataset.gopen import gopen_pipe

        with errors(location):
            return gopen_pipe(str(location), "rb")
    fs, path = filesystem(str(location))
    with errors(location):
        return fs.open(path, "rb", block_size=BLOCK, cache_type="readahead")


def open_seekable(location: str | Path, sequential: bool = True) -> IO[bytes]:
    """A seekable binary file (reshard's random access into source tars): an object is read
    ahead in 1 MiB blocks when `sequential` (scanning tar headers), else exactly the byte
    ranges asked for. Raises MiroError naming the location."""
    if not is_url(location):
        try:
            return open(local_path(location), "rb")
        except OSError as err:
            raise storage_error(location, err) from None
    fs, path = filesystem(str(location))
    with errors(location):
        if sequential:
            return fs.open(path, "rb", block_size=1 << 20, cache_type="readahead")
        return fs.open(path, "rb", cache_type="none")


def read_bytes(location: str | Path) -> bytes:
    with open_read(location) as f, errors(location):
        return f.read()


def read_if_exists(location: str | Path) -> bytes | None:
    """The file's bytes, or None when there is none (or it is a `pipe:`)."""
    if scheme(location) == "pipe":
        return None
    if not is_url(location):
        path = local_path(location)
        return path.read_bytes() if path.is_file() else None
    try:
        return read_bytes(location)
    except MiroError as err:
        if str(err).endswith(": not found"):
            return None
        raise


def exists(location: str | Path) -> bool:
    if not is_url(location):
        return local_path(location).exists()
    fs, path = filesystem(str(location))
    with errors(location):
        return bool(fs.exists(path))


def list_names(folder: str | Path, folders_only: bool = False) -> list[str]:
    """The names directly inside a folder (a prefix of an object store); [] when none."""
    if not is_url(folder):
        path = local_path(folder)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_dir() or not folders_only)
    fs, url_path = filesystem(str(folder))
    with errors(folder, "list"):
        fs.invalidate_cache()
        try:
            entries = fs.ls(url_path, detail=True)
        except FileNotFoundError:
            check_reachable(folder, "list")
            return []
    return sorted(name(e["name"]) for e in entries if e["type"] == "directory" or not folders_only)


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write a whole file: local ones renamed into place, objects uploaded in one PUT."""
    check_writable(location, "cannot write")
    if not is_url(location):
        with atomic_path(local_path(location)) as tmp:
            tmp.write_bytes(data)
        return
    fs, path = filesystem(str(location))
    with errors(location, "write"):
        fs.pipe_file(path, data)


def put_folder(local: Path, location: str | Path, last: str) -> None:
    """Copy a local folder's files to `location`, the file named `last` (its marker) last,
    so that a reader who sees the marker sees everything."""
    files = sorted((p for p in local.iterdir() if p.is_file()), key=lambda p: p.name == last)
    if not is_url(location):
        target = local_path(location)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, target / f.name)
        return
    check_writable(location, "cannot write")
    fs, path = filesystem(str(location))
    with errors(location, "write"):
        for f in files:
            fs.put_file(str(f), f"{path}/{f.name}")


@contextlib.contextmanager
def local_copy(folder: str | Path) -> Iterator[Path]:
    """A local folder with the files of `folder` (downloaded for a URL), removed after."""
    if not is_url(folder):
        yield local_path(folder)
        return
    fs, path = filesystem(str(folder))
    with tempfile.TemporaryDirectory(prefix="miro-", ignore_cleanup_errors=True) as tmp:
        with errors(folder):
            for f in fs.ls(path, detail=False):
                fs.get_file(f, str(Path(tmp) / name(f)))
        yield Path(tmp)


def remove(location: str | Path) -> None:
    """Remove a file or a folder with everything in it; a missing one is no error."""
    if not is_url(location):
        path = local_path(location)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return
    fs, url_path = filesystem(str(location))
    with errors(location, "remove"):
        fs.invalidate_cache()
        with contextlib.suppress(FileNotFoundError):
            fs.rm(url_path, recursive=True)
