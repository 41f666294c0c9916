"""Archive the standardized topics to object storage as Parquet, partitioned by event hour.

    python -m bytewax.run flows.archive_parquet:flow
    ARCHIVE_URL=s3://bucket/marketpipe python -m bytewax.run flows.archive_parquet:flow -w 2

Every standardized topic that exists (or those in ``ARCHIVE_PARQUET_TOPICS``) is archived to
``<ARCHIVE_URL>/<topic>/year=YYYY/month=MM/day=DD/hour=HH/<topic>-p<partition>-<first offset>-<last
offset>.parquet``, the hour being the record's ``event_timestamp``. Columns and types come from the topic's Avro
schema (`schemas.arrow`); zstd compression, row groups of ``ARCHIVE_ROW_GROUP_ROWS``. Records that cannot be
decoded go to ``dead_letter`` with the reason. Exactly-once on restart, with or without Bytewax recovery
(`connectors.archive`).
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.archive import PerWorker, RotationLimits, archive_logic_builder, log_published
from connectors.archive_config import ArchiveSettings, archive_settings
from connectors.archive_formats import FileFormat, ParquetFormat
from connectors.archive_placement import RecordPlacement
from connectors.archive_source import archive_source
from connectors.archive_store import ArchiveStore
from connectors.config import ConfigError, Settings, settings
from connectors.kafka import TopicError, existing_topics
from connectors.logs import configure_logging
from schemas import CEX_TOPICS, CHAIN_TOPICS, DEAD_LETTER, topic_names
from schemas.arrow import arrow_schema

__all__ = ["FLOW", "build", "parquet_topics"]

FLOW = "archive_parquet"


def _schema_name(config: Settings, topic: str) -> str:
    return DEAD_LETTER if topic == config.dead_letter_topic else topic


def parquet_topics(config: Settings, archive: ArchiveSettings) -> list[str]:
    """The topics to archive: the configured ones (which must exist), else every standardized one that exists."""
    present = existing_topics(config)
    configured = archive.parquet_topics
    if configured:
        unknown = [t for t in configured if _schema_name(config, t) not in topic_names()]
        if unknown:
            raise ConfigError(f"ARCHIVE_PARQUET_TOPICS: no Avro schema for {', '.join(unknown)}")
        missing = [t for t in configured if t not in present]
        if missing:
            raise TopicError(f"ARCHIVE_PARQUET_TOPICS: topics {', '.join(missing)} do not exist")
        return configured
    topics = [t for t in (*CEX_TOPICS, *CHAIN_TOPICS, config.dead_letter_topic) if t in present]
    if not topics:
        raise TopicError("none of the standardized topics exists yet: nothing to archive")
    return topics


def build(config: Settings, archive: ArchiveSettings) -> Dataflow:
    """The dataflow standardized topics -> Parquet files under ``archive.archive_url``."""
    configure_logging(FLOW, config.log_level, config.log_format)
    topics = parquet_topics(config, archive)
    store = ArchiveStore.open(archive.archive_url, archive.storage_options())
    file_formats = {
        topic: ParquetFormat(
            arrow_schema(_schema_name(config, topic)), archive.archive_row_group_rows, archive.archive_row_group_bytes
        )
        for topic in topics
    }

    def formats(topic: str) -> FileFormat:
        return file_formats[topic]

    writer = archive_logic_builder(
        store, formats, RotationLimits.from_settings(archive), PerWorker(archive.archive_max_open_files, config)
    )
    flow = Dataflow(FLOW)
    messages = op.input("topics_in", flow, archive_source(config, store, topics))
    placed = op.map("decode_and_place_by_event_hour", messages, RecordPlacement(config, FLOW))
    published = op.stateful_batch("write_files", placed, writer)
    op.inspect("log_published", published, log_published)
    return flow


def __getattr__(name: str) -> Dataflow:
    # Built on first access, so importing the module needs no Kafka.
    if name == "flow":
        return build(settings(), archive_settings())
    raise AttributeError(name)
