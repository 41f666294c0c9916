"""Avro -> Arrow schemas (schemas.arrow) and the Parquet file format, on real records."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from connectors.archive_formats import ParquetFormat
from operators.dead_letter import SourceRef, dead_letter
from schemas import load_schema, topic_names
from schemas.arrow import ArrowSchemaError, arrow_schema, avro_to_arrow
from schemas.serde import codec_for
from tests.support import DATA, capture, envelopes, normalize, records

LOGS = DATA / "ethereum" / "blocks_17173049_17173050" / "logs.json"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def _branches(avro_type: Any) -> tuple[Any, bool]:
    if isinstance(avro_type, list):
        return next(t for t in avro_type if t != "null"), "null" in avro_type
    return avro_type, False


@pytest.mark.parametrize("topic", topic_names())
def test_every_topic_schema_maps_field_by_field(topic: str) -> None:
    avro = load_schema(topic)
    arrow = arrow_schema(topic)
    assert arrow.names == [f["name"] for f in avro["fields"]]
    for field in avro["fields"]:
        column = arrow.field(field["name"])
        inner, nullable = _branches(field["type"])
        assert column.nullable == nullable, field["name"]
        logical = inner.get("logicalType") if isinstance(inner, dict) else None
        kind = inner.get("type") if isinstance(inner, dict) else inner
        if logical == "timestamp-micros":
            assert column.type == pa.timestamp("us", tz="UTC")
        elif logical in ("uint256", "int256"):
            assert column.type == pa.string()
            assert column.metadata[b"avro.logicalType"] == logical.encode()
        elif kind == "enum":
            assert column.type == pa.string()
        elif kind == "array":
            assert pa.types.is_list(column.type)
        else:
            expected = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64()}
            expected |= {"boolean": pa.bool_(), "bytes": pa.binary()}
            assert column.type == expected[str(kind)], field["name"]
        assert column.metadata[b"description"] == field["doc"].encode()


def test_unions_of_several_types_and_non_records_are_refused_with_the_field_named() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "either", "type": ["null", "string", "long"]}]}
    with pytest.raises(ArrowSchemaError, match="either"):
        avro_to_arrow(schema)
    with pytest.raises(ArrowSchemaError, match="record"):
        avro_to_arrow({"type": "enum", "name": "E", "symbols": ["a"]})


def _through_kafka(topic: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the archive flow gets: the records as Avro bytes on the topic, decoded again."""
    codec = codec_for(topic)
    return [codec.decode(codec.encode(row)) for row in rows]


def _parquet_rows(topic: str, rows: list[dict[str, Any]], row_group_rows: int = 100) -> pa.Table:
    file = ParquetFormat(arrow_schema(topic), row_group_rows, 1 << 30).new_file()
    for row in rows:
        file.append(row, 1)
    return pq.read_table(io.BytesIO(file.finish()))


def _as_micros(table: pa.Table) -> list[dict[str, Any]]:
    columns = [
        pc.cast(column, pa.int64()) if pa.types.is_timestamp(column.type) else column for column in table.columns
    ]
    return pa.Table.from_arrays(columns, names=table.column_names).to_pylist()


def test_real_records_of_every_exchange_topic_round_trip_through_parquet() -> None:
    outs = [out for name in ("BINANCE_FUTURES", "BYBIT", "DERIBIT") for out in normalize(envelopes(capture(name)))]
    bad = envelopes(capture("BINANCE"))[3].to_json()[:40]
    dead = dead_letter("normalize_cex", "parse_raw", "raw value is not JSON", "malformed_json", SourceRef("raw"), bad)
    seen = 0
    for topic in ("trades", "lob", "ticker", "candles", "funding", "open_interest", "dead_letter"):
        rows = _through_kafka(topic, [dead[1]] if topic == "dead_letter" else records(outs, topic))
        assert rows, topic
        table = _parquet_rows(topic, rows)
        assert table.schema.equals(arrow_schema(topic), check_metadata=False)
        assert _as_micros(table) == rows, topic
        seen += len(rows)
    assert seen > 1000


def _logs() -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(LOGS).read_text().splitlines()]


def _log_record(log: dict[str, Any]) -> dict[str, Any]:
    return {
        "chain": "ethereum",
        "block_number": log["block_number"],
        "block_hash": log["block_hash"],
        "event_timestamp": log["block_timestamp"] * 1_000_000,
        "receipt_timestamp": log["block_timestamp"] * 1_000_000,
        "removed": False,
        "transaction_hash": log["transaction_hash"],
        "transaction_index": log["transaction_index"],
        "log_index": log["log_index"],
        "address": log["address"],
        "topics": log["topics"],
        "data": log["data"],
    }


def test_real_ethereum_logs_keep_their_topic_arrays() -> None:
    rows = _through_kafka("ethereum_logs", [_log_record(log) for log in _logs()])
    table = _parquet_rows("ethereum_logs", rows, row_group_rows=64)
    assert _as_micros(table) == rows
    assert table.column("topics").type == pa.list_(pa.field("element", pa.string(), nullable=False))


def test_uint256_words_from_mainnet_logs_stay_exact_where_decimal256_cannot_hold_them() -> None:
    """Every 32-byte data word of the real logs, read as uint256, survives Parquet digit for digit.

    The infinite ERC-20 approvals among them (2**256 - 1 and neighbours) have 78 digits: decimal256 (76) refuses.
    """
    logs = _logs()
    words = [int(log["data"], 16) for log in logs if len(log["data"]) == 66]
    template = next(log for log in logs if log["topics"] and log["topics"][0] == TRANSFER and len(log["topics"]) == 3)
    base = {
        "chain": "ethereum",
        "block_number": template["block_number"],
        "block_hash": template["block_hash"],
        "event_timestamp": template["block_timestamp"] * 1_000_000,
        "receipt_timestamp": template["block_timestamp"] * 1_000_000,
        "removed": False,
        "transaction_hash": template["transaction_hash"],
        "log_index": template["log_index"],
        "token_address": template["address"],
        "standard": "erc20",
        "from_address": "0x" + template["topics"][1][-40:],
        "to_address": "0x" + template["topics"][2][-40:],
        "token_symbol": None,
        "token_decimals": None,
        "value_scaled": None,
    }
    rows = _through_kafka("token_transfers", [{**base, "value": str(word)} for word in words])
    table = _parquet_rows("token_transfers", rows)
    assert [int(v) for v in table.column("value").to_pylist()] == words
    widest = max(words)
    assert len(str(widest)) == 78
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        pa.array([Decimal(widest)], pa.decimal256(76, 0))
