"""Load the standardized topics into Postgres: one table per topic, created from its Avro schema.

    python -m bytewax.recovery /var/lib/marketpipe/load_postgres 1       # once
    DATABASE_URL=postgresql://loader@db:5432/market \\
        python -m bytewax.run flows.load_postgres:flow -r /var/lib/marketpipe/load_postgres -s 5 -b 0

Reads every standardized topic (``trades``, ``lob``, ``ticker``, ``candles``, ``funding``, ``open_interest``,
``liquidations``, ``dead_letter``, and the chain topics that exist), or those ``POSTGRES_TOPICS`` names, and
writes each record to its table in batches of at most ``POSTGRES_BATCH_SIZE`` (<= 1000) rows. Replays are
idempotent (see `schemas.sql` for each table's key), a database outage holds the stream until the database is
back, and rows the database rejects go to ``dead_letter`` with its reason (`connectors.postgres_sink`).
"""

from __future__ import annotations

from functools import partial
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.avro_sink import AvroKafkaSink
from connectors.kafka import AvroDecoder, SourceRecord, raw_source
from connectors.logs import configure_logging
from connectors.metrics import RECORDS_IN, count_outputs
from connectors.postgres_config import PostgresLoaderSettings, loader_settings
from connectors.postgres_retry import Backoff, retry_transient
from connectors.postgres_sink import PostgresSink, partition_key
from connectors.postgres_tables import create_engine, define_tables, loader_topics, prepare_tables
from operators.records import Output

__all__ = ["FLOW", "build"]

FLOW = "load_postgres"


def _is_record(item: SourceRecord | Output) -> TypeGuard[SourceRecord]:
    return isinstance(item, SourceRecord)


def _keyed_dead_letter(dead: Any) -> tuple[str, Output]:
    RECORDS_IN.labels(FLOW).inc()
    count_outputs(FLOW, [dead])
    key = dead[1]["key"]
    return (key.decode("utf-8", "replace") if key else ""), dead


def _create_tables(config: PostgresLoaderSettings, topics: list[str]) -> None:
    """Create or evolve the tables before reading anything, waiting for the database if it is away."""
    engine = create_engine(config)
    try:
        backoff = Backoff(config.postgres_retry_min_s, config.postgres_retry_max_s)
        tables = define_tables(config, topics)
        retry_transient(partial(prepare_tables, engine, tables), backoff, "table creation", FLOW)
    finally:
        engine.dispose()


def build(config: PostgresLoaderSettings) -> Dataflow:
    """The loader dataflow; creates its topics and tables if they are missing."""
    configure_logging(FLOW, config.log_level, config.log_format)
    config.engine_url()  # a missing DATABASE_URL stops the flow here, before Kafka is touched
    topics = loader_topics(config)
    _create_tables(config, topics)
    flow = Dataflow(FLOW)
    messages = op.input("kafka_in", flow, raw_source(config, topics))
    decoded = op.map("avro_decode", messages, AvroDecoder(config, FLOW))
    split = op.branch("split_undecodable", decoded, _is_record)
    by_partition = op.map("key_by_partition", split.trues, partition_key)
    op.output("postgres_out", by_partition, PostgresSink(config, topics, FLOW))
    undecodable = op.map("key_dead_letters", split.falses, _keyed_dead_letter)
    op.output("dead_letter_out", undecodable, AvroKafkaSink(config, FLOW))
    return flow


def __getattr__(name: str) -> Dataflow:
    # ``flows.load_postgres:flow`` is built on first access, so importing the module needs no Kafka or database.
    if name == "flow":
        return build(loader_settings())
    raise AttributeError(name)
