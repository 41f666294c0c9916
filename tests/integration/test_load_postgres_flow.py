"""load_postgres on real servers: real captures through replay and normalize into Tansu, then into PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest
from bytewax.testing import cluster_main
from confluent_kafka import Producer

from connectors.kafka import AvroDecoder, SourceRecord, TopicRecord, ensure_topics
from connectors.postgres_config import PostgresLoaderSettings
from connectors.postgres_sink import _WorkerLoader
from connectors.postgres_tables import create_engine, define_tables, prepare_tables
from embedded.kafka import TansuBroker
from embedded.postgres import EmbeddedPostgres
from flows.load_postgres import build
from schemas.serde import codec_for
from tests.harness import flow_env, run_flow, settings_for
from tests.integration.load_postgres_support import (
    CEX_LOADED,
    LOADER,
    assert_table_equals_topic,
    create_database,
    expected_rows,
    read_topics,
    replayed_captures,
    table_contents,
    table_rows,
)
from tests.support import DATA

pytestmark = pytest.mark.integration

ETHEREUM = DATA / "ethereum" / "blocks_17173049_17173050"


@dataclass(frozen=True)
class Captured:
    """The flow environment of a broker holding every capture normalized, and its records per topic."""

    env: dict[str, str]
    records: dict[str, list[TopicRecord]]


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    with replayed_captures(tmp_path_factory.mktemp("captured")) as (_, env):
        yield Captured(env, read_topics(env, CEX_LOADED))


def test_every_topic_lands_in_its_table_with_every_value_equal(captured: Captured, postgres: EmbeddedPostgres) -> None:
    dsn = create_database(postgres, "load_e2e")
    for method, workers in (("copy", "1"), ("values", "2")):  # -w 2: two sink partitions writing side by side
        schema = f"via_{method}"
        env = {**captured.env, "DATABASE_URL": dsn, "POSTGRES_WRITE_METHOD": method, "POSTGRES_SCHEMA": schema}
        run_flow(LOADER, env, "-w", workers)
        counts = {t: assert_table_equals_topic(dsn, t, captured.records[t], schema) for t in CEX_LOADED}
        # The captures really exercise arrays, upserts and every venue.
        assert counts["lob"] > 10_000 and counts["trades"] > 2_000 and counts["candles"] > 100, counts
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'via_copy' AND indexname LIKE '%lookup%'"
        )
        lookups = dict(cur.fetchall())
        # Arrays are real arrays: the levels unnest in SQL, as the README promises.
        cur.execute("SELECT count(*) FROM via_copy.lob, unnest(bid_price, bid_size) AS level(price, size)")
        (levels,) = cur.fetchone()
    conn.close()
    assert set(lookups) == set(CEX_LOADED)
    assert all("(exchange, symbol, event_timestamp)" in indexdef for indexdef in lookups.values())
    assert levels == sum(len(r.value["bid_price"]) for r in captured.records["lob"])


def test_each_record_is_written_by_the_worker_that_read_it(
    captured: Captured, postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers in one process: the sink's partitions get the same workers as the input's, so no record is
    handed from one worker to the other, and both workers write."""
    dsn = create_database(postgres, "load_locality")
    env = {**captured.env, "DATABASE_URL": dsn, "POSTGRES_TOPICS": "trades,lob,ticker"}
    readers: dict[tuple[int, str], set[int]] = defaultdict(set)
    writers: dict[tuple[int, str], set[int]] = defaultdict(set)
    decode, load = AvroDecoder.__call__, _WorkerLoader.load

    def reading(self: AvroDecoder, msg: Any) -> Any:
        record = decode(self, msg)
        if isinstance(record, SourceRecord):
            readers[record.partition, record.topic].add(threading.get_ident())
        return record

    def writing(self: _WorkerLoader, topic: str, records: list[SourceRecord]) -> None:
        for record in records:
            writers[record.partition, record.topic].add(threading.get_ident())
        load(self, topic, records)

    monkeypatch.setattr(AvroDecoder, "__call__", reading)
    monkeypatch.setattr(_WorkerLoader, "load", writing)
    cluster_main(build(_loader_config(env)), [], 0, worker_count_per_proc=2)

    assert len(writers) > 4, "several input partitions carried records"
    assert writers == readers
    assert all(len(threads) == 1 for threads in writers.values())
    assert len(set().union(*writers.values())) == 2, "both workers wrote"
    for topic in ("trades", "lob", "ticker"):
        assert_table_equals_topic(dsn, topic, captured.records[topic])


def _loader_config(env: dict[str, str]) -> PostgresLoaderSettings:
    fields = PostgresLoaderSettings.model_fields
    return PostgresLoaderSettings(**{k.lower(): v for k, v in env.items() if k.lower() in fields})  # type: ignore[arg-type]


