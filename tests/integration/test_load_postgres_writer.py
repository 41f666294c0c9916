"""The loader's table writers against a real PostgreSQL: exact round trips, rejected rows, error kinds, evolution."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from connectors.kafka import SourceRecord
from connectors.postgres_config import PostgresLoaderSettings
from connectors.postgres_retry import Backoff, retry_transient
from connectors.postgres_tables import create_engine, define_tables, prepare_tables
from connectors.postgres_writer import TableWriter, WriteMethod, failure_kind, load
from embedded.postgres import EmbeddedPostgres
from embedded.process import free_port
from operators.table_rows import RowEncoder, content_hash
from schemas.sql import TABLE_KEYS
from tests.integration.load_postgres_support import create_database, table_rows
from tests.support import capture, envelopes, normalize

pytestmark = pytest.mark.integration

METHODS: list[WriteMethod] = ["copy", "values"]
TOPICS = ["trades", "lob", "ethereum_logs", "token_transfers", "dex_swaps", "dead_letter"]


@pytest.fixture(scope="module")
def database(postgres: EmbeddedPostgres) -> Iterator[tuple[str, dict[str, sa.Table]]]:
    dsn = create_database(postgres, "load_writer")
    config = PostgresLoaderSettings(database_url=dsn)
    engine = create_engine(config)
    tables = define_tables(config, TOPICS)
    prepare_tables(engine, tables)
    engine.dispose()
    yield dsn, tables


def _truncate(dsn: str, *tables: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(tables)}")
    conn.close()


def _write(dsn: str, table: sa.Table, topic: str, method: WriteMethod, values: list[dict[str, Any]]) -> Any:
    encoder = RowEncoder(table, topic)
    rows, refused = encoder.rows(SourceRecord(topic, 0, offset, "k", v) for offset, v in enumerate(values))
    assert refused == []
    conn = psycopg2.connect(dsn)
    try:
        return load(conn, TableWriter(encoder, method), rows)
    finally:
        conn.close()


def _stored(dsn: str, table: str) -> list[dict[str, Any]]:
    rows = sorted(table_rows(dsn, table), key=lambda r: r["kafka_offset"])
    return [{k: v for k, v in r.items() if k not in ("kafka_partition", "kafka_offset", "content_hash")} for r in rows]


def _same(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN and -0.0 differs from 0.0: the stored bits, not arithmetic."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


_COMMON_CHAIN_FIELDS = (
    "chain",
    "block_number",
    "block_hash",
    "event_timestamp",
    "receipt_timestamp",
    "removed",
    "transaction_hash",
    "log_index",
)


def _transfer(log_index: int, value: str, **fields: Any) -> dict[str, Any]:
    """A token transfer record carrying ``value`` (a 256-bit amount's decimal text)."""
    return {
        "chain": "ethereum",
        "block_number": 17173049,
        "block_hash": "0xaa5a",
        "event_timestamp": 1683000000000000,
        "receipt_timestamp": 1683000000000001,
        "removed": False,
        "transaction_hash": "0xeb10",
        "log_index": log_index,
        "token_address": "0xc02a",
        "standard": "erc20",
        "from_address": "0x01",
        "to_address": "0x02",
        "value": value,
        "token_symbol": None,
        "token_decimals": None,
        "value_scaled": None,
        **fields,
    }


@pytest.mark.parametrize("method", METHODS)
def test_awkward_values_round_trip_exactly_through_both_write_paths(
    method: WriteMethod, database: tuple[str, dict[str, sa.Table]]
) -> None:
    dsn, tables = database
    _truncate(dsn, *(tables[t].name for t in TOPICS))
    outs = normalize(envelopes(capture("OKX")))
    trade = next(rec for _, topic, rec in outs if topic == "trades")
    book = next(rec for _, topic, rec in outs if topic == "lob" and len(rec["bid_price"]) > 5)
    texts = ["tab\there", "line\nbreak\r\n", "back\\slash \\N", "quote\" and ' and ,{}", "ünïcødé ✓ 𝄞", "", "NULL"]
    trades = [{**trade, "trade_id": text, "venue_symbol": text} for text in texts]
    odd = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]
    books = [{**book, "bid_price": odd, "bid_size": odd[::-1], "ask_price": [], "ask_size": [], "reason": "a\tb"}]
    # A book snapshot's long arrays take another encoding path than short ones: both lengths, specials inside.
    deep = [odd[i % len(odd)] * (1 + i) for i in range(1000)]
    books.append({**book, "bid_price": deep, "bid_size": deep[::-1], "ask_price": deep[:257], "ask_size": deep[:256]})
    logs = [
        {
            "chain": "ethereum",
            "block_number": 17173049,
            "block_hash": "0xaa5ab9bb22d8020d438496a7edb4eff508b1c5128b0dc01fdecf57f96aac1bb3",
            "event_timestamp": -1,
            "receipt_timestamp": 253402300799999999,  # 9999-12-31T23:59:59.999999Z
            "removed": False,
            "transaction_hash": "0xeb10",
            "transaction_index": 0,
            "log_index": i,
            "address": "0xc02a",
            "topics": texts[: i + 1],
            "data": "0x",
        }
        for i in range(len(texts))
    ]
    amounts = ["0", "1", "9999", "10000", "100000000", str(2**256 - 1), "123456789012345678901234567890"]
    transfers = [
        _transfer(
            i,
            amount,
            removed=i % 2 == 1,
            token_symbol=None if i % 3 else "WETH",
            token_decimals=None if i % 3 else 18,
            value_scaled=None if i % 3 else int(amount) / 1e18,
        )
        for i, amount in enumerate(amounts)
    ]
    signed = ["-1", "-10000", "-9999", str(-(2**255)), str(2**255 - 1), "-100000000", "0"]
    swaps = [
        {
            **{k: v for k, v in _transfer(i, "0").items() if k in _COMMON_CHAIN_FIELDS},
            "protocol": "uniswap_v3",
            "pool_address": "0x88e6",
            "sender": "0x01",
            "recipient": "0x02",
            "amount0": amount,
            "amount1": signed[-1 - i],
            "token0_address": None,
            "token1_address": "0xc02a",
            "amount0_scaled": None,
            "amount1_scaled": -0.0,
            "sqrt_price_x96": None if i % 2 else str(2**160 + i),
            "liquidity": None if i % 2 else str(10**30),
            "tick": None if i % 2 else -887272 + i,
        }
        for i, amount in enumerate(signed)
    ]
    letters = [
        {
            "flow": "normalize_cex",
            "step": "parse_raw",
            "reason": "bad\tframe\n",
            "error_type": "malformed_json",
            "source_topic": "raw",
            "source_partition": 3,
            "source_offset": 2**40,
            "exchange": None,
            "symbol": None,
            "key": None,
            "payload": bytes(range(256)) + b"\\N\t\n",
            "event_timestamp": 0,
            "receipt_timestamp": 1,
        }
    ]
    written = (
        ("trades", trades),
        ("lob", books),
        ("ethereum_logs", logs),
        ("token_transfers", transfers),
        ("dex_swaps", swaps),
        ("dead_letter", letters),
    )
    for topic, values in written:
        loaded = _write(dsn, tables[topic], topic, method, values)
        assert (loaded.written, loaded.rejections) == (len(values), [])
        stored = _stored(dsn, tables[topic].name)
        assert _same(stored, values), (topic, stored, values)
        if TABLE_KEYS[topic].by_content:  # the UUID of the hash's 16 bytes, whichever path wrote it
            hashes = sorted(row["content_hash"] for row in table_rows(dsn, tables[topic].name))
            assert hashes == sorted(str(uuid.UUID(bytes=content_hash(value))) for value in values)


