"""Database writes on a writer thread of their own, while the flow's thread prepares the next batches.

The client-side work of a batch (records to rows, one row per key, the binary COPY encoding) and the database's
work on another take about as long each, so doing them one after the other leaves one of the two cores idle.
`WriteBehind` queues each write for one long-lived writer thread and returns at once. Up to `DEPTH` writes are
in flight, so the writer goes from one batch straight to the next one already prepared, and a batch that is
slow to prepare (book snapshots) or to write evens out against its neighbours. The writes land in the order they
were submitted. A failing write raises in the flow's thread at the next `submit` or `wait`, and the writes queued
after it are skipped, not written.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from connectors.kafka import SourceRecord
from operators.table_rows import Row, RowEncoder

__all__ = ["DEPTH", "ROWS_PER_OFFER", "WriteBehind", "rows_offering_gil"]

T = TypeVar("T")

#: Writes in flight at most: the one being written and the next one, ready.
DEPTH = 2
#: Queued after the caller has heard of a failed write: the writes queued after this one are written again.
_RESUME = "resume"
#: Queued to let the writer thread end.
_STOP = "stop"

#: Records turned into rows between two offers of the GIL to the writer thread (see `rows_offering_gil`).
ROWS_PER_OFFER = 100


def rows_offering_gil(
    encoder: RowEncoder, records: Sequence[SourceRecord]
) -> tuple[list[Row], list[tuple[SourceRecord, str]]]:
    """The rows of ``records`` (and the records that have none, with the reason), built in slices that offer the
    GIL to the writer thread in between.

    A thread waiting for the GIL gets it when the holder blocks, or else after the switch interval (5 ms). The
    writer thread needs it back after each of its database calls (begin, COPY, commit), so without these
    offers each call would wait up to 5 ms behind the preparation of the next batch.
    """
    if len(records) <= ROWS_PER_OFFER:
        return encoder.rows(records)
    rows: list[Row] = []
    refused: list[tuple[SourceRecord, str]] = []
    for start in range(0, len(records), ROWS_PER_OFFER):
        more_rows, more_refused = encoder.rows(records[start : start + ROWS_PER_OFFER])
        rows += more_rows
        refused += more_refused
        time.sleep(0)  # releases the GIL; a waiting writer thread takes its turn
    return rows, refused


class WriteBehind(Generic[T]):
    """Runs ``write`` jobs in order on one background thread, at most `DEPTH` at a time; each job's ``settle``
    runs in the caller, in the same order."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future[T], Callable[[], T]] | str] = queue.SimpleQueue()
        self._pending: deque[tuple[Future[T], Callable[[T], None]]] = deque()
        self._thread: threading.Thread | None = None

    def submit(self, write: Callable[[], T], settle: Callable[[T], None]) -> None:
        """Queue ``write`` behind the writes in flight, first settling those done and, while `DEPTH` are in
        flight, waiting for the oldest; ``settle`` gets its result later."""
        pending = self._pending
        while pending and (len(pending) >= DEPTH or pending[0][0].done()):
            self._settle_oldest()
        if self._thread is None:
            # A daemon thread: a process told to stop while the database is away (the write retrying) still
            # exits, and the server rolls back the unfinished transaction.
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        future: Future[T] = Future()
        self._jobs.put((future, write))
        pending.append((future, settle))

    def wait(self) -> None:
        """Wait for every write in flight and settle each; the first error rises here."""
        while self._pending:
            self._settle_oldest()

    def close(self) -> None:
        """Wait for the writes in flight, then let the thread end."""
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._jobs.put(_STOP)
                self._thread = None

    def _settle_oldest(self) -> None:
        future, settle = self._pending.popleft()
        try:
            result = future.result()
        except BaseException:
            self._pending.clear()  # the writes queued after it are skipped, not written
            self._jobs.put(_RESUME)  # the caller knows now: later writes go ahead
            raise
        settle(result)

    def _run(self) -> None:
        failed = False
        while True:
            job = self._jobs.get()
            if isinstance(job, str):
                if job == _STOP:
                    return
                failed = False  # _RESUME
                continue
            future, write = job
            if failed:  # nothing after a failed write may land before the flow has heard of the failure
                future.set_exception(RuntimeError("skipped: an earlier write failed"))
                continue
            try:
                future.set_result(write())
            except BaseException as exc:  # handed to the thread that settles the future, which raises it
                failed = True
                future.set_exception(exc)
