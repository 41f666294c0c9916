"""A record Kafka does not take stops the producing flow with the reason; it never vanishes silently."""

from __future__ import annotations

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage

from connectors.config import Settings
from connectors.kafka import DeliveryError, kafka_sink
from embedded.kafka import TansuBroker

pytestmark = pytest.mark.integration


def test_a_record_the_broker_never_acknowledges_stops_the_sink(kafka: TansuBroker) -> None:
    config = Settings(kafka_brokers=kafka.bootstrap, kafka_delivery_timeout_ms=1000)
    partition = kafka_sink(config, "deliveries").build("step", 0, 1)
    partition.write_batch([KafkaSinkMessage(key=b"k", value=b"taken")])  # acknowledged: no error
    kafka.stop()  # the broker goes away for longer than the delivery timeout
    with pytest.raises(DeliveryError, match=r"topic deliveries: .*timed out") as raised:
        partition.write_batch([KafkaSinkMessage(key=b"k", value=b"never taken")])
    # The error's traceback holds the sink's frame, hence its producer, which would outlive the test dialling
    # the stopped broker.
    raised.value.__traceback__ = None
