"""Bytewax's KafkaSource, resuming each partition from the archive's checkpoint instead of Bytewax's offsets.

The archive is the source of truth (see `connectors.archive`): on every start, with or without Bytewax recovery,
partition ``p`` of ``topic`` is consumed from the checkpoint the writer recorded (every record below it is
archived), or from the beginning when there is none. Offsets stored in a recovery directory are ignored on
purpose: they mark what was consumed, not what reached published files.
"""

from __future__ import annotations

from typing import Any

from bytewax.connectors.kafka import KafkaSource

from connectors.archive_store import ArchiveStore
from connectors.config import FIRST_OFFSET, Settings

__all__ = ["ArchiveSource", "archive_source"]


class ArchiveSource(KafkaSource):
    """A KafkaSource whose partitions start at the archive's checkpoints."""

    def __init__(self, store: ArchiveStore, brokers: list[str], topics: list[str], **kwargs: Any) -> None:
        super().__init__(brokers, topics, **kwargs)
        self._store = store

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        index, topic = for_part.split("-", 1)
        checkpoint = self._store.read_checkpoint(topic, int(index))
        return super().build_part(step_id, for_part, checkpoint)


def archive_source(settings: Settings, store: ArchiveStore, topics: list[str]) -> ArchiveSource:
    """The archive flows' source over ``topics`` (which must exist: listing them would create them on Tansu)."""
    return ArchiveSource(
        store,
        settings.brokers,
        topics,
        tail=not settings.kafka_stop_at_end,
        # A checkpoint older than the topic's retention resumes at the oldest record still there (the consumer
        # config's auto.offset.reset), never at the end, which would skip everything retained.
        starting_offset=FIRST_OFFSET,
        add_config=settings.kafka_consumer_config(),
        batch_size=settings.consumer_batch_size,
        raise_on_errors=False,
    )
