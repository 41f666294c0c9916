"""The normalize flow's Kafka output: produced without waiting, acknowledged when the epoch closes."""

from __future__ import annotations

import pytest
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import Producer

from connectors.avro_sink import AvroEncoder, _ProduceLogic, _worker_producer, produce_all
from connectors.config import Settings
from connectors.kafka import DeliveryError, ensure_topics, producer_config, read_topic
from embedded.kafka import TansuBroker
from operators.records import Output
from tests.support import HFTBACKTEST, envelopes, normalize

pytestmark = pytest.mark.integration

OUTPUTS = normalize(envelopes(HFTBACKTEST, venue="binance")[:3000])
TRADES = [(key, (topic, record)) for key, topic, record in OUTPUTS if topic == "trades"]


def _batches(items: list[tuple[str, Output]]) -> list[tuple[str, list[Output]]]:
    """Items as the normalize step hands them on: one list of records per key."""
    batches: dict[str, list[Output]] = {}
    for key, output in items:
        batches.setdefault(key, []).append(output)
    return list(batches.items())


def _logic(config: Settings) -> StatefulBatchLogic[tuple[str, list[Output]], None, None]:
    ensure_topics(config, ["trades", config.dead_letter_topic])
    return _ProduceLogic(_worker_producer(config, "test_flow"))


def test_the_epoch_close_waits_for_every_record_and_a_misfit_becomes_a_dead_letter(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, topic_partitions="default=4")
    logic = _logic(config)
    key, (_, first) = TRADES[0]
    misfit = (key, ("trades", {**first, "price": "not a number"}))
    logic.on_batch(_batches(TRADES[:700]))
    logic.on_batch(_batches([*TRADES[700:], misfit]))
    logic.snapshot()

    stored = read_topic(config, "trades")
    by_key: dict[str | None, list[object]] = {}
    for record in sorted(stored, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key == {k: [r for kk, (_, r) in TRADES if kk == k] for k, _ in TRADES}
    (dead,) = read_topic(config, config.dead_letter_topic)
    assert dead.value["step"] == "avro_encode" and dead.value["error_type"] == "schema_violation"
    assert logic.on_eof() == ([], StatefulBatchLogic.RETAIN)


def test_a_record_the_broker_never_acknowledges_fails_the_epoch_close(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, kafka_delivery_timeout_ms=1000, topic_partitions="default=4")
    logic = _logic(config)
    logic.on_batch(_batches(TRADES[:10]))
    logic.snapshot()
    kafka.stop()  # the broker goes away for longer than the delivery timeout
    logic.on_batch(_batches(TRADES[10:20]))  # handed on, not waited for
    with pytest.raises(DeliveryError, match=r"topic trades: .*timed out") as raised:
        logic.snapshot()
    raised.value.__traceback__ = None  # it holds the producer, which would keep dialling the stopped broker


def test_a_full_local_queue_waits_for_room_and_keeps_the_order(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, topic_partitions="default=1")
    ensure_topics(config, ["trades"])
    producer = Producer({**producer_config(config), "queue.buffering.max.messages": 5, "linger.ms": 0})
    produce_all(producer, AvroEncoder(config, "test_flow"), TRADES[:300])
    assert producer.flush(30) == 0
    assert [(r.key, r.value) for r in read_topic(config, "trades")] == [(k, r) for k, (_, r) in TRADES[:300]]
