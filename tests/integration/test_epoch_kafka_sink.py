"""The normalize flows' Kafka sink: produced without waiting, acknowledged when the epoch closes."""

from __future__ import annotations

import pytest
from bytewax.outputs import StatefulSinkPartition
from confluent_kafka import Producer

from connectors.avro_sink import AvroEncoder, EpochAvroKafkaSink, produce_all
from connectors.config import Settings
from connectors.input_aligned import InputPartitionKey
from connectors.kafka import DeliveryError, ensure_topics, producer_config, read_topic
from embedded.kafka import TansuBroker
from operators.records import Output
from tests.support import HFTBACKTEST, envelopes, normalize

pytestmark = pytest.mark.integration

OUTPUTS = normalize(envelopes(HFTBACKTEST, venue="binance")[:3000])
TRADES = [(key, (topic, record)) for key, topic, record in OUTPUTS if topic == "trades"]


def _part(config: Settings) -> StatefulSinkPartition[tuple[str, Output], None]:
    ensure_topics(config, ["raw", "trades", config.dead_letter_topic])
    sink = EpochAvroKafkaSink(config, "test_flow", ["raw"])
    assert sorted(sink.list_parts()) == [f"{p}-raw" for p in range(4)]
    return sink.build_part("kafka_out", "0-raw", None)


def test_the_epoch_close_waits_for_every_record_and_a_misfit_becomes_a_dead_letter(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, topic_partitions="default=4")
    part = _part(config)
    key, (_, first) = TRADES[0]
    misfit = (key, ("trades", {**first, "price": "not a number"}))
    part.write_batch(TRADES[:700])
    part.write_batch([*TRADES[700:], misfit])
    part.snapshot()

    stored = read_topic(config, "trades")
    by_key: dict[str | None, list[object]] = {}
    for record in sorted(stored, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key == {k: [r for kk, (_, r) in TRADES if kk == k] for k, _ in TRADES}
    (dead,) = read_topic(config, config.dead_letter_topic)
    assert dead.value["step"] == "avro_encode" and dead.value["error_type"] == "schema_violation"
    part.close()


def test_a_record_the_broker_never_acknowledges_fails_the_epoch_close(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, kafka_delivery_timeout_ms=1000, topic_partitions="default=4")
    part = _part(config)
    part.write_batch(TRADES[:10])
    part.snapshot()
    kafka.stop()  # the broker goes away for longer than the delivery timeout
    part.write_batch(TRADES[10:20])  # handed on, not waited for
    with pytest.raises(DeliveryError, match=r"topic trades: .*timed out") as raised:
        part.snapshot()
    raised.value.__traceback__ = None  # it holds the producer, which would keep dialling the stopped broker


def test_a_full_local_queue_waits_for_room_and_keeps_the_order(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, topic_partitions="default=1")
    ensure_topics(config, ["trades"])
    producer = Producer({**producer_config(config), "queue.buffering.max.messages": 5, "linger.ms": 0})
    produce_all(producer, AvroEncoder(config, "test_flow"), TRADES[:300])
    assert producer.flush(30) == 0
    assert [(r.key, r.value) for r in read_topic(config, "trades")] == [(k, r) for k, (_, r) in TRADES[:300]]


def test_items_are_keyed_by_the_partition_librdkafka_gives_their_key(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, topic_partitions="default=6")
    ensure_topics(config, ["raw"])
    keys = sorted({key for key, _, _ in OUTPUTS} | {f"binance:{base}.USDT" for base in ("BTC", "ETH", "SOL", "XRP")})
    producer = Producer(producer_config(config))
    for key in keys:
        producer.produce("raw", b"{}", key.encode())
    assert producer.flush(30) == 0
    produced = {record.key: f"{record.partition}-raw" for record in read_topic(config, "raw", decode=False)}
    by_partition = InputPartitionKey[str]("raw", 6)
    assert {key: by_partition((key, "value"))[0] for key in keys} == produced
    assert len(set(produced.values())) > 1
