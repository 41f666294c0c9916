"""Objects private to one Bytewax worker, kept for the worker's life.

`threading.local` does not work for this: with more than one worker, Bytewax's worker threads are threads
Python did not start, and each time one lets go of the GIL its Python thread state (and every thread-local
value with it) is discarded. The operating system's thread id is what stays the same, so that is the key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["WorkerLocal"]

T = TypeVar("T")


class WorkerLocal(Generic[T]):
    """One ``T`` per worker thread, made on the worker's first `get`."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._values: dict[int, T] = {}

    def get(self) -> T:
        ident = threading.get_ident()
        value = self._values.get(ident)
        if value is None:
            value = self._values[ident] = self._make()
        return value

    def pop(self) -> T | None:
        """Forget this worker's ``T`` (a later `get` makes a new one); returns it."""
        return self._values.pop(threading.get_ident(), None)