@pytest.mark.parametrize("method", METHODS)
def test_bisection_isolates_the_refused_rows_and_commits_every_other_row(
    method: WriteMethod, database: tuple[str, dict[str, sa.Table]]
) -> None:
    dsn, tables = database
    _truncate(dsn, tables["trades"].name)
    trades = [rec for _, topic, rec in normalize(envelopes(capture("KRAKEN_FUTURES"))) if topic == "trades"][:1000]
    assert len(trades) == 1000
    bad_at = {3: "\x00", 500: "nul\x00inside", 999: "\x00end"}
    values = [{**t, "trade_id": bad_at[i]} if i in bad_at else t for i, t in enumerate(trades)]
    loaded = _write(dsn, tables["trades"], "trades", method, values)
    assert loaded.written == 997
    assert sorted(r.row.source.offset for r in loaded.rejections) == sorted(bad_at)
    assert all("0x00" in r.reason for r in loaded.rejections)
    assert _stored(dsn, tables["trades"].name) == [v for i, v in enumerate(values) if i not in bad_at]
    again = _write(dsn, tables["trades"], "trades", method, values)  # idempotent: nothing new, same refusals
    assert again.written == 0 and len(again.rejections) == 3


@pytest.mark.parametrize("method", METHODS)
def test_a_256_bit_amount_that_is_no_integer_is_refused_naming_its_column(
    method: WriteMethod, database: tuple[str, dict[str, sa.Table]]
) -> None:
    dsn, tables = database
    _truncate(dsn, tables["token_transfers"].name)
    records = [_transfer(i, value) for i, value in enumerate(["5", "12.5x", "7", str(2**256)])]
    loaded = _write(dsn, tables["token_transfers"], "token_transfers", method, records)
    assert loaded.written == 2
    reasons = {r.row.source.offset: r.reason for r in loaded.rejections}
    assert sorted(reasons) == [1, 3]
    if method == "copy":
        assert "column value = '12.5x'" in reasons[1]
    else:
        assert 'invalid input syntax for type numeric: "12.5x"' in reasons[1]
    assert "value_uint256" in reasons[3]  # the range CHECK, from the server on both paths
    assert [r["value"] for r in _stored(dsn, tables["token_transfers"].name)] == ["5", "7"]


