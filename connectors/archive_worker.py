"""Per-worker resources of the archive writer: the bound on open files, and the dead-letter producer.

A Bytewax worker is one thread and runs the `ArchiveLogic` of many partitions; they share one `WorkerFiles`, so
the number of files held open in memory (and so the memory) is bounded per worker whatever the number of
partitions and hours in flight. Opening a file beyond the bound closes (publishes) the oldest open file of any
partition of the worker first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from connectors.config import Settings
from connectors.kafka import DeadLetterProducer
from connectors.worker_local import WorkerLocal
from operators.records import Output

__all__ = ["DeadLetters", "FileOwner", "PerWorker", "PublishedFile", "WorkerFiles"]


@dataclass(frozen=True, slots=True)
class PublishedFile:
    """What the writer emits: one file that just appeared in the archive."""

    path: str
    records: int
    size: int
    first_offset: int
    last_offset: int


class FileOwner(Protocol):
    """Whoever holds open files: it can be asked to close one."""

    def close_file(self, directory: str) -> None: ...


class WorkerFiles:
    """The open files of one worker, oldest first, at most ``max_open``; also its published-file events."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self._open: OrderedDict[tuple[int, str], FileOwner] = OrderedDict()
        self.published: list[PublishedFile] = []

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, owner: FileOwner, directory: str) -> None:
        """Make room for one more open file by closing the oldest ones, then count it."""
        while len(self._open) >= self.max_open:
            (_, oldest_directory), oldest_owner = next(iter(self._open.items()))
            oldest_owner.close_file(oldest_directory)
        self._open[(id(owner), directory)] = owner

    def release(self, owner: FileOwner, directory: str) -> None:
        self._open.pop((id(owner), directory), None)


class DeadLetters:
    """A worker's dead-letter producer, created on the first dead letter."""

    def __init__(self, settings: Settings | None) -> None:
        self._settings = settings
        self._producer: DeadLetterProducer | None = None

    def send(self, dead: Output) -> None:
        if self._producer is None:
            if self._settings is None:
                raise RuntimeError(f"a dead letter with no Kafka to send it to: {dead[1]['reason']}")
            self._producer = DeadLetterProducer(self._settings)
        self._producer.send(dead)

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush()


class PerWorker:
    """Per-worker resources shared by every partition the worker writes: open files, dead letters."""

    def __init__(self, max_open: int, settings: Settings | None) -> None:
        self._files = WorkerLocal(partial(WorkerFiles, max_open))
        self._dead_letters = WorkerLocal(partial(DeadLetters, settings))

    def files(self) -> WorkerFiles:
        return self._files.get()

    def dead_letters(self) -> DeadLetters:
        return self._dead_letters.get()
