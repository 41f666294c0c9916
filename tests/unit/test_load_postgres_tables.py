"""Postgres tables from the Avro schemas, and records to rows, on the real schemas and recorded data."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.schema import CreateTable

from connectors.kafka import SourceRecord
from operators.table_rows import RowEncoder, content_hash
from schemas import STANDARD_TOPICS, load_schema
from schemas.sql import TABLE_KEYS, SchemaMappingError, avro_column, build_table
from tests.support import capture, envelopes, normalize

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DIALECT = pg.dialect()


def _table(topic: str) -> sa.Table:
    return build_table(topic, sa.MetaData())


def _sql(table: sa.Table, column: str) -> str:
    return str(table.c[column].type.compile(DIALECT))


def _ddl(topic: str) -> str:
    return str(CreateTable(_table(topic)).compile(dialect=DIALECT))


def test_every_topic_has_a_table_with_one_column_per_field_in_schema_order() -> None:
    assert set(TABLE_KEYS) == set(STANDARD_TOPICS)
    for topic in STANDARD_TOPICS:
        table = _table(topic)
        fields = load_schema(topic)["fields"]
        loader = ["content_hash"] if TABLE_KEYS[topic].columns == ("content_hash",) else []
        assert [c.name for c in table.columns] == [f["name"] for f in fields] + loader + [
            "kafka_partition",
            "kafka_offset",
        ]
        for field in fields:
            optional = isinstance(field["type"], list) and "null" in field["type"]
            assert table.c[field["name"]].nullable == optional, (topic, field["name"])
        assert [c.name for c in table.primary_key.columns] == list(TABLE_KEYS[topic].columns)
        (index,) = table.indexes
        assert [c.name for c in index.columns] == list(TABLE_KEYS[topic].index)


def test_avro_types_become_the_documented_postgres_types() -> None:
    expected = {
        ("trades", "event_timestamp"): "TIMESTAMP WITH TIME ZONE",
        ("trades", "trade_id"): "TEXT",
        ("trades", "price"): "DOUBLE PRECISION",
        ("trades", "side"): "TEXT",
        ("trades", "sequence"): "BIGINT",
        ("lob", "bid_price"): "DOUBLE PRECISION[]",
        ("lob", "content_hash"): "UUID",
        ("candles", "closed"): "BOOLEAN",
        ("funding", "next_funding_timestamp"): "TIMESTAMP WITH TIME ZONE",
        ("dead_letter", "payload"): "BYTEA",
        ("dead_letter", "source_partition"): "INTEGER",
        ("ethereum_logs", "topics"): "TEXT[]",
        ("token_transfers", "value"): "NUMERIC(78, 0)",
        ("dex_swaps", "amount0"): "NUMERIC(78, 0)",
        ("dex_swaps", "sqrt_price_x96"): "NUMERIC(78, 0)",
        ("dex_swaps", "tick"): "INTEGER",
    }
    assert {key: _sql(_table(key[0]), key[1]) for key in expected} == expected


def test_enums_and_256_bit_integers_carry_check_constraints_with_their_exact_domain() -> None:
    assert "CONSTRAINT side_enum CHECK (side IN ('buy', 'sell'))" in _ddl("trades")
    assert "CONSTRAINT action_enum CHECK (action IN ('snapshot', 'update', 'resync'))" in _ddl("lob")
    assert f"CONSTRAINT value_uint256 CHECK (value BETWEEN 0 AND {2**256 - 1})" in _ddl("token_transfers")
    swaps = _ddl("dex_swaps")
    assert f"CONSTRAINT amount0_int256 CHECK (amount0 BETWEEN {-(2**255)} AND {2**255 - 1})" in swaps
    assert f"CONSTRAINT liquidity_uint256 CHECK (liquidity BETWEEN 0 AND {2**256 - 1})" in swaps
    assert "CHECK" not in _ddl("ticker")


@pytest.mark.parametrize(
    "avro_type",
    [
        {"type": "map", "values": "string"},
        ["int", "string"],
        ["null", "int", "string"],
        {"type": "array", "items": {"type": "array", "items": "double"}},
        {"type": "record", "name": "Inner", "fields": []},
    ],
)
def test_avro_types_without_a_postgres_column_are_refused_naming_the_field(avro_type: Any) -> None:
    with pytest.raises(SchemaMappingError, match="odd_field"):
        avro_column({"name": "odd_field", "type": avro_type})


def _records(name: str, topic: str) -> list[SourceRecord]:
    outs = normalize(envelopes(capture(name)), snapshot_interval_us=60_000_000)
    return [SourceRecord(t, 0, offset, key, rec) for offset, (key, t, rec) in enumerate(outs) if t == topic]


@pytest.mark.parametrize(("capture_name", "topic"), [("BYBIT", "trades"), ("BYBIT", "funding"), ("OKX", "lob")])
def test_rows_hold_every_field_and_their_kafka_coordinates_and_values_spell_timestamps_exactly(
    capture_name: str, topic: str
) -> None:
    records = _records(capture_name, topic)
    encoder = RowEncoder(_table(topic), topic)
    rows, refused = encoder.rows(records)
    assert refused == [] and len(rows) == len(records) > 0
    parameters = encoder.parameters(rows)
    timestamps = 0
    for row, spelled, record in zip(rows, parameters, records, strict=True):
        by_column = dict(zip(encoder.columns, row.values, strict=True))
        as_sent = dict(zip(encoder.columns, spelled, strict=True))
        for name, value in record.value.items():
            assert by_column[name] == value, name
            if name.endswith("timestamp") and value is not None:
                moment = datetime.fromisoformat(as_sent[name])
                assert moment.utcoffset() == timedelta(0) and (moment - EPOCH) // timedelta(microseconds=1) == value
                timestamps += 1
        assert (by_column["kafka_partition"], by_column["kafka_offset"]) == (record.partition, record.offset)
    assert timestamps >= 2 * len(records)


def test_a_timestamp_a_datetime_cannot_hold_is_refused_with_the_field_named() -> None:
    (record, *_) = _records("BYBIT", "trades")
    bad = SourceRecord("trades", 0, 7, record.key, {**record.value, "event_timestamp": 2**62})
    rows, refused = RowEncoder(_table("trades"), "trades").rows([bad, record])
    assert [r.source for r in rows] == [record]
    assert refused == [(bad, f"event_timestamp = {2**62} µs is outside the representable time range")]


def test_content_hash_tells_records_apart_exactly_when_their_content_differs() -> None:
    records = [r.value for r in _records("KRAKEN", "lob")]
    distinct = {orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}
    assert len({content_hash(r) for r in records}) == len(distinct) > 1000
    first = records[0]
    # A field a newer schema adds, absent (null) in this record, does not change the record's identity.
    assert content_hash({**first, "new_optional_field": None}) == content_hash(first)
    assert content_hash({**first, "bid_size": [*first["bid_size"], 0.0]}) != content_hash(first)


def test_content_hash_is_blake2b_128_of_the_non_null_fields_as_json_as_rows_already_stored_hold_it() -> None:
    for topic in ("ticker", "lob"):
        for record in [r.value for r in _records("BINANCE", topic)][:200]:
            present = orjson.dumps({name: value for name, value in record.items() if value is not None})
            assert content_hash(record) == hashlib.blake2b(present, digest_size=16).digest()


def test_latest_per_key_keeps_the_newest_state_of_every_candle_in_input_order() -> None:
    records = _records("COINBASE", "candles")
    shuffled = random.Random(7).sample(records, len(records))
    encoder = RowEncoder(_table("candles"), "candles")
    kept = encoder.latest_per_key(encoder.rows(shuffled)[0])
    newest: dict[tuple[Any, ...], SourceRecord] = {}
    for r in records:
        key = (r.value["exchange"], r.value["symbol"], r.value["interval"], r.value["start_timestamp"])
        held = newest.get(key)
        order = (r.value["event_timestamp"], r.value["receipt_timestamp"], r.offset)
        if held is None or order > (held.value["event_timestamp"], held.value["receipt_timestamp"], held.offset):
            newest[key] = r
    assert sorted(row.source.offset for row in kept) == sorted(r.offset for r in newest.values())
    first_seen = list(dict.fromkeys(encoder.key_of(row) for row in encoder.rows(shuffled)[0]))
    assert [encoder.key_of(row) for row in kept] == first_seen
    assert len(records) > len(kept) > 10
