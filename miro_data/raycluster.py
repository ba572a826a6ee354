"""Ray for the stages that run on it (annotate, reshard, download): one way to start or join it.

Ray is imported only here, lazily (an optional extra: missing, it is one line saying how to
install it). It is started or joined before a stage writes anything: an address that does not
answer is one line at once (Ray's own connect retries for minutes, printing as it goes). Without
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


def check_address(address: str) -> None:
    """A valid address whose HOST:PORT answers a TCP connection (Ray Client's transport there)."""
    check_ray_address(address)
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        cause = err.strerror or str(err) or type(err).__name__
        raise MiroError(f"cannot reach Ray at --ray-address {address}: {cause}") from None
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
