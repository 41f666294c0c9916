"""The Bytewax sink that loads standardized records into Postgres: one table per topic, batches of at most 1000.

A `DynamicSink`: every worker writes the records of the Kafka partitions it reads, through its own pooled
engine, so one instrument's records (one key, one partition) are always written by one worker, in order.

Delivery: ``write_batch`` returns only when every row of its items has landed or was dead-lettered (and the
dead letters acknowledged by Kafka). Bytewax commits an epoch's snapshot (the Kafka offsets) only after its
output is written, so a crash re-delivers at most the records after the last snapshot, and the tables' keys
make those re-inserts no-ops: exactly-once rows with ``-r/-s/-b``. While the database is away the batch is held
and retried with backoff (`connectors.postgres_retry`); a row the database rejects goes to ``dead_letter`` with
the database's reason and the rest of its batch is loaded (`connectors.postgres_writer.load`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import sqlalchemy as sa
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from prometheus_client import Counter

from connectors.kafka import DeadLetterProducer, SourceRecord
from connectors.postgres_config import PostgresLoaderSettings
from connectors.postgres_retry import Backoff, retry_transient
from connectors.postgres_tables import create_engine, define_tables
from connectors.postgres_writer import Loaded, TableWriter, failure_kind, load
from operators.dead_letter import SourceRef, dead_letter
from operators.table_rows import Row, RowEncoder
from schemas.serde import codec_for

__all__ = ["ERROR_TYPE", "PostgresSink"]

log = logging.getLogger(__name__)

#: ``error_type`` of the dead letters of rows the database (or the row encoder) refused.
ERROR_TYPE = "db_rejected"
STEP = "postgres_out"

ROWS = Counter(
    "marketpipe_postgres_rows_total",
    "Rows the Postgres loader handled, per table: written (inserted or updated), duplicate (key already "
    "stored), rejected (sent to dead_letter).",
    ["table", "outcome"],
)


class PostgresSink(DynamicSink[SourceRecord]):
    """Writes `SourceRecord` items to their topic's table."""

    def __init__(self, config: PostgresLoaderSettings, topics: list[str], flow: str) -> None:
        self._config = config
        self._topics = topics
        self._flow = flow

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PostgresPartition:
        config = self._config
        engine = create_engine(config)
        tables = define_tables(config, self._topics)
        writers = {
            topic: TableWriter(
                RowEncoder(table, config.schema_of(topic)),
                config.postgres_write_method,
                config.postgres_statement_timeout_s,
            )
            for topic, table in tables.items()
        }
        return _PostgresPartition(config, engine, writers, DeadLetterProducer(config), self._flow)


class _PostgresPartition(StatelessSinkPartition[SourceRecord]):
    def __init__(
        self,
        config: PostgresLoaderSettings,
        engine: sa.Engine,
        writers: dict[str, TableWriter],
        dead_letters: DeadLetterProducer,
        flow: str,
    ) -> None:
        self._config = config
        self._engine = engine
        self._writers = writers
        self._dead_letters = dead_letters
        self._flow = flow
        self._batch_size = config.postgres_batch_size
        self._backoff = Backoff(config.postgres_retry_min_s, config.postgres_retry_max_s)

    def write_batch(self, items: list[SourceRecord]) -> None:
        by_topic: dict[str, list[SourceRecord]] = {}
        for item in items:
            by_topic.setdefault(item.topic, []).append(item)
        for topic, records in by_topic.items():
            writer = self._writers[topic]
            table = writer.encoder.table.name
            rows, refused = writer.encoder.rows(records)
            for start in range(0, len(rows), self._batch_size):
                chunk = rows[start : start + self._batch_size]
                loaded = retry_transient(
                    partial(self._load, writer, chunk),
                    self._backoff,
                    f"{len(chunk)} rows for table {table}",
                    self._flow,
                )
                refused.extend((rejection.row.source, rejection.reason) for rejection in loaded.rejections)
                ROWS.labels(table, "written").inc(loaded.written)
                ROWS.labels(table, "duplicate").inc(len(chunk) - loaded.written - len(loaded.rejections))
            if refused:
                self._reject(table, refused)
        self._dead_letters.flush()

    def _load(self, writer: TableWriter, rows: list[Row]) -> Loaded:
        connection = self._engine.raw_connection()
        try:
            loaded = load(connection.dbapi_connection, writer, rows)
        except Exception as exc:
            if failure_kind(exc) == "transient":
                connection.invalidate()  # never hand this connection out again
            raise
        finally:
            connection.close()
        return loaded

    def _reject(self, table: str, refused: list[tuple[SourceRecord, str]]) -> None:
        """Send refused records to dead_letter, with one log line for the lot."""
        ROWS.labels(table, "rejected").inc(len(refused))
        first, reason = refused[0]
        log.warning(
            "%d rows for table %s refused (first: %s/%d@%d: %s)",
            len(refused),
            table,
            first.topic,
            first.partition,
            first.offset,
            reason,
        )
        if first.topic == self._config.dead_letter_topic:
            # A dead letter about a dead letter would come back here forever; Kafka keeps the original.
            log.error("%d dead letters not loaded into %s; they stay in Kafka", len(refused), table)
            return
        for record, why in refused:
            self._send_dead_letter(record, why)

    def _send_dead_letter(self, record: SourceRecord, reason: str) -> None:
        schema = self._config.schema_of(record.topic)
        payload = codec_for(schema, self._config.schema_registry_url).encode(record.value)
        key = record.key.encode() if record.key is not None else None
        value: dict[str, Any] = record.value
        receipt = value.get("receipt_timestamp")
        self._dead_letters.send(
            dead_letter(
                self._flow,
                STEP,
                reason,
                ERROR_TYPE,
                SourceRef(record.topic, record.partition, record.offset, key, payload),
                payload,
                event_ts=receipt if isinstance(receipt, int) else None,
                exchange=value.get("exchange"),
                symbol=value.get("symbol"),
            ),
            key=record.key,
        )

    def close(self) -> None:
        self._dead_letters.flush()
        self._engine.dispose()
