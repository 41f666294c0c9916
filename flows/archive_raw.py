"""Archive ``raw`` to object storage: compressed JSON Lines, one Kafka value per line, by exchange and hour.

    python -m bytewax.run flows.archive_raw:flow
    ARCHIVE_URL=s3://bucket/marketpipe python -m bytewax.run flows.archive_raw:flow -w 2

Files land at ``<ARCHIVE_URL>/raw/exchange=<x>/year=YYYY/month=MM/day=DD/hour=HH/raw-p<partition>-<first
offset>-<last offset>.jsonl.zst`` (or ``.jsonl.gz``), the hour being the envelope's receipt time. Values that are
not valid envelopes are kept under ``exchange=_invalid`` with the reason (`connectors.archive_placement`).
Exactly-once on restart, with or without Bytewax recovery (`connectors.archive`).
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.archive import PerWorker, RotationLimits, archive_logic_builder, log_published
from connectors.archive_config import ArchiveSettings, archive_settings
from connectors.archive_formats import FileFormat, JsonLinesFormat
from connectors.archive_placement import RawPlacement
from connectors.archive_source import archive_source
from connectors.archive_store import ArchiveStore
from connectors.config import Settings, settings
from connectors.kafka import ensure_topics
from connectors.logs import configure_logging

__all__ = ["FLOW", "build"]

FLOW = "archive_raw"


def build(config: Settings, archive: ArchiveSettings) -> Dataflow:
    """The dataflow ``raw`` -> JSON Lines files under ``archive.archive_url``."""
    configure_logging(FLOW, config.log_level, config.log_format)
    ensure_topics(config, [config.raw_topic])
    store = ArchiveStore.open(archive.archive_url, archive.storage_options())
    file_format = JsonLinesFormat(archive.archive_raw_compression)

    def formats(topic: str) -> FileFormat:
        return file_format

    writer = archive_logic_builder(
        store, formats, RotationLimits.from_settings(archive), PerWorker(archive.archive_max_open_files, config)
    )
    flow = Dataflow(FLOW)
    messages = op.input("raw_in", flow, archive_source(config, store, [config.raw_topic]))
    placed = op.map("place_by_exchange_and_receipt_hour", messages, RawPlacement(FLOW))
    published = op.stateful_batch("write_files", placed, writer)
    op.inspect("log_published", published, log_published)
    return flow


def __getattr__(name: str) -> Dataflow:
    # Built on first access, so importing the module needs no Kafka.
    if name == "flow":
        return build(settings(), archive_settings())
    raise AttributeError(name)
