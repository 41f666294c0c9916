"""The compiled Avro writers against fastavro: the same bytes for every record of the real data, the same errors."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import fastavro
import pytest

from connectors.evm.token_metadata import TokenMetadata
from operators.dead_letter import SourceRef, dead_letter
from operators.evm.chain_records import block_outputs
from operators.evm.etl_logs import log_record_from_export
from operators.evm.normalize import LogNormalizer
from operators.records import RecordFactory
from schemas import load_schema
from schemas.avro_writer import Unsupported, compile_writer, zigzag
from schemas.serde import AvroCodec, SchemaError
from tests.support import CRYPTOFEED, HFTBACKTEST, envelopes, normalize
from tests.unit.test_evm_chain import _recorded_blocks
from tests.unit.test_evm_decode import LOGS


def _real_records() -> dict[str, list[dict[str, Any]]]:
    """Every record the normalizers make from the recordings, by topic."""
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cex = [envelopes(HFTBACKTEST, venue="binance")] + [envelopes(p) for p in sorted(CRYPTOFEED.glob("*.jsonl.zst"))]
    for envs in cex:
        for _, topic, record in normalize(envs, snapshot_interval_us=60_000_000):
            by_topic[topic].append(record)
    for block, logs in _recorded_blocks():
        for _, (topic, record) in block_outputs(block, logs, "ethereum", receipt_ts=1):
            by_topic[topic].append(record)
    records = [log_record_from_export(row, "ethereum") | {"removed": False} for row in LOGS]
    for _, (topic, record) in LogNormalizer(TokenMetadata(None))([(r, SourceRef(topic="logs")) for r in records]):
        by_topic[topic].append(record)
    liquidation = RecordFactory("binance_futures", "BTC.USDT-PERP", "BTCUSDT").liquidation  # none in the recordings
    by_topic["liquidations"].append(liquidation(1, 2, side="sell", price=61_000.5, size=0.25, status="FILLED")[1])
    source = SourceRef("raw", 3, 41, b"binance:BTC.USDT", b"{oops")
    by_topic["dead_letter"].append(dead_letter("f", "s", "why", "malformed_json", source, b"{oops", 5, "x", "y")[1])
    by_topic["dead_letter"].append(dead_letter("f", "s", "why", "kafka_error", SourceRef(topic="t"), b"")[1])
    return by_topic


REAL = _real_records()


def _fastavro(topic: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(load_schema(topic)), record)
    return buf.getvalue()


def test_the_recordings_cover_the_topics() -> None:
    assert {"trades", "lob", "ticker", "candles", "funding", "open_interest", "liquidations"} <= REAL.keys()
    assert {"ethereum_blocks", "ethereum_transactions", "ethereum_logs", "token_transfers", "dex_swaps"} <= REAL.keys()


@pytest.mark.parametrize("topic", sorted(REAL))
def test_every_real_record_encodes_to_the_bytes_fastavro_writes(topic: str) -> None:
    codec = AvroCodec(topic)
    assert codec._compiled is not None
    prefix_length = len(codec.encode(REAL[topic][0])) - len(_fastavro(topic, REAL[topic][0]))
    for record in REAL[topic]:
        encoded = codec.encode(record)
        assert encoded[prefix_length:] == _fastavro(topic, record)
        assert codec.decode(encoded) == {key: record[key] for key in codec.decode(encoded)}


@pytest.mark.parametrize(
    "value",
    [0, 1, -1, 63, -64, 64, 127, 128, 2**27 - 1, 2**27, -(2**27), 2**28, 1_723_161_255_708_123, 2**63 - 1, -(2**63)],
)
def test_longs_at_every_varint_boundary_match_fastavro(value: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", value)
    assert zigzag(value) == buf.getvalue()


LONG_BOUNDARIES = [0, 1, -1, 63, -64, 64, 127, 128, 2**27 - 1, 2**27, -(2**27), 2**28, 1_723_161_255_708_123]


@pytest.mark.parametrize("value", [*LONG_BOUNDARIES, 2**63 - 1, -(2**63)])
def test_compiled_long_fields_match_fastavro_at_every_varint_boundary(value: int) -> None:
    # The compiled writer inlines the varint of large longs; plain and nullable fields, both signs.
    schema = {
        "type": "record",
        "name": "r",
        "fields": [
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "n", "type": "long"},
            {"name": "seq", "type": ["null", "long"]},
        ],
    }
    record = {"ts": value, "n": -value if value > -(2**63) else 0, "seq": value}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    assert compile_writer(schema)(record) == buf.getvalue()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_a_long_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(OverflowError):
        zigzag(value)
    long_field = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "long"}]}
    with pytest.raises(OverflowError):
        compile_writer(long_field)({"a": value})


def _ticker() -> dict[str, Any]:
    return dict(REAL["ticker"][0])


@pytest.mark.parametrize(
    ("topic", "change", "word"),
    [
        ("ticker", {"bid_price": "1.5"}, "ticker"),
        ("ticker", {"exchange": None}, "ticker"),
        ("trades", {"side": "up"}, "trades"),
        ("lob", {"bid_price": ["x"]}, "lob"),
    ],
)
def test_a_record_off_its_schema_is_a_schema_error_as_with_fastavro(
    topic: str, change: dict[str, Any], word: str
) -> None:
    record = {**REAL[topic][0], **change}
    with pytest.raises(SchemaError, match=word):
        AvroCodec(topic).encode(record)


def test_a_missing_field_is_a_schema_error() -> None:
    record = _ticker()
    del record["symbol"]
    with pytest.raises(SchemaError, match="ticker"):
        AvroCodec("ticker").encode(record)


def test_schemas_outside_the_compiled_subset_are_left_to_fastavro() -> None:
    union = {"type": "record", "name": "r", "fields": [{"name": "a", "type": ["string", "long"]}]}
    nested = {"type": "record", "name": "r", "fields": [{"name": "a", "type": {"type": "map", "values": "long"}}]}
    for schema in (union, nested):
        with pytest.raises(Unsupported):
            compile_writer(schema)
    int_field = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}
    with pytest.raises(OverflowError):
        compile_writer(int_field)({"a": 2**31})
