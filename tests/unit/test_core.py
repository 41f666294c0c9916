"""Shared machinery: bad-frame handling, the book publisher, the raw envelope and the Avro wire formats."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from operators.book import ASK, BID, BookPublisher
from operators.dead_letter import SourceRef
from operators.normalize import (
    BatchedNormalizeLogic,
    ConsumeError,
    Item,
    NormalizeLogic,
    group_by_key,
    key_raw_record,
    normalize_envelopes,
)
from operators.records import Output, RecordFactory
from operators.venues.base import NormalizerSettings
from schemas import STANDARD_TOPICS, load_schema
from schemas.raw import EnvelopeError, RawEnvelope
from schemas.serde import AvroCodec, SchemaError, codec_for
from tests.support import ReplayedBook, capture, envelopes, lob_actions, normalize, records

BINANCE = capture("BINANCE")


def _corrupt(env: RawEnvelope) -> RawEnvelope:
    return replace(env, frame=env.frame[: len(env.frame) // 2])


def _nth(envs: list[RawEnvelope], symbol: str, prefix: str, n: int) -> int:
    return [i for i, e in enumerate(envs) if e.symbol == symbol and e.channel.startswith(prefix)][n]


def test_a_bad_ticker_frame_is_dead_lettered_and_leaves_the_book_alone() -> None:
    envs = envelopes(BINANCE)
    i = _nth(envs, "NKN.USDT", "bookTicker", 3)
    outs = normalize([*envs[:i], _corrupt(envs[i]), *envs[i + 1 :]])
    dead = records(outs, "dead_letter")
    assert [d["error_type"] for d in dead] == ["malformed_json"]
    assert dead[0]["payload"] == _corrupt(envs[i]).to_json() and dead[0]["symbol"] == "NKN.USDT"
    assert "resync" not in lob_actions(outs, "binance:NKN.USDT")
    assert lob_actions(outs, "binance:NKN.USDT") == lob_actions(normalize(envs), "binance:NKN.USDT")


def test_a_bad_book_frame_resyncs_before_its_dead_letter_and_nothing_follows() -> None:
    envs = envelopes(BINANCE)
    i = _nth(envs, "NKN.USDT", "depth@", 12)
    outs = normalize([*envs[:i], _corrupt(envs[i]), *envs[i + 1 :]])
    nkn = [(topic, rec) for key, topic, rec in outs if key == "binance:NKN.USDT"]
    topics = [topic for topic, _ in nkn]
    at = topics.index("dead_letter")
    assert nkn[at - 1][0] == "lob" and nkn[at - 1][1]["action"] == "resync"
    assert "bad book frame" in nkn[at - 1][1]["reason"]
    assert all(rec["action"] != "update" for topic, rec in nkn[at:] if topic == "lob")
    assert "resync" not in lob_actions(outs, "binance:BLZ.ETH")


def _run(*items: Item) -> list[Output]:
    outputs, _ = NormalizeLogic(None, NormalizerSettings()).on_batch(list(items))
    return outputs


def _rejected(value: bytes, offset: int) -> Any:
    [(topic, record)] = _run(SourceRef("raw", 0, offset, b"binance:BTC.USDT", value))
    assert topic == "dead_letter" and record["step"] == "parse_raw"
    return record


def test_raw_records_that_are_no_usable_envelope_are_dead_lettered_with_reasons() -> None:
    env = envelopes(BINANCE)[0]
    dead = _rejected(b"{oops", 7)
    assert dead["error_type"] == "malformed_json" and dead["source_offset"] == 7 and dead["payload"] == b"{oops"
    dead = _rejected(replace(env, exchange="nowhere").to_json(), 8)
    assert dead["error_type"] == "unknown_venue" and "nowhere" in dead["reason"]
    dead = _rejected(b'{"exchange":"binance"}', 9)
    assert dead["error_type"] == "unexpected_shape" and "missing required field" in dead["reason"]
    [(topic, dead)] = _run(ConsumeError(SourceRef("raw", 1, 5, b"k", None), "Kafka consume error: broken"))
    assert topic == "dead_letter" and dead["error_type"] == "kafka_error" and dead["source_offset"] == 5


def test_raw_records_are_keyed_by_their_kafka_key_and_parsed_in_the_keyed_step() -> None:
    envs = [env for env in envelopes(BINANCE) if env.kind == "ws"]
    env = envs[0]
    keyed = SourceRef("raw", 0, 10, env.key.encode(), env.to_json())
    assert key_raw_record(keyed) == (env.key, keyed)  # the value is not parsed before routing
    unkeyed = SourceRef("raw", 0, 11, None, env.to_json())
    assert key_raw_record(unkeyed) == (env.key, (env, unkeyed))
    garbage = SourceRef("raw", 0, 12, None, b"{oops")
    assert key_raw_record(garbage) == ("", garbage)
    mine = [e for e in envs if e.key == env.key][:50]
    as_records = [SourceRef("raw", 0, i, e.key.encode(), e.to_json()) for i, e in enumerate(mine)]
    assert _run(*as_records) == [output for _, output in normalize_envelopes(mine)]


def test_batches_of_raw_records_normalize_as_the_records_do_one_by_one() -> None:
    """The Kafka flow's shape: records grouped per instrument per input batch, one list of outputs per group."""
    envs = envelopes(BINANCE)
    raw = [SourceRef("raw", 0, i, e.key.encode(), e.to_json()) for i, e in enumerate(envs)]
    expected: dict[str, list[Output]] = {}
    for key, output in normalize_envelopes(envs, NormalizerSettings(0)):
        expected.setdefault(key, []).append(output)
    assert len(expected) > 1

    logics: dict[str, BatchedNormalizeLogic] = {}
    got: dict[str, list[Output]] = {}
    for start in range(0, len(raw), 500):
        if start == 2000:  # a restart from the snapshots midway changes nothing either
            logics = {k: BatchedNormalizeLogic(logic.snapshot(), NormalizerSettings(0)) for k, logic in logics.items()}
        groups = group_by_key(key_raw_record(source) for source in raw[start : start + 500])
        assert len({key for key, _ in groups}) == len(groups), "one group per instrument"
        for key, items in groups:
            logic = logics.setdefault(key, BatchedNormalizeLogic(None, NormalizerSettings(0)))
            emitted, _ = logic.on_batch([items])
            assert len(emitted) <= 1
            for batch in emitted:
                got.setdefault(key, []).extend(batch)
    assert got == expected


