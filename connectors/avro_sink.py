"""Standardized records to their Kafka topics, Avro-encoded where they are produced.

A flow's last step: ``(key, (topic, record))`` items in, one Kafka record each out, keyed by the instrument (or
block) key. Encoding inside the sink's loop, instead of a map step building a `KafkaSinkMessage` per record
for Bytewax's `KafkaSink`, saves a Python call and a frozen-dataclass construction per record (about a
microsecond; `python -m benchmarks --only kafka` measures the flow). The delivery guarantee is the same as
Bytewax's sink: every batch is flushed before the worker moves on, so a recovery snapshot never covers a record
Kafka has not acknowledged (at least once), and a record Kafka refuses stops the flow
(`connectors.kafka.raise_on_failed_delivery`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer

from connectors.config import Settings
from connectors.kafka import producer_config
from operators.dead_letter import SourceRef, dead_letter, dead_letter_headers
from operators.records import Output
from schemas import DEAD_LETTER
from schemas.serde import SchemaError, codec_for

__all__ = ["AvroEncoder", "AvroKafkaSink", "EncodedRecord"]


class EncodedRecord(NamedTuple):
    """One record ready for the producer."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None


class AvroEncoder:
    """Turns ``(key, (topic, record))`` into an `EncodedRecord` of the Avro-encoded record.

    A record that does not fit its schema becomes a dead letter (payload: the record as JSON), never a crash.
    Dead letters go to the configured dead-letter topic, with their reason in headers.
    """

    def __init__(self, settings: Settings, flow: str) -> None:
        self._registry_url = settings.schema_registry_url
        self._dead_letter_topic = settings.dead_letter_topic
        self._flow = flow

    def __call__(self, key_output: tuple[str, Output]) -> EncodedRecord:
        key, (topic, record) = key_output
        try:
            value = codec_for(topic, self._registry_url).encode(record)
        except SchemaError as exc:
            payload = orjson.dumps(record, default=str)
            ref = SourceRef(topic=topic, key=key.encode())
            exchange, symbol = record.get("exchange"), record.get("symbol")
            topic, record = dead_letter(
                self._flow, "avro_encode", str(exc), "schema_violation", ref, payload, exchange=exchange, symbol=symbol
            )
            value = codec_for(topic, self._registry_url).encode(record)
        if topic == DEAD_LETTER:
            return EncodedRecord(self._dead_letter_topic, key.encode(), value, dead_letter_headers(record))
        return EncodedRecord(topic, key.encode(), value, None)


class _AvroKafkaPartition(StatelessSinkPartition[tuple[str, Output]]):
    def __init__(self, producer: Any, encode: AvroEncoder) -> None:
        self._producer = producer
        self._encode = encode

    def write_batch(self, items: list[tuple[str, Output]]) -> None:
        produce, poll, encode = self._producer.produce, self._producer.poll, self._encode
        for item in items:
            topic, key, value, headers = encode(item)
            produce(topic, value, key, headers=headers)
            poll(0)  # serves delivery reports (a refused record raises here) and keeps the local queue short
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()


class AvroKafkaSink(DynamicSink[tuple[str, Output]]):
    """Each worker's own producer; records go to the topic each item names, dead letters to DEAD_LETTER_TOPIC."""

    def __init__(self, settings: Settings, flow: str) -> None:
        self._settings = settings
        self._flow = flow

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AvroKafkaPartition:
        return _AvroKafkaPartition(Producer(producer_config(self._settings)), AvroEncoder(self._settings, self._flow))
