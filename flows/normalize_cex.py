"""Normalize exchange data: ``raw`` -> per-instrument state -> standardized Avro topics.

    python -m bytewax.run flows.normalize_cex:flow -r RECOVERY_DIR -s 5 -b 30
    python -m bytewax.run "flows.normalize_cex:offline('CAPTURE', 'OUT.jsonl')"
    python -m bytewax.run "flows.normalize_cex:offline('CAPTURE.gz', 'OUT.jsonl', venue='binance')"

The Kafka flow reads ``raw`` (keyed ``<exchange>:<symbol>``), keeps one normalizer per instrument key, writes
``trades``, ``lob``, ``ticker``, ``candles``, ``funding``, ``open_interest`` and ``liquidations`` with the same key,
and sends input it cannot use to ``dead_letter`` with the reason. Offline mode runs the same step over a
capture file and writes one JSON object per record: ``{"topic": .., "key": .., "value": {..}}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSink
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow

from connectors.avro_sink import produce_avro
from connectors.capture import CaptureSource, detect_venue, read_capture
from connectors.config import Settings, settings
from connectors.kafka import ensure_topics, raw_source
from connectors.logs import configure_logging
from operators.dead_letter import SourceRef
from operators.normalize import (
    FLOW,
    ConsumeError,
    Item,
    batched_logic_builder,
    group_by_key,
    key_raw_record,
    logic_builder,
)
from operators.records import Output
from operators.venues.base import NormalizerSettings
from schemas import CEX_TOPICS
from schemas.raw import RawEnvelope

__all__ = ["build", "offline"]


def _normalizer_settings(config: Settings) -> NormalizerSettings:
    return NormalizerSettings(snapshot_interval_us=int(config.book_snapshot_interval_s * 1_000_000))


def _key_raw(
    msg: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None],
) -> tuple[str, Item]:
    if isinstance(msg, KafkaError):
        src = msg.msg
        ref = SourceRef(src.topic, src.partition, src.offset, src.key, src.value)
        return (src.key or b"").decode("utf-8", "replace"), ConsumeError(ref, f"Kafka consume error: {msg.err}")
    return key_raw_record(SourceRef(msg.topic, msg.partition, msg.offset, msg.key, msg.value))


def _key_raw_batch(
    msgs: list[KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]],
) -> list[tuple[str, list[Item]]]:
    return group_by_key(_key_raw(msg) for msg in msgs)


def build(config: Settings) -> Dataflow:
    """The Kafka dataflow; creates the topics it uses if they are missing."""
    configure_logging(FLOW, config.log_level, config.log_format)
    ensure_topics(config, [config.raw_topic, *CEX_TOPICS, config.dead_letter_topic])
    flow = Dataflow(FLOW)
    raw = op.input("raw_in", flow, raw_source(config, [config.raw_topic]))
    keyed = op.flat_map_batch("key_by_instrument", raw, _key_raw_batch)
    normalized = op.stateful_batch("normalize", keyed, batched_logic_builder(_normalizer_settings(config)))
    produce_avro("kafka_out", normalized, config, FLOW)
    return flow


def _json_default(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")  # Avro's JSON encoding of bytes: one code point per byte
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _to_json_line(key_output: tuple[str, Output]) -> tuple[str, str]:
    key, (topic, record) = key_output
    line = orjson.dumps({"topic": topic, "key": key, "value": record}, default=_json_default)
    return key, line.decode()


def offline(capture_path: str, out_path: str, venue: str | None = None) -> Dataflow:
    """The same normalize step over a capture file, writing JSON Lines to ``out_path``, no Kafka."""
    header, _ = read_capture(capture_path)
    spec = detect_venue(header, venue)
    source_name = f"capture:{Path(capture_path).name}"

    def keyed(env: RawEnvelope) -> tuple[str, Item]:
        return env.key, (env, SourceRef(topic=source_name))

    flow = Dataflow(f"{FLOW}_offline")
    envelopes = op.input("capture_in", flow, CaptureSource([capture_path], spec.name))
    items = op.map("key_by_instrument", envelopes, keyed)
    normalized = op.stateful_batch("normalize", items, logic_builder(_normalizer_settings(settings())))
    lines = op.map("to_json_line", normalized, _to_json_line)
    op.output("jsonl_out", lines, FileSink(Path(out_path)))
    return flow


def __getattr__(name: str) -> Dataflow:
    # ``flows.normalize_cex:flow`` is built on first access, so importing the module for offline mode or
    # tests needs no Kafka.
    if name == "flow":
        return build(settings())
    raise AttributeError(name)