def test_an_envelope_under_another_instruments_key_is_dead_lettered_and_the_instrument_carries_on() -> None:
    envs = [env for env in envelopes(BINANCE) if env.kind == "ws"]
    mine = [e for e in envs if e.key == envs[0].key][:20]
    stranger = next(e for e in envs if e.key != envs[0].key)
    wrong_key = SourceRef("raw", 0, 1, envs[0].key.encode(), stranger.to_json())
    first = _run(wrong_key)
    assert [(t, r["error_type"]) for t, r in first] == [("dead_letter", "unexpected_key")]
    assert stranger.key in first[0][1]["reason"]
    items: list[Item] = [(e, SourceRef("raw")) for e in mine[:10]]
    outputs = _run(*items, wrong_key, *[(e, SourceRef("raw")) for e in mine[10:]])
    dead = [r for t, r in outputs if t == "dead_letter"]
    assert len(dead) == 1 and dead[0]["error_type"] == "unexpected_key" and dead[0]["source_offset"] == 1
    assert [o for o in outputs if o[0] != "dead_letter"] == [o for _, o in normalize_envelopes(mine)]


def test_record_factories_restore_from_snapshots_taken_before_and_after_their_templates() -> None:
    """Normalizer snapshots hold a `RecordFactory`; ones pickled before it had templates still restore."""
    factory = RecordFactory("binance", "BTC.USDT", "BTCUSDT")
    expected = factory.trade(1, 2, "7", 3.0, 4.0, "buy", 7)
    restored = pickle.loads(pickle.dumps(factory, protocol=pickle.HIGHEST_PROTOCOL))
    assert restored.trade(1, 2, "7", 3.0, 4.0, "buy", 7) == expected
    old = RecordFactory.__new__(RecordFactory)
    old.__setstate__((None, {"exchange": "binance", "symbol": "BTC.USDT", "venue_symbol": "BTCUSDT"}))
    assert old.trade(1, 2, "7", 3.0, 4.0, "buy", 7) == expected
    first, second = factory.quote(1, 2, 3.0, 4.0, 5.0, 6.0), factory.quote(1, 2, 3.0, 4.0, 5.0, 6.0)
    first[1]["bid_price"] = 0.0
    assert second[1]["bid_price"] == 3.0, "each record is a copy of the template"
    assert factory.quote(1, 2, 3.0, 4.0, 5.0, 6.0, 9) == factory.ticker(
        1, 2, bid_price=3.0, bid_size=4.0, ask_price=5.0, ask_size=6.0, sequence=9
    )


