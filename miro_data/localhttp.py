"""A local HTTP server for a folder of files, so local corpora download the way remote ones do."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without writing a line per request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http: " + format, *args)


@contextlib.contextmanager
def serve_directory(root: str | Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 at an ephemeral port; yields the base URL ('http://…/').

    The server runs in a daemon thread and stops when the block exits, error or not.
    """
    handler = functools.partial(_QuietHandler, directory=str(Path(root).resolve()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="miro-http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    base = f"http://{host!s}:{port}/"
    log.info("serving %s at %s", root, base)
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
