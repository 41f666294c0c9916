"""A record Kafka does not take stops the producing flow with the reason; it never vanishes silently."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage

from connectors.avro_sink import AvroKafkaSink
from connectors.config import Settings
from connectors.kafka import DeliveryError, kafka_sink
from embedded.kafka import TansuBroker
from tests.support import HFTBACKTEST, envelopes, normalize, records

pytestmark = pytest.mark.integration

TRADE = records(normalize(envelopes(HFTBACKTEST, venue="binance")[:200]), "trades")[0]


def _bytewax_sink(config: Settings) -> tuple[Any, Callable[[str], Any]]:
    return kafka_sink(config, "trades").build("step", 0, 1), lambda key: KafkaSinkMessage(key.encode(), b"bytes")


def _avro_sink(config: Settings) -> tuple[Any, Callable[[str], Any]]:
    return AvroKafkaSink(config, "test").build("step", 0, 1), lambda key: (key, ("trades", TRADE))


@pytest.mark.parametrize("sink", [_bytewax_sink, _avro_sink], ids=["bytewax_kafka_sink", "avro_kafka_sink"])
def test_a_record_the_broker_never_acknowledges_stops_the_sink(
    kafka: TansuBroker, sink: Callable[[Settings], tuple[Any, Callable[[str], Any]]]
) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, kafka_delivery_timeout_ms=1000)
    partition, item = sink(config)
    partition.write_batch([item("taken")])  # acknowledged: no error
    kafka.stop()  # the broker goes away for longer than the delivery timeout
    with pytest.raises(DeliveryError, match=r"topic trades: .*timed out") as raised:
        partition.write_batch([item("never taken")])
    # The error's traceback holds the sink's frame, hence its producer, which would outlive the test dialling
    # the stopped broker.
    raised.value.__traceback__ = None
