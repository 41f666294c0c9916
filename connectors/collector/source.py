"""Venue connections as a Bytewax input: one partition per logical connection.

`VenueSource` is a `FixedPartitionedSource` whose partitions are the planned connections (ids such as
``binance.ws.0`` or ``bybit.linear.0``), so a cluster (``-w``, ``-i``/``-a``) spreads the connections over workers
and processes, each connection owned by exactly one worker. A partition runs its connection in a background
thread with its own asyncio loop (websockets and httpx2 are asyncio libraries) and hands envelopes (and dead
letters for frames its framer failed on) over through a queue, in the order they were produced; the worker
drains the queue in `next_batch` without blocking.

Nothing is resumed: the partition snapshot is None, and a restarted collector opens fresh connections, whose
venue snapshots (or REST snapshots) rebuild the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx2
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.collector.connection import Collected, ConnectionOptions, ConnectionRunner
from connectors.collector.messages import count_envelopes
from connectors.collector.plan import ConnectionPlan, VenuePlan

__all__ = ["VenueSource"]

LOG = logging.getLogger(__name__)
#: How soon an idle partition is polled again.
IDLE_POLL = timedelta(milliseconds=10)


class _ConnectionPartition(StatefulSourcePartition[Collected, None]):
    """One logical connection, run in its own thread."""

    def __init__(
        self, venue: VenuePlan, connection: ConnectionPlan, options: ConnectionOptions, batch_size: int
    ) -> None:
        self._conn_id = connection.conn_id
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[Sequence[Collected]] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._idle = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(venue, connection, options, started),
            name=f"collector:{connection.conn_id}",
            daemon=True,
        )
        self._thread.start()
        started.wait()

    def _emit(self, items: Sequence[Collected]) -> None:
        if items:
            self._queue.put(items)

    def _run(
        self, venue: VenuePlan, connection: ConnectionPlan, options: ConnectionOptions, started: threading.Event
    ) -> None:
        try:
            asyncio.run(self._main(venue, connection, options, started))
        except BaseException as exc:  # reported by next_batch, so the flow fails loudly
            LOG.exception("%s: connection task failed", self._conn_id)
            self._failure = exc
        finally:
            started.set()

    async def _main(
        self, venue: VenuePlan, connection: ConnectionPlan, options: ConnectionOptions, started: threading.Event
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        started.set()
        framer, envelopes = venue.framer()
        self._emit(envelopes)
        timeout = httpx2.Timeout(options.open_timeout_s)
        async with httpx2.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            runner = ConnectionRunner(venue, connection, framer, self._emit, options, client)
            await runner.run(self._stop)

    def next_batch(self) -> list[Collected]:
        if self._failure is not None:
            raise RuntimeError(f"collector connection {self._conn_id} failed") from self._failure
        batch: list[Collected] = []
        while len(batch) < self._batch_size:
            try:
                batch.extend(self._queue.get_nowait())
            except queue.Empty:
                break
        self._idle = not batch
        count_envelopes(batch)
        return batch

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + IDLE_POLL if self._idle else None

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)


class VenueSource(FixedPartitionedSource[Collected, None]):
    """Raw envelopes (and dead letters) from venue websockets; one partition per planned connection."""

    def __init__(self, plans: list[VenuePlan], options: ConnectionOptions, batch_size: int = 1000) -> None:
        self._connections = {conn.conn_id: (plan, conn) for plan in plans for conn in plan.connections}
        if not self._connections:
            raise ValueError("nothing to collect: the configuration plans no connection")
        self._options = options
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self._connections)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ConnectionPartition:
        venue, connection = self._connections[for_part]
        return _ConnectionPartition(venue, connection, self._options, self._batch_size)
