"""Ray for the stages that run on it (annotate, reshard, download): one way to start or join it.

Ray is imported only here, lazily (an optional extra: missing, it is one line saying how to
install it). It is started or joined before a stage writes anything: an address where no gRPC
server answers — a closed port, or one another server holds — is one line at once (Ray's own
connect retries for minutes, printing as it goes). Without
an address a Ray of the stage's own starts on this machine (`address="local"`), never a cluster
that `ray start` or RAY_ADDRESS happen to name; a Ray the caller already runs (a notebook's, a
test's cluster) is used as it is and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from typing import Any

from miro_data.common import MiroError

log = logging.getLogger(__name__)

INSTALL = 'pip install "miro[ray]"'
CONNECT_TIMEOUT = 5.0  # seconds for HOST:PORT to accept a TCP connection
ADDRESS = re.compile(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):[0-9]{1,5}")


def import_ray(what: str) -> Any:
    """`ray` and `ray.data`, or one line: `what` (e.g. "--engine ray") needs Ray."""
    try:
        import ray
        import ray.data  # the engines build Ray Data pipelines
    except ImportError:
        raise MiroError(f"{what} needs Ray: {INSTALL}") from None
    return ray


def check_ray_address(address: object) -> None:
    """auto, HOST:PORT or ray://HOST:PORT (checked when a config is built; whether Ray answers
    there is checked on connecting)."""
    ok = isinstance(address, str) and (address == "auto" or ADDRESS.fullmatch(address) is not None)
    if not ok:
        raise MiroError(f"--ray-address {address!r}: use auto, HOST:PORT or ray://HOST:PORT")


# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113, 3.4)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_grpc(sock: socket.socket) -> bool:
    """Whether the server on `sock` speaks HTTP/2, as Ray's GCS and Ray Client (gRPC) do: its
    first frame must be SETTINGS (type 4, stream 0). OSError if it does not answer in time."""
    sock.sendall(HTTP2_PREFACE)
    header = b""
    while len(header) < 9:
        chunk = sock.recv(9 - len(header))
        if not chunk:  # closed on us: an HTTP/1 server, or one that wants other bytes
            return False
        header += chunk
    return header[3] == 4 and int.from_bytes(header[5:9], "big") & 0x7FFFFFFF == 0


def check_address(address: str) -> None:
    """A valid address where a gRPC server answers (Ray's GCS at HOST:PORT, Ray Client at
    ray://HOST:PORT): a closed port, or a port some other server holds, is one line at once."""
    check_ray_address(address)
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection(
            (host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT
        ) as sock:
            answers_grpc = _speaks_grpc(sock)
    except OSError as err:
        cause = err.strerror or str(err) or type(err).__name__
        raise MiroError(f"cannot reach Ray at --ray-address {address}: {cause}") from None
    if not answers_grpc:  # Ray would retry its handshake there for minutes
        raise MiroError(f"--ray-address {address} answers, but not as Ray (no gRPC server there)")
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401 — Ray Client's transport
        except ImportError:
            raise MiroError(
                f"--ray-address {address}: Ray Client needs pip install 'ray[client]'"
            ) from None


@contextlib.contextmanager
def _stderr_muted() -> Iterator[None]:
    """File descriptor 2 to /dev/null: Ray's C++ core prints as it starts, below Python."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet(ray: Any) -> None:
    """Ray's and Ray Data's progress and info lines would drown the CLI's own output."""
    for name in ("ray", "ray.data", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _init(ray: Any, address: str | None, num_cpus: int | None) -> None:
    if address is not None:
        check_address(address)
    # Ray's C++ core logs to stderr; its errors reach us as exceptions, its logs stay in the
    # session folder.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        kwargs |= {"include_dashboard": False, "num_cpus": num_cpus}
    try:
        with _stderr_muted():
            ray.init(address=address or "local", **kwargs)
    except Exception as err:  # ConnectionError, RuntimeError, …: each means "no Ray here"
        what = "start a local Ray" if address is None else f"join Ray at --ray-address {address}"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MiroError(f"cannot {what}: {first}") from None


@contextlib.contextmanager
def ray_session(what: str, address: str | None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for the block: joined at `address`, else a new local one (`num_cpus`: all when
    None), shut down after if started here; a Ray already running in this process is used."""
    ray = import_ray(what)
    owned = not ray.is_initialized()
    if owned:
        _init(ray, address, num_cpus)
    try:
        _quiet(ray)
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        log.info("Ray: %d node(s), %s CPUs", nodes, ray.cluster_resources().get("CPU", 0))
        yield ray
    finally:
        if owned:
            ray.shutdown()
