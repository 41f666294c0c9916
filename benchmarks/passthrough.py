"""The Kafka baseline flow: the raw topic copied to another topic, bytes untouched, through Bytewax.

    PASSTHROUGH_TOPIC=raw_copy python -m bytewax.run benchmarks.passthrough:flow

Same source (``connectors.kafka.raw_source``: Bytewax KafkaSource, the configured batch size, stop at end) and
same sink (``connectors.kafka.kafka_sink``: Bytewax KafkaSink with the pipeline's producer settings) as
``flows.normalize_cex``; in between, each message's key and value are handed over as they are. What the
normalize flow costs beyond this is its own work.
"""

from __future__ import annotations

import os

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow

from connectors.config import Settings, settings
from connectors.kafka import ensure_topics, kafka_sink, raw_source

__all__ = ["build"]

DEFAULT_TOPIC = "raw_copy"


def _untouched(
    msg: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None],
) -> KafkaSinkMessage[bytes | None, bytes | None]:
    src = msg.msg if isinstance(msg, KafkaError) else msg
    return KafkaSinkMessage(src.key, src.value)


def build(config: Settings, topic: str) -> Dataflow:
    ensure_topics(config, [config.raw_topic, topic])
    flow = Dataflow("passthrough")
    raw = op.input("raw_in", flow, raw_source(config, [config.raw_topic]))
    messages = op.map("untouched", raw, _untouched)
    op.output("kafka_out", messages, kafka_sink(config, topic))
    return flow


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return build(settings(), os.environ.get("PASSTHROUGH_TOPIC", DEFAULT_TOPIC))
    raise AttributeError(name)
