"""A local Hugging Face Hub endpoint for tests: a threaded HTTP server on 127.0.0.1 serving
files in the Hub's layout — `/{repo}/resolve/{revision}/{file}` (HEAD and GET, with the
X-Repo-Commit, ETag and Content-Length headers huggingface_hub checks; `X-Error-Code` on a
404 tells a missing repo from a missing file) and the `/api/models/{repo}/revision/{rev}` and
`/api/models/{repo}/tree/{rev}` listings `snapshot_download` reads. Point `HF_ENDPOINT` at
`hub.url`; `serving()` runs one (a test module's fixture)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Hub:
    """Repos served by the local endpoint: repo id → {path in repo: bytes}."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.url = ""

    def add(self, repo: str, folder: Path, prefix: str = "") -> None:
        files = self.repos.setdefault(repo, {})
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                files[prefix + path.relative_to(folder).as_posix()] = path.read_bytes()

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def _json(self, obj) -> None:
            self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        def _route(self) -> None:
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            api = parts[:2] == ["api", "models"]
            if api:
                parts = parts[2:]
            repo = "/".join(parts[:2])
            if repo not in hub.repos:
                return self._send(404, b"", {"X-Error-Code": "RepoNotFound"})
            files, commit = hub.repos[repo], hub.commit(repo)
            if api and parts[2] == "revision":
                siblings = [{"rfilename": name} for name in files]
                return self._json({"id": repo, "sha": commit, "siblings": siblings})
            if api and parts[2] == "tree":
                return self._json([{"type": "file", "path": name, "size": len(data),
                                    "oid": hashlib.sha1(data).hexdigest()}
                                   for name, data in files.items()])  # fmt: skip
            name = "/".join(parts[4:])  # {repo}/resolve/{revision}/{file}
            if parts[2] != "resolve" or name not in files:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound",
                                             "X-Repo-Commit": commit})  # fmt: skip
            data = files[name]
            etag = hashlib.sha256(data).hexdigest()  # as the Hub gives LFS files
            self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'})

        do_GET = do_HEAD = _route

    return Handler


@contextlib.contextmanager
def serving() -> Iterator[Hub]:
    """A server on a free port for the block's duration (a test module's `hub` fixture)."""
    state = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
