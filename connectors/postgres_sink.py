"""The Bytewax sink that loads standardized records into Postgres: one table per topic, batches of at most 1000.

A `FixedPartitionedSink` whose partitions are the flow's Kafka input partitions (``<partition>-<topic>``, as
Bytewax's KafkaSource names them), with items keyed by `partition_key`. Both sides get the same primary worker
for each name, so every record is written by the worker that read it, and one instrument's records (one key,
one partition) are written in order.

Write-behind: ``write_batch`` turns the records into rows, hands each batch of rows to the worker's writer
thread and returns while the last batches are still being written; the next batch is prepared meanwhile
(`connectors.postgres_pipeline`). Bytewax calls ``snapshot`` on every partition written in an epoch when the
epoch closes, before the epoch (and the Kafka offsets it read) can be committed; ``snapshot`` waits until the
batches in flight have landed and the dead letters are acknowledged by Kafka. So a crash re-delivers at most the
records after the last committed epoch, and the tables' keys make those re-inserts no-ops: exactly-once rows
with ``-r/-s/-b``. While the database is away the batch is held and retried with backoff
(`connectors.postgres_retry`), and the flow waits at its next batch; a row the database rejects goes to
``dead_letter`` with the database's reason and the rest of its batch is loaded (`connectors.postgres_writer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from bytewax.outputs import StatefulSinkPartition
from prometheus_client import Counter
from sqlalchemy.pool import PoolProxiedConnection

from connectors.input_aligned import InputAlignedSink, SharedPerWorker
from connectors.kafka import DeadLetterProducer, SourceRecord
from connectors.postgres_config import PostgresLoaderSettings
from connectors.postgres_pipeline import WriteBehind, rows_offering_gil
from connectors.postgres_retry import Backoff, retry_transient
from connectors.postgres_tables import create_engine, define_tables
from connectors.postgres_writer import Batch, Loaded, TableWriter, failure_kind, load
from operators.dead_letter import SourceRef, dead_letter
from operators.table_rows import Row, RowEncoder
from schemas.serde import codec_for

__all__ = ["ERROR_TYPE", "PostgresSink", "partition_key"]

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


def partition_key(record: SourceRecord) -> tuple[str, SourceRecord]:
    """``(part, record)``: the record keyed by the name of the sink partition that writes it, its input's."""
    return f"{record.partition}-{record.topic}", record


class PostgresSink(InputAlignedSink[SourceRecord]):
    """Writes `SourceRecord` items, keyed by `partition_key`, to their topic's table."""

    def __init__(self, config: PostgresLoaderSettings, topics: list[str], flow: str) -> None:
        super().__init__(config, topics)
        self._loaders = SharedPerWorker(partial(_WorkerLoader, config, topics, flow), _WorkerLoader.dispose)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _PostgresPartition:
        return _PostgresPartition(self._loaders, for_part.split("-", 1)[1])


class _PostgresPartition(StatefulSinkPartition[SourceRecord, None]):
    """One input partition's records; the work is its worker's `_WorkerLoader`'s."""

    def __init__(self, loaders: SharedPerWorker[_WorkerLoader], topic: str) -> None:
        self._loaders = loaders
        self._loader = loaders.acquire()
        self._topic = topic

    def write_batch(self, values: list[SourceRecord]) -> None:
        self._loader.load(self._topic, values)

    def snapshot(self) -> None:
        """Called at the close of each epoch this partition wrote in: everything written lands first."""
        self._loader.settle()

    def close(self) -> None:
        self._loader.settle()
        self._loaders.release()


class _WorkerLoader:
    """A worker's database engine, table writers, dead-letter producer and writer thread, shared by its parts."""

    def __init__(self, config: PostgresLoaderSettings, topics: list[str], flow: str) -> None:
        self._config = config
        self._flow = flow
        self._engine = create_engine(config)
        self._tables = define_tables(config, topics)
        self._writers: dict[str, TableWriter] = {}
        self._dead_letters: DeadLetterProducer | None = None  # made on the first dead letter
        self._batch_size = config.postgres_batch_size
        self._backoff = Backoff(config.postgres_retry_min_s, config.postgres_retry_max_s)
        self._pipeline: WriteBehind[Loaded] = WriteBehind("postgres-writer")
        self._connection: PoolProxiedConnection | None = None  # the writer thread's, between batches

    def _writer(self, topic: str) -> TableWriter:
        writer = self._writers.get(topic)
        if writer is None:
            config = self._config
            encoder = RowEncoder(self._tables[topic], config.schema_of(topic))
            writer = TableWriter(encoder, config.postgres_write_method, config.postgres_statement_timeout_s)
            self._writers[topic] = writer
        return writer

    def load(self, topic: str, records: list[SourceRecord]) -> None:
        """Hand ``records`` to the database in batches of at most the batch size, the last ones left in flight."""
        writer = self._writer(topic)
        rows, refused = rows_offering_gil(writer.encoder, records)
        if refused:
            self._reject(writer.encoder.table.name, refused)
        if not rows:
            return
        # Even batches: 1024 rows go as two of 512, not 1000 and a 24-row transaction.
        count = -(-len(rows) // self._batch_size)
        size = -(-len(rows) // count)
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            batch = _prepared(writer, chunk)
            self._pipeline.submit(
                partial(self._write, writer, batch, len(chunk)), partial(self._settle, writer, len(chunk))
            )

    def settle(self) -> None:
        """Wait until every row handed over has landed, and every dead letter is acknowledged."""
        self._pipeline.wait()
        if self._dead_letters is not None:
            self._dead_letters.flush()

    def dispose(self) -> None:
        """The worker's last partition closed: end the writer thread, let go of the database connections."""
        try:
            self._pipeline.close()
        finally:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self._engine.dispose()

    def _write(self, writer: TableWriter, batch: Sequence[Row] | Batch, rows: int) -> Loaded:
        """One batch of ``rows`` rows into its table (on the writer thread), held while the database is away."""
        holding = f"{rows} rows for table {writer.encoder.table.name}"
        return retry_transient(partial(self._load, writer, batch), self._backoff, holding, self._flow)

    def _load(self, writer: TableWriter, batch: Sequence[Row] | Batch) -> Loaded:
        """One attempt, on the writer thread's connection: kept from batch to batch (checking it out of the pool
        for each batch would cost a ping), given up after a transient error, so the retry connects afresh."""
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        try:
            return load(self._connection.dbapi_connection, writer, batch)
        except Exception as exc:
            if failure_kind(exc) == "transient":
                self._connection.invalidate()  # never hand this connection out again
                self._connection = None
            raise

    def _settle(self, writer: TableWriter, rows: int, loaded: Loaded) -> None:
        table = writer.encoder.table.name
        ROWS.labels(table, "written").inc(loaded.written)
        ROWS.labels(table, "duplicate").inc(rows - loaded.written - len(loaded.rejections))
        if loaded.rejections:
            self._reject(table, [(rejection.row.source, rejection.reason) for rejection in loaded.rejections])

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
        if self._dead_letters is None:
            self._dead_letters = DeadLetterProducer(self._config)
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


def _prepared(writer: TableWriter, rows: list[Row]) -> Sequence[Row] | Batch:
    try:
        return writer.prepare(rows)
    except ValueError:  # a row with no binary COPY form: `load` isolates it by bisection on the writer thread
        return rows
