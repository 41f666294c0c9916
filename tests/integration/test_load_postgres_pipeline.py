"""The loader's write-behind against a real PostgreSQL, driven the way Bytewax drives a partitioned sink.

`write_batch` hands each batch to the worker's writer thread and returns while the last one is still being
written; `snapshot`, which Bytewax calls when an epoch closes and before it commits the epoch, waits until it
has landed. These tests wrap the real `load` to note every batch and hold one back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

import connectors.postgres_sink as postgres_sink
from connectors.kafka import SourceRecord
from connectors.postgres_config import PostgresLoaderSettings
from connectors.postgres_tables import create_engine, define_tables, prepare_tables
from connectors.postgres_writer import Batch, Loaded, TableWriter, load
from embedded.postgres import EmbeddedPostgres
from operators.table_rows import Row
from tests.integration.load_postgres_support import create_database, table_rows
from tests.support import capture, envelopes, normalize

pytestmark = pytest.mark.integration

TOPIC = "trades"
BATCH_ROWS = 250


@pytest.fixture(scope="module")
def config(postgres: EmbeddedPostgres) -> Iterator[PostgresLoaderSettings]:
    config = PostgresLoaderSettings(
        database_url=create_database(postgres, "load_pipeline"), postgres_batch_size=BATCH_ROWS
    )
    engine = create_engine(config)
    prepare_tables(engine, define_tables(config, [TOPIC]))
    engine.dispose()
    yield config


@pytest.fixture(scope="module")
def records() -> list[SourceRecord]:
    """The Kraken Futures capture's trades, as partition 0 of the topic."""
    trades = [rec for _, topic, rec in normalize(envelopes(capture("KRAKEN_FUTURES"))) if topic == TOPIC]
    assert len(trades) > 3 * BATCH_ROWS
    return [SourceRecord(TOPIC, 0, offset, "k", value) for offset, value in enumerate(trades)]


class _Recorder:
    """The real `load`, noting each batch's size and first offset, and the most batches written at once."""

    def __init__(self, hold_at: int | None = None, fail_at: int | None = None) -> None:
        self.batches: list[tuple[int, int]] = []
        self.most_at_once = 0
        self.holding = threading.Event()
        self.release = threading.Event()
        self._hold_at = hold_at
        self._fail_at = fail_at
        self._running = 0
        self._lock = threading.Lock()

    def __call__(self, connection: Any, writer: TableWriter, batch: Sequence[Row] | Batch) -> Loaded:
        rows = batch.rows if isinstance(batch, Batch) else batch
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            self.batches.append((len(rows), rows[0].source.offset))
            if len(self.batches) == self._fail_at:
                raise RuntimeError("the database's disk is on fire")
            if len(self.batches) == self._hold_at:
                self.holding.set()
                assert self.release.wait(60)
            time.sleep(0.005)  # long enough that the next batch is prepared meanwhile
            return load(connection, writer, batch)
        finally:
            with self._lock:
                self._running -= 1


def _partition(config: PostgresLoaderSettings, monkeypatch: pytest.MonkeyPatch, recorder: Callable[..., Loaded]) -> Any:
    with sa.create_engine(config.engine_url()).begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {TOPIC}"))
    monkeypatch.setattr(postgres_sink, "load", recorder)
    return postgres_sink.PostgresSink(config, [TOPIC], "load_postgres").build_part("postgres_out", f"0-{TOPIC}", None)


def _stored_offsets(config: PostgresLoaderSettings) -> list[int]:
    return sorted(row["kafka_offset"] for row in table_rows(str(config.database_url), TOPIC))


def test_write_batch_returns_with_its_last_batch_in_flight_and_the_snapshot_waits_for_it(
    config: PostgresLoaderSettings, records: list[SourceRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(hold_at=3)
    part = _partition(config, monkeypatch, recorder)
    calls = [records[:600], records[600:700]]
    part.write_batch(calls[0])  # 600 rows: three even batches of 200, the last one held back in flight
    assert recorder.holding.wait(10)
    assert recorder.batches == [(200, 0), (200, 200), (200, 400)]
    assert _stored_offsets(config) == list(range(400))

    part.write_batch(calls[1])  # queued behind the held batch: returns while that one is still being written
    assert len(recorder.batches) == 3 and not recorder.release.is_set()
    recorder.release.set()
    part.snapshot()
    assert recorder.batches[-1] == (100, 600)
    assert recorder.most_at_once == 1
    assert _stored_offsets(config) == list(range(700))
    part.close()  # the worker's last partition: its writer thread ends
    for thread in threading.enumerate():
        if thread.name == "postgres-writer":
            thread.join(10)
            assert not thread.is_alive()


def test_a_failing_batch_stops_the_load_after_the_batches_before_it_landed(
    config: PostgresLoaderSettings, records: list[SourceRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder(fail_at=2)
    part = _partition(config, monkeypatch, recorder)
    with pytest.raises(RuntimeError, match="disk is on fire"):
        part.write_batch(records[: 3 * BATCH_ROWS])  # raises here, or at the epoch's close at the latest
        part.snapshot()
    assert len(recorder.batches) == 2, "nothing after the failing batch was handed to the database"
    assert _stored_offsets(config) == list(range(BATCH_ROWS))

    part.write_batch(records[3 * BATCH_ROWS : 4 * BATCH_ROWS])  # once the flow has heard, writes go on
    part.snapshot()
    assert _stored_offsets(config) == [*range(BATCH_ROWS), *range(3 * BATCH_ROWS, 4 * BATCH_ROWS)]
    part.close()
