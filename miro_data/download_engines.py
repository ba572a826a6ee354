"""The engines img2dataset can spread `miro data download` over, checked before anything is written.

img2dataset imports its engines quietly: without Ray its `ray` distributor does nothing and
returns (0 images, exit 0), and without pyspark (or Java) its `pyspark` one fails deep inside.
So the engine is checked here first, and one line says what to install. With `ray`, this
module connects to (or starts) the Ray cluster itself — img2dataset would start a local Ray
with every CPU on its first task and never notice an unreachable address.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from typing import Any

from miro_data.common import MiroError

log = logging.getLogger(__name__)

_INSTALL = {"ray": 'pip install "miro[ray]"', "pyspark": "pip install pyspark"}
_CONNECT_TIMEOUT_S = 5.0  # Ray itself retries an unreachable address for minutes


def require_engine(distributor: str) -> None:
    """One line naming what to install when `distributor`'s engine is missing."""
    if distributor == "multiprocessing":
        return
    try:
        importlib.import_module(distributor)
    except ImportError:
        raise MiroError(
            f"--distributor {distributor} needs {distributor}: {_INSTALL[distributor]}"
        ) from None
    if distributor == "pyspark" and not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise MiroError("--distributor pyspark needs Java: install a JDK or set JAVA_HOME")


def _host_port(address: str) -> tuple[str, int]:
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise MiroError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise MiroError(f"cannot reach Ray at {address}: {reason}") from None


def _init_ray(address: str | None, num_cpus: int) -> None:
    import ray

    if address not in (None, "auto"):
        _check_reachable(address)
    quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    try:
        if address is None:  # "local": a new Ray of our own even where RAY_ADDRESS is set
            ray.init(address="local", num_cpus=num_cpus, **quiet)
        elif address.startswith("ray://"):
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(address=address, **quiet)
    except Exception as err:  # ConnectionError, RuntimeError, …: every one means "no cluster"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MiroError(f"cannot connect to Ray at {address}: {first}") from None


@contextlib.contextmanager
def ray_cluster(address: str | None, num_cpus: int) -> Iterator[int]:
    """Ray for the block, yielding its number of alive nodes. `address` None starts a local
    Ray with `num_cpus` CPUs (img2dataset runs one shard per CPU); an already initialised
    Ray (a notebook's, a test's) is used as it is and left running."""
    import ray

    owned = not ray.is_initialized()
    if owned:
        _init_ray(address, num_cpus)
    try:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        log.info("Ray: %d node(s), %s CPUs", nodes, ray.cluster_resources().get("CPU", 0))
        yield nodes
    finally:
        if owned:
            ray.shutdown()
