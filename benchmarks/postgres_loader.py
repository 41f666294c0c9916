"""Postgres loader throughput per process, next to one plain COPY of the same rows into empty tables.

    python -m benchmarks.postgres_loader [--repeats N] [--quick]

Input: the standardized records of the hftbacktest Binance spot BTCUSDT stream (28,040 tickers, 9,757 trades,
3,450 book changes with their level arrays), as the sink receives them from Kafka (decoded records). Each loader
figure is the sink's own work, driven as Bytewax drives it: ``write_batch`` calls of one consumer batch (1000
records) of one partition, the topics in turn, then ``snapshot`` (the epoch's close) and ``close``. That is
records to rows, batches of at most 1000 rows, each batch one idempotent upsert transaction written behind on
the writer thread while the next is prepared (``copy``: COPY into the table, through a staging table +
``INSERT ... SELECT ... ON CONFLICT`` once keys exist; ``values``: multi-row ``INSERT ... VALUES ... ON
CONFLICT``), into tables with their keys and indexes. The replay figure
loads the same records again (every key present). The baseline is the server's ceiling for the same rows: a
single binary COPY per table of the pre-encoded rows into the same, empty tables, no conflict handling. A last
figure compares that ceiling with one text COPY of the same rows (the server's own text of them, from
``COPY ... TO STDOUT``): what the binary format saves the server. Everything runs against the embedded
PostgreSQL 16 (fsync off), in one process. The input records, which a loader never holds all at once, are kept
out of the garbage collector's full scans (``gc.freeze``).
"""

from __future__ import annotations

import argparse
import gc
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg2

from benchmarks.common import Figure, Result, print_figures
from benchmarks.inputs import base_envelopes
from connectors.kafka import SourceRecord
from connectors.postgres_config import MAX_BATCH_ROWS, PostgresLoaderSettings
from connectors.postgres_copy import BinaryCopyEncoder
from connectors.postgres_sink import PostgresSink
from connectors.postgres_tables import create_engine, define_tables, prepare_tables
from connectors.postgres_writer import WriteMethod
from embedded.postgres import EmbeddedPostgres
from operators.normalize import normalize_envelopes
from operators.table_rows import RowEncoder
from operators.venues.base import NormalizerSettings

__all__ = ["main", "measure"]

T = TypeVar("T")

TOPICS = ("ticker", "trades", "lob")
#: Records per ``write_batch`` call: what the flow hands its sink, one Kafka consumer batch of a partition.
CALL_RECORDS: int = PostgresLoaderSettings.model_fields["consumer_batch_size"].default
#: Envelopes of the recording used with ``--quick``.
QUICK_ENVELOPES = 5000


def _records(limit: int | None = None) -> dict[str, list[SourceRecord]]:
    outputs = normalize_envelopes(base_envelopes()[:limit], NormalizerSettings())
    records: dict[str, list[SourceRecord]] = {topic: [] for topic in TOPICS}
    for offset, (key, (topic, record)) in enumerate(outputs):
        records[topic].append(SourceRecord(topic, 0, offset, key, record))
    return records


def _best(work: Callable[[T], int], prepare: Callable[[], T], repeats: int) -> float:
    """Rows per second of the fastest of ``repeats`` runs; ``prepare`` runs untimed before each."""
    best = 0.0
    for _ in range(repeats):
        prepared = prepare()
        start = time.perf_counter()
        rows = work(prepared)
        best = max(best, rows / (time.perf_counter() - start))
    return best


