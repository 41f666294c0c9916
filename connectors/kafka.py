"""Kafka plumbing on top of confluent-kafka and Bytewax's Kafka connector: topics, sources, Avro sinks.

Topic existence is checked by listing the whole cluster's metadata (a metadata request naming a topic makes
some brokers, Tansu among them, create it on the spot, so it proves nothing).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from bytewax.connectors.kafka import KafkaError, KafkaSink, KafkaSource, KafkaSourceMessage
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka import KafkaError as BrokerError
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.config import FIRST_OFFSET, Settings
from operators.dead_letter import SourceRef, dead_letter, dead_letter_headers
from operators.records import Output
from schemas.serde import SchemaError, codec_for

__all__ = [
    "AvroDecoder",
    "DeadLetterProducer",
    "DeliveryError",
    "SourceRecord",
    "TopicError",
    "TopicRecord",
    "ensure_topics",
    "existing_topics",
    "kafka_sink",
    "producer_config",
    "raise_on_failed_delivery",
    "raw_source",
    "read_topic",
]

#: Producer settings for throughput with per-key order kept (idempotence keeps order across retries).
PRODUCER_CONFIG = {
    "linger.ms": "20",
    "batch.num.messages": "10000",
    "compression.type": "lz4",
    "enable.idempotence": "true",
}


class TopicError(RuntimeError):
    """A topic that should exist does not, or cannot be created."""


class DeliveryError(RuntimeError):
    """Kafka refused a record for good (after the producer's own retries)."""


def raise_on_failed_delivery(err: BrokerError | None, msg: Any) -> None:
    """A producer's ``on_delivery``: a record Kafka did not take stops the flow (raised from poll/flush).

    Without it a refused record would vanish silently; stopped instead, the flow restarts from its last
    recovery snapshot and produces the record again.
    """
    if err is not None:
        raise DeliveryError(f"Kafka did not take a record for topic {msg.topic()}: {err}")


def admin(settings: Settings) -> AdminClient:
    config: dict[str, Any] = dict(settings.kafka_client_config())
    return AdminClient(config)


def existing_topics(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Topic -> partition count for every topic the cluster really has."""
    metadata = admin(settings).list_topics(timeout=timeout)
    return {name: len(meta.partitions) for name, meta in metadata.topics.items() if meta.error is None}


def ensure_topics(settings: Settings, topics: Iterable[str], timeout: float = 30.0) -> dict[str, int]:
    """Create missing topics with the configured partition counts; returns topic -> partitions for them all."""
    wanted = list(dict.fromkeys(topics))
    have = existing_topics(settings)
    missing = [t for t in wanted if t not in have]
    if missing:
        client = admin(settings)  # must outlive the futures below
        futures = client.create_topics(
            [
                NewTopic(
                    t,
                    settings.partitions_for(t),
                    settings.topic_replication,
                    config={"max.message.bytes": str(settings.kafka_max_message_bytes)},
                )
                for t in missing
            ],
            operation_timeout=timeout,
        )
        for topic, future in futures.items():
            try:
                future.result(timeout)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TopicError(f"cannot create topic {topic}: {exc}") from exc
        have = existing_topics(settings)
    absent = [t for t in wanted if t not in have]
    if absent:
        raise TopicError(f"topics {', '.join(absent)} do not exist after creation")
    return {t: have[t] for t in wanted}


def raw_source(settings: Settings, topics: list[str]) -> KafkaSource:
    """Bytewax KafkaSource over ``topics``; offsets live in Bytewax's recovery store, not a consumer group."""
    return KafkaSource(
        settings.brokers,
        topics,
        tail=not settings.kafka_stop_at_end,
        starting_offset=FIRST_OFFSET,
        add_config=settings.kafka_consumer_config(),
        batch_size=settings.consumer_batch_size,
        raise_on_errors=False,
    )


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of every producer: the cluster, throughput settings, size and delivery limits, and
    `raise_on_failed_delivery` (librdkafka passes Python callbacks through its config)."""
    return {
        **settings.kafka_client_config(),
        **PRODUCER_CONFIG,
        "message.max.bytes": str(settings.kafka_max_message_bytes),
        "message.timeout.ms": str(settings.kafka_delivery_timeout_ms),
        "on_delivery": raise_on_failed_delivery,
    }


def kafka_sink(settings: Settings, topic: str | None = None) -> KafkaSink:
    """KafkaSink (at-least-once) to ``topic``, or to the topic each message names when None."""
    return KafkaSink(settings.brokers, topic, add_config=cast(dict[str, str], producer_config(settings)))


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record read back from a topic."""

    key: str | None
    partition: int
    offset: int
    value: Any
    headers: dict[str, bytes]


def _topic_record(msg: Any, codec: Any) -> TopicRecord:
    raw = msg.value() or b""
    key = msg.key()
    return TopicRecord(
        key=key.decode() if key is not None else None,
        partition=int(msg.partition()),
        offset=int(msg.offset()),
        value=codec.decode(raw) if codec is not None else raw,
        headers=dict(msg.headers() or []),
    )


def read_topic(
    settings: Settings, topic: str, decode: bool = True, timeout: float = 30.0, idle: float = 1.0
) -> list[TopicRecord]:
    """Every record currently in ``topic``, Avro-decoded unless ``decode`` is False.

    Reads past the high watermarks until a poll of ``idle`` seconds brings nothing: some brokers (Tansu)
    report the base offset of the last record batch as the high watermark, so it is a floor, not the end, and
    a partition holding a single batch looks empty (its watermark equals its low offset): every partition is
    read, whatever its watermark says.
    """
    consumer = Consumer(
        {
            **settings.kafka_consumer_config(),
            "fetch.error.backoff.ms": "50",
            "group.id": "marketpipe-reader",
            "enable.auto.commit": "false",
            "enable.partition.eof": "false",
        }
    )
    try:
        metadata = consumer.list_topics(timeout=timeout)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise TopicError(f"topic {topic} does not exist")
        floors: dict[int, int] = {}
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            floors[partition] = high if high > low else -1  # -1: empty, or (Tansu) one batch that starts at low
        consumer.assign([TopicPartition(topic, p, FIRST_OFFSET) for p in floors])
        schema_topic = "dead_letter" if topic == settings.dead_letter_topic else topic
        codec = codec_for(schema_topic, settings.schema_registry_url) if decode else None
        pending = {partition for partition, floor in floors.items() if floor >= 0}
        # The end is where two polls in a row bring nothing (watermarks only say where to wait for them).
        quiet_polls_needed = 2
        quiet_polls = 0
        out: list[TopicRecord] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, idle)
            quiet_polls = 0 if batch else quiet_polls + 1
            for msg in batch:
                if msg.error() is None:
                    record = _topic_record(msg, codec)
                    out.append(record)
                    if record.offset + 1 >= floors[record.partition]:
                        pending.discard(record.partition)
            if quiet_polls >= quiet_polls_needed and not pending:
                return out
        raise TopicError(f"timed out reading {topic}: partitions {sorted(pending)} not read to their ends")
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A standardized record read from Kafka, with its coordinates (for idempotent sinks and gap detection)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]
    timestamp_ms: int | None = None


