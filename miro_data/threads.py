"""Run an iterator in a background thread so that producing items overlaps consuming them."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


@contextlib.contextmanager
def background(items: Iterable[T], depth: int = 2) -> Iterator[Iterator[T]]:
    """Yield an iterator over `items`, produced up to `depth` ahead by a daemon thread.

    An exception in the producer is re-raised in the consumer; leaving the block early stops
    the producer at its next item.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer
            put(err)

    thread = threading.Thread(target=produce, name="miro-prefetch", daemon=True)
    thread.start()

    def consume() -> Iterator[T]:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    try:
        yield consume()
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        thread.join(timeout=5)
