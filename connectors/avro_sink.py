"""Standardized records to their Kafka topics, Avro-encoded where they are produced.

A flow's last step: ``(key, (topic, record))`` items in, one Kafka record each out, keyed by the instrument (or
block) key. Encoding inside the sink's loop, instead of a map step building a `KafkaSinkMessage` per record
for Bytewax's `KafkaSink`, saves a Python call and a frozen-dataclass construction per record (about a
microsecond; `python -m benchmarks --only kafka` measures the flow). A record Kafka refuses stops the flow
(`connectors.kafka.raise_on_failed_delivery`), and a recovery snapshot never covers a record Kafka has not
acknowledged (at least once). Two sinks keep that promise two ways:

* `EpochAvroKafkaSink`, for the flows that read Kafka: records are produced without waiting, and acknowledged
  when the epoch closes, before its input offsets can commit.
* `AvroKafkaSink`, for the rest (collectors, dead letters): every batch is acknowledged before the next, as
  Bytewax's own `KafkaSink` does.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import orjson
from bytewax.outputs import DynamicSink, StatefulSinkPartition, StatelessSinkPartition
from confluent_kafka import Producer

from connectors.config import Settings
from connectors.input_aligned import InputAlignedSink, SharedPerWorker
from connectors.kafka import producer_config
from operators.dead_letter import SourceRef, dead_letter, dead_letter_headers
from operators.records import Output
from schemas import DEAD_LETTER
from schemas.serde import SchemaError, codec_for

__all__ = ["AvroEncoder", "AvroKafkaSink", "EncodedRecord", "EpochAvroKafkaSink", "produce_all"]

#: How long a producer whose local queue is full serves deliveries before trying again.
QUEUE_FULL_WAIT_S = 0.05


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


def produce_all(producer: Any, encode: AvroEncoder, items: list[tuple[str, Output]]) -> None:
    """Encode and produce ``items`` without waiting for Kafka; a full local queue waits for room."""
    produce, poll = producer.produce, producer.poll
    for item in items:
        topic, key, value, headers = encode(item)
        while True:
            try:
                produce(topic, value, key, headers=headers)
                break
            except BufferError:
                poll(QUEUE_FULL_WAIT_S)
        poll(0)  # serves delivery reports (a refused record raises here) and keeps the local queue short


class _AvroKafkaPartition(StatelessSinkPartition[tuple[str, Output]]):
    def __init__(self, producer: Any, encode: AvroEncoder) -> None:
        self._producer = producer
        self._encode = encode

    def write_batch(self, items: list[tuple[str, Output]]) -> None:
        produce_all(self._producer, self._encode, items)
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()


class AvroKafkaSink(DynamicSink[tuple[str, Output]]):
    """Each worker's own producer; records go to the topic each item names, dead letters to DEAD_LETTER_TOPIC.

    Every batch is acknowledged before the next: for flows whose input is not Kafka (collectors) or that
    produce only dead letters.
    """

    def __init__(self, settings: Settings, flow: str) -> None:
        self._settings = settings
        self._flow = flow

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AvroKafkaPartition:
        return _AvroKafkaPartition(Producer(producer_config(self._settings)), AvroEncoder(self._settings, self._flow))


class _WorkerProducer(NamedTuple):
    producer: Any
    encode: AvroEncoder


class _EpochPartition(StatefulSinkPartition[tuple[str, Output], None]):
    def __init__(self, producers: SharedPerWorker[_WorkerProducer]) -> None:
        self._producers = producers
        self._producer, self._encode = producers.acquire()

    def write_batch(self, values: list[tuple[str, Output]]) -> None:
        produce_all(self._producer, self._encode, values)

    def snapshot(self) -> None:
        """Called at the close of each epoch this partition wrote in: Kafka acknowledges the epoch's records."""
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._producers.release()


class EpochAvroKafkaSink(InputAlignedSink[tuple[str, Output]]):
    """`AvroKafkaSink` for flows reading ``input_topics``: records are acknowledged by epoch, not by batch.

    Its partitions are the flow's input partitions, and items come keyed by one of them (`InputPartitionKey`:
    the partition the item's key is produced to), so an item read and normalized on one worker is written
    there too. Each worker's partitions share one producer, which Bytewax's ``snapshot`` flushes when an epoch
    closes, before the epoch's input offsets can commit: at least once, as with a flush per batch, without
    stopping the flow for a broker round trip every 1024 records.
    """

    def __init__(self, settings: Settings, flow: str, input_topics: list[str]) -> None:
        super().__init__(settings, input_topics)
        self._producers = SharedPerWorker(partial(_worker_producer, settings, flow), lambda held: held.producer.flush())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _EpochPartition:
        return _EpochPartition(self._producers)


def _worker_producer(settings: Settings, flow: str) -> _WorkerProducer:
    return _WorkerProducer(Producer(producer_config(settings)), AvroEncoder(settings, flow))