def test_copy_goes_straight_into_the_table_until_a_batch_meets_stored_keys(
    database: tuple[str, dict[str, sa.Table]],
) -> None:
    dsn, tables = database
    _truncate(dsn, tables["trades"].name)
    trades = [rec for _, topic, rec in normalize(envelopes(capture("KRAKEN_FUTURES"))) if topic == "trades"][:1000]
    assert len(trades) == 1000
    encoder = RowEncoder(tables["trades"], "trades")
    rows, _ = encoder.rows(SourceRecord("trades", 0, offset, "k", v) for offset, v in enumerate(trades))
    writer = TableWriter(encoder, "copy")
    conn = psycopg2.connect(dsn)
    try:
        assert load(conn, writer, rows[:300]).written == 300 and writer.direct
        # A third of this batch is stored already: the direct COPY is refused, the upsert writes the rest.
        assert load(conn, writer, rows[150:600]).written == 300 and not writer.direct
        # Through the upsert while batches meet stored keys; back to the direct COPY after one that meets none.
        assert load(conn, writer, rows[600:800]).written == 200 and writer.direct
        assert load(conn, writer, rows[800:]).written == 200 and writer.direct
        assert load(conn, writer, rows).written == 0 and not writer.direct
    finally:
        conn.close()
    assert _stored(dsn, tables["trades"].name) == trades


