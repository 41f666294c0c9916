"""Loading a write batch's records table by table, preparing the next database batch while the last one is written.

The client-side work of a batch (records to rows, one row per key, the binary COPY encoding) and the database's
work on the previous batch take about as long each, so doing them one after the other leaves one of the two
cores idle. `PipelinedLoader` hands each prepared batch to a writer thread and prepares the next while the
database writes it. At most one batch is in flight, so batches land in order, a failing batch stops everything
after it exactly as before, and `PipelinedLoader.load` returns only when every batch it was given has landed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from connectors.kafka import SourceRecord
from connectors.postgres_writer import Batch, Loaded, TableWriter
from operators.table_rows import Row, RowEncoder

__all__ = ["PipelinedLoader", "TableOutcome", "WriteBatch"]

#: Records turned into rows between two offers of the GIL to the writer thread (see `_rows`).
ROWS_PER_OFFER = 100
#: Writes one batch into its table (bisecting out rejected rows), waiting out transient errors.
WriteBatch = Callable[[TableWriter, Sequence[Row] | Batch], Loaded]


def _rows(encoder: RowEncoder, records: Sequence[SourceRecord]) -> tuple[list[Row], list[tuple[SourceRecord, str]]]:
    """The rows of ``records``, built in slices that offer the GIL to the writer thread in between.

    A thread waiting for the GIL gets it when the holder blocks, or else after the switch interval (5 ms). The
    writer thread needs it back after each of its database calls (begin, COPY, commit), so without these
    offers each call would wait up to 5 ms behind the preparation of the next batch.
    """
    rows: list[Row] = []
    refused: list[tuple[SourceRecord, str]] = []
    for start in range(0, len(records), ROWS_PER_OFFER):
        more_rows, more_refused = encoder.rows(records[start : start + ROWS_PER_OFFER])
        rows += more_rows
        refused += more_refused
        time.sleep(0)  # releases the GIL; a waiting writer thread takes its turn
    return rows, refused


@dataclass
class TableOutcome:
    """What loading one table's records did: rows written, rows whose key was already stored, and the records
    refused (by the row encoder or the database) with the reason, in record order per batch."""

    written: int = 0
    duplicate: int = 0
    refused: list[tuple[SourceRecord, str]] = field(default_factory=list)


@dataclass
class _InFlight:
    future: Future[Loaded]
    rows: int
    outcome: TableOutcome
    #: The batch's own refusals: its rows refused by the encoder, then those the database refuses.
    refused: list[tuple[SourceRecord, str]]


class PipelinedLoader:
    """Loads records in batches of at most ``batch_rows`` rows, one batch in flight on a background thread."""

    def __init__(self, write: WriteBatch, batch_rows: int) -> None:
        self._write = write
        self._batch_rows = batch_rows

    def load(self, work: Mapping[str, tuple[TableWriter, Sequence[SourceRecord]]]) -> dict[str, TableOutcome]:
        """Load the records of each topic with its table's writer; the outcome per topic.

        Errors from the database propagate once the batches before the failing one have landed.
        """
        outcomes: dict[str, TableOutcome] = {}
        refusals: dict[str, list[list[tuple[SourceRecord, str]]]] = {}
        in_flight: _InFlight | None = None
        try:
            for topic, (writer, records) in work.items():
                outcome = outcomes[topic] = TableOutcome()
                batches = refusals[topic] = []
                for start in range(0, len(records), self._batch_rows):
                    rows, refused = _rows(writer.encoder, records[start : start + self._batch_rows])
                    batches.append(refused)
                    if not rows:
                        continue
                    prepared = self._prepare(writer, rows)
                    if in_flight is not None:
                        self._settle(in_flight)
                    in_flight = _InFlight(self._start(writer, prepared), len(rows), outcome, refused)
            if in_flight is not None:
                waiting, in_flight = in_flight, None
                self._settle(waiting)
        except Exception:
            # Preparing a batch failed: the batch in flight lands before the error rises. (An interrupt, a
            # BaseException, rises at once: the process is stopping, and the write may be waiting for a database
            # that is away.)
            if in_flight is not None:
                in_flight.future.exception()
            raise
        for topic, outcome in outcomes.items():
            outcome.refused = [item for batch in refusals[topic] for item in batch]
        return outcomes

    @staticmethod
    def _prepare(writer: TableWriter, rows: Sequence[Row]) -> Sequence[Row] | Batch:
        try:
            return writer.prepare(rows)
        except ValueError:  # a row with no binary COPY form: `load` isolates it by bisection
            return rows

    @staticmethod
    def _settle(in_flight: _InFlight) -> None:
        loaded = in_flight.future.result()
        in_flight.outcome.written += loaded.written
        in_flight.outcome.duplicate += in_flight.rows - loaded.written - len(loaded.rejections)
        in_flight.refused.extend((rejection.row.source, rejection.reason) for rejection in loaded.rejections)

    def _start(self, writer: TableWriter, batch: Sequence[Row] | Batch) -> Future[Loaded]:
        """Write ``batch`` on a thread of its own. A daemon thread: a process told to stop while the database
        is away (the write retrying) still exits, and the server rolls back the unfinished transaction."""
        future: Future[Loaded] = Future()

        def write() -> None:
            try:
                future.set_result(self._write(writer, batch))
            except BaseException as exc:  # handed to the thread waiting on the future, which raises it
                future.set_exception(exc)

        threading.Thread(target=write, name="postgres-writer", daemon=True).start()
        return future
