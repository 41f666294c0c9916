"""Placement of Kafka records in the archive (connectors.archive_placement) and the store's file rules."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage

from connectors.archive import ArchiveItem, Rejected
from connectors.archive_placement import Message, RawPlacement, RecordPlacement, hour_directory
from connectors.archive_store import ArchiveStore, FileName
from connectors.config import Settings
from schemas.serde import codec_for
from tests.support import CRYPTOFEED, capture, envelopes, normalize, records

CREATE_TIME = 1  # Kafka timestamp type: producer create time


def _message(value: bytes, offset: int = 7, key: bytes | None = b"k", ts_ms: int = 1_700_000_000_000) -> Any:
    return KafkaSourceMessage(
        key=key, value=value, topic="raw", partition=2, offset=offset, timestamp=(CREATE_TIME, ts_ms)
    )


def _expected_hour(timestamp_us: int) -> str:
    at = datetime.fromtimestamp(timestamp_us / 1_000_000, UTC)
    return at.strftime("year=%Y/month=%m/day=%d/hour=%H")


def test_every_real_envelope_is_placed_by_exchange_and_receipt_hour_with_its_bytes_unchanged() -> None:
    place = RawPlacement("archive_raw")
    count = 0
    for path in sorted(CRYPTOFEED.glob("*.jsonl.zst")):
        for offset, env in enumerate(envelopes(path)):
            value = env.to_json()
            key, item = place(_message(value, offset))
            assert key == "raw:2"
            assert isinstance(item, ArchiveItem)
            assert item.payload == value and item.size == len(value) and item.offset == offset
            assert item.directory == f"exchange={env.exchange}/{_expected_hour(env.receipt_ts)}"
            count += 1
    assert count > 10_000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"exchange":"binance"}', "invalid"),
        (b"", "not JSON"),
    ],
)
def test_values_that_are_not_envelopes_are_kept_under_invalid_with_the_reason(value: bytes, reason: str) -> None:
    _, item = RawPlacement("archive_raw")(_message(value, key=None))
    assert isinstance(item, ArchiveItem)
    assert item.directory == f"exchange=_invalid/{_expected_hour(1_700_000_000_000_000)}"
    line = orjson.loads(item.payload)
    assert reason in line["reason"]
    assert base64.b64decode(line["value_base64"]) == value and line["key_base64"] is None
    assert (line["topic"], line["partition"], line["offset"]) == ("raw", 2, 7)


def test_valid_envelopes_that_cannot_be_a_safe_line_are_kept_under_invalid_too() -> None:
    env = envelopes(capture("KRAKEN"))[5]
    obj = orjson.loads(env.to_json())
    escaping = orjson.dumps({**obj, "exchange": "../../etc"})
    pretty = orjson.dumps(obj, option=orjson.OPT_INDENT_2)  # valid JSON, but spread over lines
    for value, reason in ((escaping, "not a safe path component"), (pretty, "line break")):
        _, item = RawPlacement("archive_raw")(_message(value))
        assert isinstance(item, ArchiveItem) and item.directory.startswith("exchange=_invalid/")
        line = orjson.loads(item.payload)
        assert reason in line["reason"] and base64.b64decode(line["value_base64"]) == value
        assert b"\n" not in item.payload


def test_a_value_without_kafka_timestamp_goes_to_the_epoch_hour() -> None:
    msg: Message = KafkaSourceMessage(key=None, value=b"{", topic="raw", partition=0, offset=0, timestamp=(0, -1))
    _, item = RawPlacement("archive_raw")(msg)
    assert isinstance(item, ArchiveItem) and item.directory == "exchange=_invalid/year=1970/month=01/day=01/hour=00"


def test_standardized_records_are_decoded_and_placed_by_event_hour() -> None:
    outs = normalize(envelopes(capture("BYBIT")))
    place = RecordPlacement(Settings(), "archive_parquet")
    for topic in ("trades", "lob", "ticker", "candles", "funding", "open_interest"):
        codec = codec_for(topic)
        for offset, rec in enumerate(records(outs, topic)):
            value = codec.encode(rec)
            msg: Message = KafkaSourceMessage(key=b"k", value=value, topic=topic, partition=1, offset=offset)
            key, item = place(msg)
            assert key == f"{topic}:1"
            assert isinstance(item, ArchiveItem)
            assert item.payload == rec and item.size == len(value)
            assert item.directory == _expected_hour(rec["event_timestamp"])


def test_undecodable_records_and_impossible_hours_become_dead_letters_with_the_reason() -> None:
    place = RecordPlacement(Settings(), "archive_parquet")
    _, rejected = place(KafkaSourceMessage(key=b"k", value=b"\x00garbage", topic="trades", partition=0, offset=3))
    assert isinstance(rejected, Rejected) and rejected.offset == 3
    topic, dead = rejected.dead_letter
    assert topic == "dead_letter" and dead["error_type"] == "schema_violation" and dead["payload"] == b"\x00garbage"
    trade = records(normalize(envelopes(capture("OKX"))), "trades")[0]
    value = codec_for("trades").encode({**trade, "event_timestamp": 2**62})
    _, rejected = place(KafkaSourceMessage(key=b"k", value=value, topic="trades", partition=0, offset=4))
    assert isinstance(rejected, Rejected)
    assert rejected.dead_letter[1]["error_type"] == "out_of_range"
    assert "no calendar hour" in rejected.dead_letter[1]["reason"]
    assert rejected.dead_letter[1]["source_offset"] == 4


def test_hour_directories_are_zero_padded_utc_hours() -> None:
    assert hour_directory(0) == "year=1970/month=01/day=01/hour=00"
    assert hour_directory(1_723_161_599_999_999) == "year=2024/month=08/day=08/hour=23"
    assert hour_directory(1_723_161_600_000_000) == "year=2024/month=08/day=09/hour=00"
    with pytest.raises(ValueError, match="no calendar hour"):
        hour_directory(-(2**62))


def test_file_names_round_trip_and_sort_by_offset() -> None:
    name = FileName("open_interest", 12, 5, 1_000_000, "parquet")
    assert str(name) == "open_interest-p12-00000000000000000005-00000000000000001000000.parquet".replace(
        "00000000000000001000000", "00000000000001000000"
    )
    assert FileName.parse(str(name)) == name
    assert FileName.parse("open_interest-p12-5-6.parquet") is None
    assert FileName.parse(".open_interest-p12-00000000000000000005-00000000000001000000.parquet.x.tmp") is None


def test_publication_leaves_no_temporary_file_and_listing_clears_a_crashed_writers_leftovers(tmp_path: Path) -> None:
    store = ArchiveStore.open(str(tmp_path))
    store.publish("raw/exchange=okx/hour=01/raw-p0-00000000000000000000-00000000000000000009.jsonl.zst", b"x")
    directory = tmp_path / "raw" / "exchange=okx" / "hour=01"
    leftover = directory / ".raw-p0-00000000000000000010-00000000000000000019.jsonl.zst.abc.tmp"
    other_partition = directory / ".raw-p1-00000000000000000000-00000000000000000009.jsonl.zst.abc.tmp"
    leftover.write_bytes(b"half")
    other_partition.write_bytes(b"half")
    files = store.files("raw/exchange=okx/hour=01", "raw", 0)
    assert [(f.first, f.last) for f in files] == [(0, 9)]
    assert not leftover.exists() and other_partition.exists()
    assert store.files("raw/exchange=okx/hour=02", "raw", 0) == []


def test_checkpoints_read_back_what_was_written(tmp_path: Path) -> None:
    store = ArchiveStore.open(f"file://{tmp_path}")
    assert store.read_checkpoint("trades", 3) is None
    store.write_checkpoint("trades", 3, 1234)
    store.write_checkpoint("trades", 3, 1300)
    assert store.read_checkpoint("trades", 3) == 1300
    assert (tmp_path / "_checkpoints" / "trades" / "partition=3.json").exists()