class AvroDecoder:
    """Turns a Bytewax KafkaSourceMessage of a standardized topic into a `SourceRecord`, or a dead letter.

    Sinks use it as their first step: bytes that are not a record of the topic's schema never stop a flow.
    """

    def __init__(self, settings: Settings, flow: str) -> None:
        self._registry_url = settings.schema_registry_url
        self._dead_letter_topic = settings.dead_letter_topic
        self._flow = flow

    def __call__(
        self, msg: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]
    ) -> SourceRecord | Output:
        if isinstance(msg, KafkaError):
            src = msg.msg
            ref = SourceRef(src.topic, src.partition, src.offset, src.key, src.value)
            return dead_letter(
                self._flow, "kafka_in", f"Kafka consume error: {msg.err}", "kafka_error", ref, src.value or b""
            )
        topic = msg.topic or ""
        key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        value = msg.value or b""
        schema = "dead_letter" if topic == self._dead_letter_topic else topic
        try:
            record = codec_for(schema, self._registry_url).decode(value)
        except (SchemaError, KeyError) as exc:
            ref = SourceRef(topic, msg.partition, msg.offset, msg.key, value)
            return dead_letter(self._flow, "avro_decode", str(exc), "schema_violation", ref, value)
        timestamp = msg.timestamp[1] if msg.timestamp and msg.timestamp[1] >= 0 else None
        return SourceRecord(topic, msg.partition or 0, msg.offset or 0, key, record, timestamp)


class DeadLetterProducer:
    """Produces dead letters from flows whose sink is not Kafka (Postgres, object storage)."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.dead_letter_topic
        self._codec = codec_for("dead_letter", settings.schema_registry_url)
        self._producer = Producer(producer_config(settings))

    def send(self, dead: Output, key: str | None = None) -> None:
        _, record = dead
        self._producer.produce(
            self._topic,
            key=key.encode() if key else record["key"],
            value=self._codec.encode(record),
            headers=cast(Any, dead_letter_headers(record)),
        )
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter is acknowledged; raises TopicError if some are not."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise TopicError(f"{remaining} dead letters not acknowledged by Kafka within {timeout}s")
