"""Sinks partitioned like the flow's Kafka input, and the per-worker resources their partitions share.

Bytewax routes a `FixedPartitionedSink`'s items to the primary worker of the partition ``part_fn`` names, and
assigns primaries deterministically from the partition names and the workers listing them. A sink listing the
partitions of the flow's KafkaSource (``<partition>-<topic>``) therefore gets the source's assignment: an item
sent to the partition it was read from stays on its worker. And unlike a `DynamicSink`, such a sink hears when
an epoch closes (``snapshot``), before the epoch's input offsets can commit: the moment to wait for writes that
were handed on without waiting.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.config import Settings
from connectors.kafka import raw_source
from connectors.worker_local import WorkerLocal

__all__ = ["InputAlignedSink", "SharedPerWorker"]

X = TypeVar("X")
T = TypeVar("T")


class InputAlignedSink(FixedPartitionedSink[X, None]):
    """A stateless sink whose partitions are the Kafka input partitions of ``topics``; subclasses route items."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self._settings = settings
        self._topics = topics
        self._index: dict[str, int] = {}

    def list_parts(self) -> list[str]:
        """The partitions of the topics, named as the flow's KafkaSource names its own."""
        parts = raw_source(self._settings, self._topics).list_parts()
        # Bytewax indexes part_fn's value into the sorted set of every worker's parts.
        self._index = {part: index for index, part in enumerate(sorted(parts))}
        return parts

    def part_fn(self, item_key: str) -> int:
        """Items are keyed by the name of their partition; Bytewax's own hash of any other key."""
        index = self._index.get(item_key)
        return super().part_fn(item_key) if index is None else index

    @abstractmethod
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSinkPartition[X, None]: ...


class _Held(Generic[T]):
    def __init__(self, resource: T) -> None:
        self.resource = resource
        self.users = 0


class SharedPerWorker(Generic[T]):
    """One ``T`` per Bytewax worker, shared by the sink partitions it builds and closed with the last of them.

    Bytewax builds, runs and closes a worker's partitions on the worker's own thread.
    """

    def __init__(self, make: Callable[[], T], close: Callable[[T], None]) -> None:
        self._held = WorkerLocal(lambda: _Held(make()))
        self._close = close

    def acquire(self) -> T:
        """This worker's ``T`` (made on first use), counted as held by one more partition."""
        held = self._held.get()
        held.users += 1
        return held.resource

    def release(self) -> None:
        """One partition is done with this worker's ``T``; the last one closes it."""
        held = self._held.get()
        held.users -= 1
        if held.users <= 0:
            self._held.pop()
            self._close(held.resource)
