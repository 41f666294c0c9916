"""The binary COPY encoders on every table and on recorded rows; the exact bytes are checked against a real server
in tests/integration/test_load_postgres_writer.py."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.kafka import SourceRecord
from connectors.postgres_copy import PG_EPOCH_MICROS, BinaryCopyEncoder, CopyValueError
from operators.table_rows import RowEncoder
from schemas import STANDARD_TOPICS
from schemas.sql import build_table
from tests.support import capture, envelopes, normalize

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _fields(payload: bytes) -> list[list[bytes | None]]:
    """The fields of every row of a binary COPY payload, read by the format's rules (not the encoder's code)."""
    assert payload.startswith(SIGNATURE) and payload[11:19] == bytes(8)
    at, rows = 19, list[list[bytes | None]]()
    while True:
        (count,) = struct.unpack_from(">h", payload, at)
        at += 2
        if count == -1:
            assert at == len(payload)
            return rows
        row: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", payload, at)
            at += 4
            row.append(None if length == -1 else payload[at : at + length])
            at += max(length, 0)
        rows.append(row)


def _trades() -> tuple[sa.Table, list[tuple[Any, ...]]]:
    table = build_table("trades", sa.MetaData())
    records = [rec for _, topic, rec in normalize(envelopes(capture("BYBIT"))) if topic == "trades"]
    rows, _ = RowEncoder(table, "trades").rows(SourceRecord("trades", 0, i, "k", r) for i, r in enumerate(records))
    return table, [row.values for row in rows]


@pytest.mark.parametrize("topic", STANDARD_TOPICS)
def test_every_table_has_an_encoder_and_an_empty_batch_is_a_valid_payload(topic: str) -> None:
    encoder = BinaryCopyEncoder(build_table(topic, sa.MetaData()))
    assert _fields(encoder.encode([])) == []


def test_recorded_trades_encode_field_by_field_in_the_binary_forms() -> None:
    table, values = _trades()
    rows = _fields(BinaryCopyEncoder(table).encode(values))
    assert len(rows) == len(values) > 10
    columns = [column.name for column in table.columns]
    for fields, row in zip(rows, values, strict=True):
        by_name = dict(zip(columns, fields, strict=True))
        value = dict(zip(columns, row, strict=True))
        assert by_name["exchange"] == value["exchange"].encode()
        assert by_name["trade_id"] == value["trade_id"].encode()
        assert struct.unpack(">q", by_name["event_timestamp"] or b"") == (value["event_timestamp"] - PG_EPOCH_MICROS,)
        assert struct.unpack(">d", by_name["price"] or b"") == (value["price"],)
        assert struct.unpack(">i", by_name["kafka_partition"] or b"") == (value["kafka_partition"],)
        assert struct.unpack(">q", by_name["kafka_offset"] or b"") == (value["kafka_offset"],)
        assert (by_name["sequence"] is None) == (value["sequence"] is None)


def test_a_null_in_a_not_null_column_is_sent_as_null_for_the_server_to_refuse() -> None:
    table, values = _trades()
    price = [column.name for column in table.columns].index("price")
    broken = [*values[:3], (*values[3][:price], None, *values[3][price + 1 :])]
    rows = _fields(BinaryCopyEncoder(table).encode(broken))
    assert rows[3][price] is None
    assert rows[:3] == _fields(BinaryCopyEncoder(table).encode(values[:3]))


def test_a_value_without_a_binary_form_names_its_column() -> None:
    table, values = _trades()
    trade_id = [column.name for column in table.columns].index("trade_id")
    broken = (*values[0][:trade_id], 12345, *values[0][trade_id + 1 :])
    with pytest.raises(CopyValueError, match="column trade_id = 12345: 'int' object has no attribute 'encode'"):
        BinaryCopyEncoder(table).encode([values[1], broken])
