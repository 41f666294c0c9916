"""Shared by the Postgres loader's integration tests: databases, expected rows from Kafka, rows read back.

Expected rows are computed here from the records read back from Kafka by the documented key rules, and table
rows are converted back to Avro values here, without the loader's own code, so the tests do not trust it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import psycopg2.extras

from connectors.kafka import TopicError, TopicRecord, read_topic
from embedded.kafka import TansuBroker
from embedded.postgres import EmbeddedPostgres
from tests.harness import flow_env, run_flow, settings_for
from tests.support import CRYPTOFEED

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LOADER = "flows.load_postgres:flow"
LOADER_COLUMNS = ("content_hash", "kafka_partition", "kafka_offset")

#: Per topic: key fields and the fields that decide which state is latest (empty: the first record stays).
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "trades": (("exchange", "symbol", "trade_id"), ()),
    "candles": (("exchange", "symbol", "interval", "start_timestamp"), ("event_timestamp", "receipt_timestamp")),
    "ethereum_blocks": (("chain", "block_hash"), ("receipt_timestamp",)),
    "ethereum_transactions": (("chain", "block_hash", "hash"), ("receipt_timestamp",)),
    "ethereum_logs": (("chain", "block_hash", "log_index"), ("receipt_timestamp",)),
    "token_transfers": (("chain", "block_hash", "log_index"), ("receipt_timestamp",)),
}
CEX_LOADED = ("trades", "lob", "ticker", "candles", "funding", "open_interest", "liquidations", "dead_letter")


@contextlib.contextmanager
def replayed_captures(workdir: Path, **extra: str) -> Iterator[tuple[TansuBroker, dict[str, str]]]:
    """A broker holding every cryptofeed capture replayed into ``raw`` and normalized into the standard topics."""
    with TansuBroker(workdir / "kafka") as broker:
        env = flow_env(
            broker.bootstrap, KAFKA_STOP_AT_END="true", REPLAY_CAPTURES=str(CRYPTOFEED / "*.jsonl.zst"), **extra
        )
        run_flow("flows.replay:flow", env, "-w", "2")
        run_flow("flows.normalize_cex:flow", env)
        yield broker, env


def create_database(server: EmbeddedPostgres, name: str) -> str:
    """A fresh database on ``server`` (dropped first if a previous run left it); returns its postgresql:// DSN."""
    conn = psycopg2.connect(server.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return server.dsn.rsplit("/", 1)[0] + f"/{name}"


def read_topics(env: dict[str, str], topics: tuple[str, ...] | list[str]) -> dict[str, list[TopicRecord]]:
    """Every record of each topic in Kafka order (partition, offset); empty for a topic that does not exist."""
    out: dict[str, list[TopicRecord]] = {}
    for topic in topics:
        try:
            rows = read_topic(settings_for(env), topic)
        except TopicError:
            rows = []
        out[topic] = sorted(rows, key=lambda r: (r.partition, r.offset))
    return out


def canonical(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=lambda b: b.hex())


def expected_rows(topic: str, records: list[TopicRecord]) -> dict[Any, dict[str, Any]]:
    """Identity -> expected row (the Avro value plus ``kafka_partition``/``kafka_offset``), by the documented rules.

    Natural keys: the first record, or the latest state for upsert topics (by the state's time, then Kafka
    order); dead letters: every Kafka record; everything else: one row per distinct content, from its first
    occurrence.
    """
    out: dict[Any, dict[str, Any]] = {}
    key_fields, latest_by = KEYS.get(topic, ((), ()))
    for record in records:
        row = {**record.value, "kafka_partition": record.partition, "kafka_offset": record.offset}
        if topic == "dead_letter":
            identity: Any = (record.partition, record.offset)
        elif key_fields:
            identity = tuple(record.value[f] for f in key_fields)
        else:
            identity = canonical(record.value)
        held = out.get(identity)
        newer = latest_by and held is not None and [row[f] for f in latest_by] >= [held[f] for f in latest_by]
        if held is None or newer:
            out[identity] = row
    return out


def _avro_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(microseconds=1)
    if isinstance(value, Decimal):
        return str(int(value))
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def table_contents(dsn: str, table: str) -> list[bytes]:
    """The rows of ``table``, canonical and sorted: equal lists mean equal tables."""
    return sorted(canonical(row) for row in table_rows(dsn, table))


def table_rows(dsn: str, table: str, schema: str | None = None) -> list[dict[str, Any]]:
    """Every row of ``table`` as Avro-shaped values (timestamps as µs, NUMERIC as decimal strings, bytes)."""
    name = f'"{schema}"."{table}"' if schema else f'"{table}"'
    with psycopg2.connect(dsn) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(f"SELECT * FROM {name}")
        rows = [{k: _avro_value(v) for k, v in row.items()} for row in cur.fetchall()]
    conn.close()
    return rows


def assert_table_equals_topic(dsn: str, topic: str, records: list[TopicRecord], schema: str | None = None) -> int:
    """The table holds exactly the topic's distinct ``records``, every column equal; returns the row count."""
    expected = expected_rows(topic, records)
    rows = table_rows(dsn, topic, schema)
    assert len(rows) == len(expected), f"{topic}: {len(rows)} rows for {len(expected)} distinct records"
    got = sorted(canonical({k: v for k, v in row.items() if k != "content_hash"}) for row in rows)
    assert got == sorted(canonical(row) for row in expected.values()), topic
    return len(rows)


def count_rows(dsn: str, tables: tuple[str, ...]) -> int:
    """Rows in ``tables`` together (0 while they do not exist yet)."""
    try:
        with psycopg2.connect(dsn, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute(" UNION ALL ".join(f'SELECT count(*) FROM "{t}"' for t in tables))
            total = sum(n for (n,) in cur.fetchall())
        conn.close()
        return total
    except psycopg2.Error:
        return 0


def wait_for_rows(dsn: str, tables: tuple[str, ...], at_least: int, timeout: float = 120.0) -> int:
    """Poll until ``tables`` hold ``at_least`` rows; returns the count seen."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline and seen < at_least:
        time.sleep(0.05)
        seen = count_rows(dsn, tables)
    return seen
