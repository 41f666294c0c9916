"""The flows' Kafka sink: each record Avro-encoded to the topic it names, under its key; misfits dead-lettered."""

from __future__ import annotations

import pytest

from connectors.avro_sink import AvroKafkaSink
from connectors.config import Settings
from connectors.kafka import ensure_topics, read_topic
from embedded.kafka import TansuBroker
from tests.support import HFTBACKTEST, envelopes, normalize

pytestmark = pytest.mark.integration


def test_records_reach_their_topics_in_order_and_a_misfit_becomes_a_dead_letter(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, dead_letter_topic="dlq")
    outs = normalize(envelopes(HFTBACKTEST, venue="binance")[:3000])
    items = [(key, (topic, record)) for key, topic, record in outs if topic in ("trades", "ticker")]
    assert {topic for _, (topic, _) in items} == {"trades", "ticker"}
    key, (_, first_trade) = next(item for item in items if item[1][0] == "trades")
    misfit = (key, ("trades", {**first_trade, "price": "not a number"}))
    ensure_topics(config, ["trades", "ticker", "dlq"])
    partition = AvroKafkaSink(config, "test_flow").build("kafka_out", 0, 1)
    partition.write_batch(items[:1000])
    partition.write_batch([*items[1000:], misfit])
    partition.close()

    for topic in ("trades", "ticker"):
        stored = read_topic(config, topic)
        assert [(r.key, r.value) for r in stored] == [(k, record) for k, (t, record) in items if t == topic]
    (dead,) = read_topic(config, "dlq")
    assert dead.key == key and dead.value["flow"] == "test_flow" and dead.value["step"] == "avro_encode"
    assert "trades" in dead.value["reason"] and dead.value["error_type"] == "schema_violation"
    assert dead.headers["dlq.error_type"] == b"schema_violation"
