"""The loader's pipeline against a real PostgreSQL: batches land in order, one at a time, and nothing is lost.

`PipelinedLoader` prepares a batch while the database writes the previous one on a thread of its own. These
tests wrap the real `load` to note every batch it is handed and how many ran at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from connectors.kafka import SourceRecord
from connectors.postgres_config import PostgresLoaderSettings
from connectors.postgres_pipeline import PipelinedLoader
from connectors.postgres_tables import create_engine, define_tables, prepare_tables
from connectors.postgres_writer import Batch, Loaded, TableWriter, load
from embedded.postgres import EmbeddedPostgres
from operators.table_rows import Row, RowEncoder
from tests.integration.load_postgres_support import create_database, table_rows
from tests.support import capture, envelopes, normalize

pytestmark = pytest.mark.integration

TOPICS = ("trades", "lob")
BATCH_ROWS = 250
#: Offsets of the trades that cannot land: one has no row (its time is past year 9999), one is refused by the
#: server (a NUL character in text).
NO_ROW, REFUSED = 10, 400


@pytest.fixture(scope="module")
def database(postgres: EmbeddedPostgres) -> Iterator[tuple[str, dict[str, sa.Table]]]:
    dsn = create_database(postgres, "load_pipeline")
    config = PostgresLoaderSettings(database_url=dsn)
    engine = create_engine(config)
    tables = define_tables(config, list(TOPICS))
    prepare_tables(engine, tables)
    engine.dispose()
    yield dsn, tables


@pytest.fixture(scope="module")
def records() -> dict[str, list[SourceRecord]]:
    """The Kraken Futures capture's trades (two of them spoiled) and its first 1,200 book records."""
    outputs = normalize(envelopes(capture("KRAKEN_FUTURES")))
    values = {topic: [rec for _, t, rec in outputs if t == topic] for topic in TOPICS}
    values["lob"] = values["lob"][:1200]
    trades = values["trades"]
    trades[NO_ROW] = {**trades[NO_ROW], "event_timestamp": 10**18}
    trades[REFUSED] = {**trades[REFUSED], "trade_id": "nul\x00inside"}
    return {topic: [SourceRecord(topic, 0, i, "k", v) for i, v in enumerate(vals)] for topic, vals in values.items()}


class _Recorder:
    """The real `load` on one connection, noting each batch (table, rows, first offset) and the most at once."""

    def __init__(self, dsn: str, fail_at: int | None = None) -> None:
        self.connection = psycopg2.connect(dsn)
        self.fail_at = fail_at
        self.batches: list[tuple[str, int, int]] = []
        self.most_at_once = 0
        self._running = 0
        self._lock = threading.Lock()

    def __call__(self, writer: TableWriter, batch: Sequence[Row] | Batch) -> Loaded:
        rows = batch.rows if isinstance(batch, Batch) else batch
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        try:
            self.batches.append((writer.encoder.table.name, len(rows), rows[0].source.offset))
            if len(self.batches) == self.fail_at:
                raise RuntimeError("the database's disk is on fire")
            time.sleep(0.005)  # long enough that the next batch is prepared meanwhile
            return load(self.connection, writer, batch)
        finally:
            with self._lock:
                self._running -= 1


def _truncate(dsn: str, tables: dict[str, sa.Table]) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(table.name for table in tables.values())}")
    conn.close()


def _stored_offsets(dsn: str, table: str) -> list[int]:
    return sorted(row["kafka_offset"] for row in table_rows(dsn, table))


def _run(recorder: _Recorder, tables: dict[str, sa.Table], records: dict[str, list[SourceRecord]]) -> dict[str, Any]:
    loader = PipelinedLoader(recorder, BATCH_ROWS)
    try:
        writers = {topic: TableWriter(RowEncoder(tables[topic], topic), "copy") for topic in TOPICS}
        return dict(loader.load({topic: (writers[topic], records[topic]) for topic in TOPICS}))
    finally:
        recorder.connection.close()


def test_batches_land_in_order_one_at_a_time_and_every_refusal_is_returned_in_record_order(
    database: tuple[str, dict[str, sa.Table]], records: dict[str, list[SourceRecord]]
) -> None:
    dsn, tables = database
    _truncate(dsn, tables)
    recorder = _Recorder(dsn)
    outcomes = _run(recorder, tables, records)

    trades, lob = records["trades"], records["lob"]
    assert recorder.most_at_once == 1
    # Record order: every trades batch, then every lob batch, each at most BATCH_ROWS rows, none skipped.
    names = [table for table, _, _ in recorder.batches]
    assert names == sorted(names, key=[tables[topic].name for topic in TOPICS].index)
    assert all(rows <= BATCH_ROWS for _, rows, _ in recorder.batches)
    firsts = [first for table, _, first in recorder.batches if table == tables["trades"].name]
    assert firsts == list(range(0, len(trades), BATCH_ROWS))
    assert sum(rows for table, rows, _ in recorder.batches if table == tables["lob"].name) == len(lob)

    reasons = [(record.offset, reason) for record, reason in outcomes["trades"].refused]
    assert [offset for offset, _ in reasons] == [NO_ROW, REFUSED]
    assert "outside the representable time range" in reasons[0][1]
    assert "0x00" in reasons[1][1]
    assert outcomes["trades"].written == len(trades) - 2 and outcomes["trades"].duplicate == 0
    assert outcomes["lob"].written == len(lob) and not outcomes["lob"].refused
    assert _stored_offsets(dsn, tables["trades"].name) == [i for i in range(len(trades)) if i not in (NO_ROW, REFUSED)]
    assert _stored_offsets(dsn, tables["lob"].name) == list(range(len(lob)))

    again = _run(_Recorder(dsn), tables, records)  # a replay: every key is there, the same two refusals
    assert again["trades"].written == 0 and again["trades"].duplicate == len(trades) - 2
    assert [record.offset for record, _ in again["trades"].refused] == [NO_ROW, REFUSED]
    assert again["lob"].written == 0 and again["lob"].duplicate == len(lob)


def test_a_failing_batch_stops_the_load_after_the_batches_before_it_landed(
    database: tuple[str, dict[str, sa.Table]], records: dict[str, list[SourceRecord]]
) -> None:
    dsn, tables = database
    _truncate(dsn, tables)
    recorder = _Recorder(dsn, fail_at=3)
    with pytest.raises(RuntimeError, match="disk is on fire"):
        _run(recorder, tables, records)
    assert len(recorder.batches) == 3  # nothing after the failing batch was handed to the database
    landed = [i for i in range(2 * BATCH_ROWS) if i not in (NO_ROW, REFUSED)]
    assert _stored_offsets(dsn, tables["trades"].name) == landed
    assert _stored_offsets(dsn, tables["lob"].name) == []