def test_envelope_validation() -> None:
    with pytest.raises(EnvelopeError, match="not JSON"):
        RawEnvelope.from_json(b"\x00")
    with pytest.raises(EnvelopeError, match="kind"):
        RawEnvelope.from_json(
            b'{"exchange":"a","symbol":"b","venue_symbol":"c","channel":"d","kind":"x","receipt_ts":1,"frame":"{}"}'
        )
    with pytest.raises(EnvelopeError, match="receipt_ts"):
        RawEnvelope.from_json(
            b'{"exchange":"a","symbol":"b","venue_symbol":"c","channel":"d","kind":"ws","receipt_ts":1.5,"frame":"{}"}'
        )


def test_an_invalid_book_never_publishes_and_truncation_is_replayable() -> None:
    book = BookPublisher(RecordFactory("x", "A.B", "AB"), 0, depth=2)
    book.change(BID, 1.0, 1.0)
    assert book.commit(1, 1, 1) == [] and not book.dirty  # never snapshotted: nothing published
    book.load_snapshot([(3.0, 1.0, None, None), (2.0, 1.0, None, None)], [(4.0, 1.0, None, None)])
    assert book.dirty
    replayed = ReplayedBook()
    for _, rec in book.publish_snapshot(1, 1, 1):
        replayed.apply(rec)
    book.change(BID, 3.5, 2.0)  # pushes 2.0 out of a depth-2 book
    [(_, update)] = book.commit(2, 2, 2)
    assert update["bid_price"] == [3.5, 2.0] and update["bid_size"] == [2.0, 0.0]
    replayed.apply(update)
    assert replayed.bids == {3.5: 2.0, 3.0: 1.0}
    restored = pickle.loads(pickle.dumps(book))
    assert restored.book.arrays(BID) == ([3.5, 3.0], [2.0, 1.0]) and restored.book.arrays(ASK) == ([4.0], [1.0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([BID, ASK]), st.integers(1, 30), st.sampled_from([0.0, 1.0, 2.5])), max_size=200)
)
def test_replaying_lob_records_rebuilds_the_same_book(changes: list[tuple[int, int, float]]) -> None:
    book = BookPublisher(RecordFactory("x", "A.B", "AB"), 0)
    book.load_snapshot([(10.0, 1.0, None, None)], [(20.0, 1.0, None, None)])
    replayed = ReplayedBook()
    for _, rec in book.publish_snapshot(0, 0, 0):
        replayed.apply(rec)
    for n, (side, price, size) in enumerate(changes):
        book.change(side, float(price), size)
        if n % 3 == 2:
            for _, rec in book.commit(n, n, n):
                replayed.apply(rec)
    for _, rec in book.commit(len(changes), 0, 0):
        replayed.apply(rec)
    assert replayed.bids == dict(zip(*book.book.arrays(BID), strict=True))
    assert replayed.asks == dict(zip(*book.book.arrays(ASK), strict=True))


