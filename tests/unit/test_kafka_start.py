"""Where the flows' Kafka inputs start a partition they have no position for.

Offset 0, never the broker's "earliest" lookup: Tansu answers that lookup with the batch stored first in time,
which is a batch above offset 0 when two producers race on a partition (seen in CI: the first 927 records of a
partition were skipped). ``auto.offset.reset=earliest`` still covers a log whose start retention has deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from connectors.archive_source import archive_source
from connectors.archive_store import ArchiveStore
from connectors.config import Settings
from connectors.kafka import raw_source

# Nothing listens there: building a partition and assigning it never talks to the broker.
SETTINGS = Settings(kafka_brokers="127.0.0.1:9")


def _assignment(part: Any) -> list[TopicPartition]:
    try:
        return list(part._consumer.assignment())
    finally:
        part.close()


def test_the_consumer_config_falls_back_to_the_oldest_retained_record() -> None:
    assert SETTINGS.kafka_consumer_config()["auto.offset.reset"] == "earliest"


@pytest.mark.parametrize("resume", [None, 1234])
def test_a_flow_source_starts_a_partition_at_offset_zero_or_where_it_resumes(resume: int | None) -> None:
    part = raw_source(SETTINGS, ["raw"]).build_part("raw_in", "2-raw", resume)
    [assigned] = _assignment(part)
    assert (assigned.topic, assigned.partition, assigned.offset) == ("raw", 2, 0 if resume is None else resume)


def test_an_archive_source_without_a_checkpoint_starts_at_offset_zero(tmp_path: Path) -> None:
    store = ArchiveStore.open(str(tmp_path))
    part = archive_source(SETTINGS, store, ["trades"]).build_part("trades_in", "0-trades", 99)
    [assigned] = _assignment(part)
    assert (assigned.topic, assigned.partition, assigned.offset) == ("trades", 0, 0)