def _install_statement_counter(dsn: str, tables: list[str]) -> None:
    """An AFTER INSERT ... FOR EACH STATEMENT trigger recording how many rows each INSERT statement added."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE insert_statements (id bigserial PRIMARY KEY, tbl text, inserted bigint)")
        cur.execute(
            "CREATE FUNCTION count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO insert_statements (tbl, inserted) SELECT TG_TABLE_NAME, count(*) FROM inserted; "
            "RETURN NULL; END $$"
        )
        for table in tables:
            cur.execute(
                f'CREATE TRIGGER "{table}_statements" AFTER INSERT ON "{table}" REFERENCING NEW TABLE AS inserted '
                "FOR EACH STATEMENT EXECUTE FUNCTION count_inserted()"
            )
    conn.close()


def _statements(dsn: str, after_id: int = 0) -> list[tuple[int, str, int]]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, tbl, inserted FROM insert_statements WHERE id > %s ORDER BY id", (after_id,))
        rows = cur.fetchall()
    conn.close()
    return rows


def test_batches_hold_at_most_1000_rows_and_a_replay_inserts_nothing(
    captured: Captured, postgres: EmbeddedPostgres
) -> None:
    dsn = create_database(postgres, "load_replay")
    env = {**captured.env, "DATABASE_URL": dsn}
    tables = list(CEX_LOADED)
    config = _loader_config(env)
    engine = create_engine(config)
    prepare_tables(engine, define_tables(config, tables))  # created up front, to carry the counting trigger
    engine.dispose()
    _install_statement_counter(dsn, tables)

    run_flow(LOADER, env)
    first = _statements(dsn)
    loaded = {topic: assert_table_equals_topic(dsn, topic, captured.records[topic]) for topic in tables}
    inserted = [n for _, _, n in first]
    assert sum(inserted) == sum(loaded.values())
    assert max(inserted) == 1000, "the default batch is 1000 rows, and never more"
    before = {topic: table_contents(dsn, topic) for topic in tables}

    run_flow(LOADER, env)  # no recovery directory: every record is read and written again
    again = _statements(dsn, first[-1][0])
    assert again, "the replay wrote its batches"
    assert [n for _, _, n in again if n] == [], "a replay inserts no row"
    assert {topic: table_contents(dsn, topic) for topic in tables} == before


def _produce(bootstrap: str, items: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": "true"})
    for topic, key, value in items:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_upstream_duplicates_and_stale_states_collapse_to_one_row(
    captured: Captured, kafka: TansuBroker, postgres: EmbeddedPostgres
) -> None:
    """The at-least-once tail of a restarted normalize flow (the same records again, at new offsets) adds no row,
    and an old candle state arriving after newer ones does not replace them."""
    topics = ("trades", "lob", "ticker", "candles", "funding", "open_interest")
    bybit = {t: [r for r in captured.records[t] if r.value["exchange"] == "bybit"] for t in topics}
    produced: list[tuple[str, bytes | None, bytes]] = []
    for topic, records in bybit.items():
        encoded = [(topic, (r.key or "").encode(), codec_for(topic).encode(r.value)) for r in records]
        produced += encoded + encoded[len(encoded) // 2 :]
    candles: dict[tuple[Any, ...], list[TopicRecord]] = {}
    for record in bybit["candles"]:
        candles.setdefault(_candle(record.value), []).append(record)
    produced += [
        ("candles", (states[0].key or "").encode(), codec_for("candles").encode(states[0].value))
        for states in candles.values()
    ]
    env = flow_env(kafka.bootstrap, KAFKA_STOP_AT_END="true", POSTGRES_TOPICS=",".join(topics))
    ensure_topics(settings_for(env), topics)
    _produce(kafka.bootstrap, produced)
    in_kafka = read_topics(env, topics)
    assert sum(map(len, in_kafka.values())) == len(produced) > sum(map(len, bybit.values())) + 1000

    dsn = create_database(postgres, "load_duplicates")
    run_flow(LOADER, {**env, "DATABASE_URL": dsn})
    for topic in topics:
        assert assert_table_equals_topic(dsn, topic, in_kafka[topic]) == len(expected_rows(topic, bybit[topic]))
    stored = {_candle(row): row["close"] for row in table_rows(dsn, "candles")}
    newest = {
        key: max(states, key=lambda r: (r.value["event_timestamp"], r.value["receipt_timestamp"])).value["close"]
        for key, states in candles.items()
    }
    assert stored == newest and len(candles) > 10


def _candle(value: dict[str, Any]) -> tuple[Any, ...]:
    return value["symbol"], value["interval"], value["start_timestamp"]


def _ethereum(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ETHEREUM / f"{name}.json").read_text().splitlines() if line.strip()]


def _chain_records() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """ethereum-etl's exports of blocks 17173049-17173050 in the pipeline's chain schemas (key, value)."""
    received = 2_000_000  # the collector saw each block 2 s after its timestamp

    def common(item: dict[str, Any], number: int, block_hash: str, seconds: int) -> dict[str, Any]:
        return {
            "chain": "ethereum",
            "block_number": number,
            "block_hash": block_hash,
            "event_timestamp": seconds * 1_000_000,
            "receipt_timestamp": seconds * 1_000_000 + received,
            "removed": False,
        }

    def optional(value: int | None) -> str | None:
        return None if value is None else str(value)

    blocks = [
        (
            str(b["number"]),
            {
                **common(b, b["number"], b["hash"], b["timestamp"]),
                "parent_hash": b["parent_hash"],
                "miner": b["miner"],
                "gas_limit": b["gas_limit"],
                "gas_used": b["gas_used"],
                "base_fee_per_gas": optional(b["base_fee_per_gas"]),
                "transaction_count": b["transaction_count"],
                "size": b["size"],
                "difficulty": optional(b["difficulty"]),
                "extra_data": b["extra_data"],
            },
        )
        for b in _ethereum("blocks")
    ]
    transactions = [
        (
            t["hash"],
            {
                **common(t, t["block_number"], t["block_hash"], t["block_timestamp"]),
                "hash": t["hash"],
                "transaction_index": t["transaction_index"],
                "from_address": t["from_address"],
                "to_address": t["to_address"],
                "value": str(t["value"]),
                "gas": t["gas"],
                "gas_price": optional(t["gas_price"]),
                "max_fee_per_gas": optional(t["max_fee_per_gas"]),
                "max_priority_fee_per_gas": optional(t["max_priority_fee_per_gas"]),
                "nonce": t["nonce"],
                "input": t["input"],
                "transaction_type": t["transaction_type"],
            },
        )
        for t in _ethereum("transactions")
    ]
    logs = [
        (
            log["address"],
            {
                **common(log, log["block_number"], log["block_hash"], log["block_timestamp"]),
                "transaction_hash": log["transaction_hash"],
                "transaction_index": log["transaction_index"],
                "log_index": log["log_index"],
                "address": log["address"],
                "topics": log["topics"],
                "data": log["data"],
            },
        )
        for log in _ethereum("logs")
    ]
    return {"ethereum_blocks": blocks, "ethereum_transactions": transactions, "ethereum_logs": logs}


def test_chain_topics_load_exactly_and_a_reorg_marks_rows_removed(
    kafka: TansuBroker, postgres: EmbeddedPostgres
) -> None:
    env = flow_env(kafka.bootstrap, KAFKA_STOP_AT_END="true")
    records = _chain_records()
    ensure_topics(settings_for(env), list(records))
    _produce(
        kafka.bootstrap,
        [
            (topic, key.encode(), codec_for(topic).encode(value))
            for topic, items in records.items()
            for key, value in items
        ],
    )
    dsn = create_database(postgres, "load_chain")
    run_flow(LOADER, {**env, "DATABASE_URL": dsn})  # the chain topics exist, so they are loaded
    in_kafka = read_topics(env, list(records))
    for topic in records:
        assert assert_table_equals_topic(dsn, topic, in_kafka[topic]) == len(records[topic])
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(value), max(gas_price) FROM ethereum_transactions")
        total, top_gas_price = cur.fetchone()
    conn.close()
    values = [int(t["value"]) for t in _ethereum("transactions")]
    assert max(values) > 2**63 and total == sum(values)  # beyond BIGINT and DOUBLE, exact
    assert top_gas_price == max(t["gas_price"] for t in _ethereum("transactions"))

    logs = records["ethereum_logs"]
    retracted = [
        (key, {**value, "removed": True, "receipt_timestamp": value["receipt_timestamp"] + 12_000_000})
        for key, value in logs[:5]
    ]
    stale = [
        (key, {**value, "removed": True, "receipt_timestamp": value["receipt_timestamp"] - 1})
        for key, value in logs[5:10]
    ]
    _produce(
        kafka.bootstrap,
        [("ethereum_logs", k.encode(), codec_for("ethereum_logs").encode(v)) for k, v in retracted + stale],
    )
    run_flow(LOADER, {**env, "DATABASE_URL": dsn})
    rows = {(r["block_hash"], r["log_index"]): r["removed"] for r in table_rows(dsn, "ethereum_logs")}
    assert len(rows) == len(logs)
    assert [rows[(v["block_hash"], v["log_index"])] for _, v in retracted] == [True] * 5
    assert [rows[(v["block_hash"], v["log_index"])] for _, v in stale] == [False] * 5
    assert sum(rows.values()) == 5