def test_every_topic_has_a_schema_with_the_common_fields() -> None:
    for topic in STANDARD_TOPICS:
        names = {field["name"] for field in load_schema(topic)["fields"]}
        assert {"event_timestamp", "receipt_timestamp"} <= names, topic
    for topic in ("trades", "lob", "ticker", "candles", "funding", "open_interest", "liquidations"):
        names = {field["name"] for field in load_schema(topic)["fields"]}
        assert {"exchange", "symbol", "venue_symbol"} <= names, topic


def test_single_object_encoding_round_trips_and_decodes_in_another_process() -> None:
    outs = normalize(envelopes(BINANCE))
    for topic in {t for _, t, _ in outs}:
        codec = codec_for(topic)
        for record in records(outs, topic)[:20]:
            data = codec.encode(record)
            assert data[:2] == b"\xc3\x01" and codec.decode(data) == record
    trade = records(outs, "trades")[0]
    data = codec_for("trades").encode(trade)
    script = (
        "import sys; from schemas.serde import AvroCodec; "
        "print(AvroCodec('trades').decode(bytes.fromhex(sys.argv[1]))['trade_id'])"
    )
    result = subprocess.run([sys.executable, "-c", script, data.hex()], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == trade["trade_id"]


def test_schema_violations_and_foreign_bytes_are_clear_errors() -> None:
    codec = AvroCodec("trades")
    with pytest.raises(SchemaError, match="trades"):
        codec.encode({"exchange": "x"})
    with pytest.raises(SchemaError, match="neither"):
        codec.decode(b"plain text")
    with pytest.raises(SchemaError, match="no registry"):
        codec.decode(b"\x00\x00\x00\x00\x07rest")


def test_confluent_wire_format_interoperates_with_confluents_own_serializers() -> None:
    """With a registry configured, bytes are Confluent-framed and readable by confluent-kafka's deserializer.

    confluent-kafka's in-process ``mock://`` registry stands in for a registry server (none is published on
    PyPI); the serializers on both sides are the real ones.
    """
    import json
    from datetime import UTC, datetime

    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    trade = records(normalize(envelopes(BINANCE)), "trades")[0]
    codec = codec_for("trades", "mock://interop")
    data = codec.encode(trade)
    assert data[:1] == b"\x00"
    context = SerializationContext("trades", MessageField.VALUE)
    theirs = AvroDeserializer(codec._registry)(data, context)
    assert theirs["trade_id"] == trade["trade_id"] and theirs["price"] == trade["price"]
    assert theirs["event_timestamp"] == datetime.fromtimestamp(trade["event_timestamp"] / 1e6, UTC)
    serializer = AvroSerializer(codec._registry, json.dumps(load_schema("trades")))
    assert codec.decode(serializer(trade, context)) == trade


def test_avro_decoder_gives_source_records_or_dead_letters() -> None:
    from bytewax.connectors.kafka import KafkaSourceMessage

    from connectors.config import Settings
    from connectors.kafka import AvroDecoder, SourceRecord

    decode = AvroDecoder(Settings(), "archive_parquet")
    trade = records(normalize(envelopes(BINANCE)), "trades")[0]
    good = decode(
        KafkaSourceMessage(
            b"binance:NKN.USDT",
            codec_for("trades").encode(trade),
            topic="trades",
            partition=2,
            offset=41,
            timestamp=(1, 1700000000000),
        )
    )
    assert good == SourceRecord("trades", 2, 41, "binance:NKN.USDT", trade, 1700000000000)
    bad = decode(KafkaSourceMessage(b"k", b"garbage", topic="trades", partition=0, offset=5))
    assert isinstance(bad, tuple) and bad[0] == "dead_letter"
    assert bad[1]["error_type"] == "schema_violation" and bad[1]["source_offset"] == 5
