"""One database write in flight on a thread of its own, while the flow's thread prepares the next.

The client-side work of a batch (records to rows, one row per key, the binary COPY encoding) and the database's
work on the previous batch take about as long each, so doing them one after the other leaves one of the two
cores idle. `WriteBehind` runs each write on a writer thread and returns at once; the next `submit` (or `wait`)
first waits for it. At most one write is in flight, so writes land in the order they were submitted, and a
failing write raises in the flow's thread at the next `submit` or `wait`, before anything after it is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from connectors.kafka import SourceRecord
from operators.table_rows import Row, RowEncoder

__all__ = ["ROWS_PER_OFFER", "WriteBehind", "rows_offering_gil"]

T = TypeVar("T")

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
    """Runs ``write`` jobs one at a time on a background thread; each job's ``settle`` runs in the caller."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._in_flight: tuple[Future[T], Callable[[T], None]] | None = None

    def submit(self, write: Callable[[], T], settle: Callable[[T], None]) -> None:
        """Wait for the write in flight (settling it), then start ``write``; ``settle`` gets its result later."""
        self.wait()
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(write())
            except BaseException as exc:  # handed to the thread that waits on the future, which raises it
                future.set_exception(exc)

        # A daemon thread: a process told to stop while the database is away (the write retrying) still exits,
        # and the server rolls back the unfinished transaction. One thread per write costs about 0.1 ms.
        threading.Thread(target=run, name=self._name, daemon=True).start()
        self._in_flight = (future, settle)

    def wait(self) -> None:
        """Wait for the write in flight, if any, and settle it; its error, if it failed, rises here."""
        if self._in_flight is None:
            return
        (future, settle), self._in_flight = self._in_flight, None
        settle(future.result())
