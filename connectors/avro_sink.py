"""Standardized records to their Kafka topics, Avro-encoded where they are produced.

A flow's last step: ``(key, (topic, record))`` items in, one Kafka record each out, keyed by the instrument (or
block) key. Encoding inside the sink's loop, instead of a map step building a `KafkaSinkMessage` per record
for Bytewax's `KafkaSink`, saves a Python call and a frozen-dataclass construction per record (about a
microsecond; `python -m benchmarks --only kafka` measures the flow). A record Kafka refuses stops the flow
(`connectors.kafka.raise_on_failed_delivery`), and a recovery snapshot never covers a record Kafka has not
acknowledged (at least once). Two sinks keep that promise two ways:

* `produce_avro`, for ``normalize_cex``, whose records leave its keyed step as one list per instrument and batch
  (``(key, [(topic, record), ...])``): records are produced without waiting, and acknowledged when the epoch
  closes, before its input offsets can commit.
* `AvroKafkaSink`, for the rest (``normalize_evm``, collectors, dead letters): every batch is acknowledged before
  the next, as Bytewax's own `KafkaSink` does.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import bytewax.operators as op
import orjson
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer

from connectors.config import Settings
from connectors.kafka import producer_config
from connectors.worker_local import WorkerLocal
from operators.dead_letter import SourceRef, dead_letter, dead_letter_headers
from operators.records import Output
from schemas import DEAD_LETTER
from schemas.serde import SchemaError, codec_for

__all__ = ["AvroEncoder", "AvroKafkaSink", "EncodedRecord", "produce_all", "produce_avro"]

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


class _ProduceLogic(StatefulBatchLogic[tuple[str, list[Output]], None, None]):
    """One key's batches of records, produced as they come; acknowledged by Kafka before Bytewax snapshots the key."""

    def __init__(self, worker: _WorkerProducer) -> None:
        self._producer = worker.producer
        self._encode = worker.encode

    def on_batch(self, values: list[tuple[str, list[Output]]]) -> tuple[list[None], bool]:
        produce_all(self._producer, self._encode, [(key, output) for key, outputs in values for output in outputs])
        return [], StatefulBatchLogic.RETAIN  # retained, so the epoch's close calls `snapshot`

    def on_eof(self) -> tuple[list[None], bool]:
        self._producer.flush()
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        """Called at the close of each epoch this key had records in, before the epoch can commit."""
        self._producer.flush()


def _with_key(item: tuple[str, list[Output]]) -> tuple[str, tuple[str, list[Output]]]:
    return item[0], item


@operator
def produce_avro(step_id: str, up: KeyedStream[list[Output]], settings: Settings, flow: str) -> None:
    """Produce ``(key, [(topic, record), ...])`` batches to Kafka, acknowledged by epoch instead of by batch.

    For flows whose records come out of a keyed stateful step (``normalize_cex``): a keyed step of its own, so each
    key's records are produced by the worker that made them (a partitioned sink would move them between
    workers, and between processes). Each worker has one producer; Bytewax snapshots every key that had records
    when an epoch closes, before the epoch's input offsets can commit, and the snapshot waits for Kafka's
    acknowledgments: at least once, as with a flush per batch, without stopping the flow for a broker round
    trip every 1024 records. A record Kafka refuses stops the flow there.
    """
    producers = WorkerLocal(partial(_worker_producer, settings, flow))
    keyed = op.map("with_key", up, _with_key)
    produced = op.stateful_batch("produce", keyed, lambda _resume: _ProduceLogic(producers.get()))
    op.inspect("acknowledged", produced)  # nothing comes out; Bytewax wants every flow to end in a step like it


def _worker_producer(settings: Settings, flow: str) -> _WorkerProducer:
    return _WorkerProducer(Producer(producer_config(settings)), AvroEncoder(settings, flow))