class _Bench:
    def __init__(self, dsn: str, records: dict[str, list[SourceRecord]]) -> None:
        config = PostgresLoaderSettings(database_url=dsn)
        engine = create_engine(config)
        self.tables = define_tables(config, list(TOPICS))
        prepare_tables(engine, self.tables)
        engine.dispose()
        self.records = records
        self.encoders = {topic: RowEncoder(self.tables[topic], topic) for topic in TOPICS}
        self.conn: Any = psycopg2.connect(dsn)
        self.dsn = dsn

    def truncate(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"TRUNCATE {', '.join(table.name for table in self.tables.values())}")
        self.conn.commit()

    def parts(self, method: WriteMethod, truncate: bool = False) -> dict[str, Any]:
        """The sink's partitions for partition 0 of each topic, as Bytewax builds them, into emptied tables if
        ``truncate``."""
        if truncate:
            self.truncate()
        config = PostgresLoaderSettings(database_url=self.dsn, postgres_write_method=method)
        sink = PostgresSink(config, list(TOPICS), "benchmark")
        return {topic: sink.build_part("postgres_out", f"0-{topic}", None) for topic in TOPICS}

    def load(self, parts: dict[str, Any]) -> int:
        """The sink's work in the flow's call shape: the topics' partitions in turn, one consumer batch (1000
        records) per call, then the epoch's close (``snapshot``) and the end (``close``)."""
        calls = [
            (parts[topic], records[start : start + CALL_RECORDS])
            for topic, records in self.records.items()
            for start in range(0, len(records), CALL_RECORDS)
        ]
        calls.sort(key=lambda call: call[1][0].offset)  # the partitions' batches interleaved, as they arrive
        for part, records in calls:
            part.write_batch(records)
        for part in parts.values():
            part.snapshot()
            part.close()
        return sum(len(records) for records in self.records.values())

    def _copy_sql(self, topic: str, direction: str) -> str:
        columns = ", ".join(f'"{name}"' for name in self.encoders[topic].columns)
        return f'COPY "{self.tables[topic].name}" ({columns}) {direction}'

    def binary_payloads(self) -> dict[str, bytes]:
        payloads = {}
        for topic, encoder in self.encoders.items():
            rows, _ = encoder.rows(self.records[topic])
            payloads[topic] = BinaryCopyEncoder(self.tables[topic]).encode([row.values for row in rows])
        return payloads

    def text_payloads(self, binary: dict[str, bytes]) -> dict[str, bytes]:
        """The same rows in COPY's text format, as the server itself writes them."""
        self.truncate()
        self.plain_copy(binary, "binary")
        texts = {}
        with self.conn.cursor() as cur:
            for topic in TOPICS:
                out = io.BytesIO()
                cur.copy_expert(self._copy_sql(topic, "TO STDOUT"), out)
                texts[topic] = out.getvalue()
        self.conn.commit()
        return texts

    def plain_copy(self, payloads: dict[str, bytes], form: str) -> int:
        """One COPY per table of pre-encoded rows, no staging, no conflict handling: the server's ceiling."""
        total = 0
        with self.conn.cursor() as cur:
            for topic, payload in payloads.items():
                cur.copy_expert(self._copy_sql(topic, f"FROM STDIN WITH (FORMAT {form})"), io.BytesIO(payload))
                total += cur.rowcount
        self.conn.commit()
        return total


@contextmanager
def _inputs_frozen() -> Iterator[None]:
    """The objects alive now (the input records) are left out of the garbage collector's full scans meanwhile.

    A loader holds one consumer batch of records at a time; this benchmark holds the whole recording (about
    140,000 objects), and every third run or so a full collection scanned them all, about 80 ms of a 300 ms run,
    a cost the loader does not have. The loader's own garbage is collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def measure(repeats: int = 3, quick: bool = False) -> list[Result]:
    records = _records(QUICK_ENVELOPES if quick else None)
    rows = sum(len(r) for r in records.values())
    with tempfile.TemporaryDirectory() as workdir, EmbeddedPostgres(Path(workdir)) as server, _inputs_frozen():
        bench = _Bench(server.dsn, records)
        binary = bench.binary_payloads()
        text = bench.text_payloads(binary)
        ceiling = _best(lambda _: bench.plain_copy(binary, "binary"), bench.truncate, repeats)
        text_ceiling = _best(lambda _: bench.plain_copy(text, "text"), bench.truncate, repeats)
        via_copy = _best(bench.load, lambda: bench.parts("copy", truncate=True), repeats)
        via_values = _best(bench.load, lambda: bench.parts("values", truncate=True), repeats)
        replay = _best(bench.load, lambda: bench.parts("copy"), repeats)  # the rows are all there already
        bench.conn.close()
    baseline = "one binary COPY per table of the same rows, pre-encoded, into empty tables"
    note = f"{rows:,} ticker/trades/lob rows, {MAX_BATCH_ROWS}-row batches, embedded PostgreSQL 16, best of {repeats}"
    return [
        Figure(
            "postgres loader rows/s, copy path (direct COPY; staging + INSERT ON CONFLICT on stored keys)",
            via_copy,
            "rows/s",
            ceiling,
            baseline,
            "ratio >= 0.5",
            note,
        ),
        Figure("postgres loader rows/s, values path (multi-row INSERT)", via_values, "rows/s", ceiling, baseline),
        Figure("postgres loader rows/s, replay of rows already there (copy)", replay, "rows/s", ceiling, baseline),
        Figure(
            "postgres one binary COPY rows/s (the baseline above)",
            ceiling,
            "rows/s",
            text_ceiling,
            "one text COPY per table of the same rows (the server's own text of them)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"the records of the first {QUICK_ENVELOPES:,} frames")
    args = parser.parse_args()
    print_figures(measure(args.repeats, args.quick))


if __name__ == "__main__":
    main()
