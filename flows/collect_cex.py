"""Collect exchange websockets into ``raw``, in exactly the envelopes ``flows/replay.py`` produces.

    python -m bytewax.run flows.collect_cex:flow                      # every venue, its default instruments
    COLLECTOR_CONFIG=collector.toml python -m bytewax.run flows.collect_cex:flow -w 2
    python -m bytewax.run "flows.collect_cex:collect('collector.toml')"

Each planned connection (``connectors/collector/plan.py``) is one input partition, so workers and processes
share the connections. Frames are stamped with their receipt time, attributed to instruments by the venue's
framer and produced with key ``<exchange>:<symbol>``; reconnects produce ``control`` envelopes so that books
are rebuilt. A frame the framer fails on goes to ``dead_letter`` with the reason.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.avro_sink import AvroKafkaSink
from connectors.collector.config import load_selections
from connectors.collector.connection import ConnectionOptions
from connectors.collector.messages import COLLECTOR_FLOW, keyed_dead_letter, raw_envelope, raw_message
from connectors.collector.plan import plan_collection
from connectors.collector.settings import CollectorSettings, collector_settings, load_collector_settings
from connectors.collector.source import VenueSource
from connectors.config import Settings, settings
from connectors.kafka import ensure_topics, kafka_sink
from connectors.logs import configure_logging

__all__ = ["build", "collect"]


def build(config: Settings, collector: CollectorSettings) -> Dataflow:
    """The collector dataflow: validates the configuration and resolves instruments before connecting."""
    configure_logging(COLLECTOR_FLOW, config.log_level, config.log_format)
    plans = plan_collection(load_selections(collector), collector)
    ensure_topics(config, [config.raw_topic, config.dead_letter_topic])
    flow = Dataflow(COLLECTOR_FLOW)
    collected = op.input("venues_in", flow, VenueSource(plans, ConnectionOptions.from_settings(collector)))
    envelopes = op.filter_map("envelopes", collected, raw_envelope)
    messages = op.map("to_raw_message", envelopes, raw_message)
    op.output("raw_out", messages, kafka_sink(config, config.raw_topic))
    rejected = op.filter_map("dead_letters", collected, keyed_dead_letter)
    op.output("dead_letter_out", rejected, AvroKafkaSink(config, COLLECTOR_FLOW))
    return flow


def collect(config_path: str) -> Dataflow:
    """Collect what the TOML or JSON file ``config_path`` names (other settings from the environment)."""
    return build(settings(), load_collector_settings(collector_config=config_path))


def __getattr__(name: str) -> Dataflow:
    # Built on first access, so importing the module needs neither Kafka nor the venues.
    if name == "flow":
        return build(settings(), collector_settings())
    raise AttributeError(name)
