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
from collections.abc import Iterator

from miro_data.common import MiroError
from miro_data.raycluster import import_ray, ray_session

log = logging.getLogger(__name__)

_INSTALL = {"pyspark": "pip install pyspark"}


def require_engine(distributor: str) -> None:
    """One line naming what to install when `distributor`'s engine is missing."""
    if distributor == "multiprocessing":
        return
    if distributor == "ray":
        import_ray("--distributor ray")
        return
    try:
        importlib.import_module(distributor)
    except ImportError:
        raise MiroError(
            f"--distributor {distributor} needs {distributor}: {_INSTALL[distributor]}"
        ) from None
    if distributor == "pyspark" and not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise MiroError("--distributor pyspark needs Java: install a JDK or set JAVA_HOME")


@contextlib.contextmanager
def ray_cluster(address: str | None, num_cpus: int) -> Iterator[int]:
    """Ray for the block (miro_data.raycluster), yielding its number of alive nodes. `address`
    None starts a local Ray with `num_cpus` CPUs (img2dataset runs one shard per CPU)."""
    with ray_session("--distributor ray", address, num_cpus) as ray:
        yield sum(1 for node in ray.nodes() if node.get("Alive"))