def test_error_kinds_come_from_the_real_server(database: tuple[str, dict[str, sa.Table]]) -> None:
    dsn, _ = database
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(host="127.0.0.1", port=free_port(), user="postgres", connect_timeout=2)
    assert failure_kind(refused.value) == "transient"

    conn, killer = psycopg2.connect(dsn), psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.Error) as missing:
                cur.execute("INSERT INTO no_such_table VALUES (1)")
            assert failure_kind(missing.value) == "fatal"
            conn.rollback()
            with pytest.raises(psycopg2.Error) as out_of_range:
                cur.execute("SELECT 99999999999::integer")
            assert failure_kind(out_of_range.value) == "rejected"
            conn.rollback()
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
            conn.rollback()
        with killer.cursor() as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg2.Error) as terminated, conn.cursor() as cur:
            cur.execute("SELECT 1")
        assert failure_kind(terminated.value) == "transient"
    finally:
        conn.close()
        killer.close()


def test_existing_tables_evolve_with_their_schema(postgres: EmbeddedPostgres) -> None:
    dsn = create_database(postgres, "load_evolve")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        # The trades table as an older schema left it: no "sequence" yet, and a required field since dropped.
        cur.execute(
            "CREATE TABLE trades (exchange text NOT NULL, symbol text NOT NULL, venue_symbol text NOT NULL, "
            "event_timestamp timestamptz NOT NULL, receipt_timestamp timestamptz NOT NULL, trade_id text NOT NULL, "
            "price double precision NOT NULL, size double precision NOT NULL, side text NOT NULL, "
            "fee double precision NOT NULL, kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL, "
            "PRIMARY KEY (exchange, symbol, trade_id))"
        )
    conn.close()
    config = PostgresLoaderSettings(database_url=dsn)
    engine = create_engine(config)
    tables = define_tables(config, ["trades"])
    prepare_tables(engine, tables)
    prepare_tables(engine, tables)  # a second start finds nothing to do
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("trades")}
    engine.dispose()
    assert columns["sequence"]["nullable"] and str(columns["sequence"]["type"]) == "BIGINT"
    assert columns["fee"]["nullable"]
    trades = [rec for _, topic, rec in normalize(envelopes(capture("BYBIT"))) if topic == "trades"]
    assert _write(dsn, tables["trades"], "trades", "copy", trades).written == len(trades)
    assert [{k: v for k, v in r.items() if k != "fee"} for r in _stored(dsn, "trades")] == trades


def test_a_write_stuck_behind_a_lock_times_out_and_is_retried_until_it_lands(
    database: tuple[str, dict[str, sa.Table]], caplog: pytest.LogCaptureFixture
) -> None:
    dsn, tables = database
    _truncate(dsn, tables["trades"].name)
    trades = [rec for _, topic, rec in normalize(envelopes(capture("GEMINI"))) if topic == "trades"]
    encoder = RowEncoder(tables["trades"], "trades")
    rows, _ = encoder.rows(SourceRecord("trades", 0, i, "k", v) for i, v in enumerate(trades))
    writer = TableWriter(encoder, "copy", statement_timeout_s=0.2)
    blocker = psycopg2.connect(dsn)
    with blocker.cursor() as cur:
        cur.execute("LOCK TABLE trades IN ACCESS EXCLUSIVE MODE")  # e.g. a migration holding the table
    attempts: list[float] = []

    def write() -> Any:
        conn = psycopg2.connect(dsn)
        try:
            return load(conn, writer, rows)
        finally:
            conn.close()

    def wait(seconds: float) -> None:
        attempts.append(seconds)
        if len(attempts) == 3:
            blocker.rollback()  # the migration ends

    try:
        with caplog.at_level(logging.WARNING, logger="connectors.postgres_retry"):
            loaded = retry_transient(write, Backoff(0.05, 0.1), f"{len(rows)} rows for table trades", "test", wait)
    finally:
        blocker.close()
    assert loaded.written == len(rows) > 100 and len(attempts) == 3
    assert "canceling statement due to statement timeout" in caplog.records[0].getMessage()
    assert _stored(dsn, "trades") == trades
