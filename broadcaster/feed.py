"""The Kafka side: one consumer thread reading every partition of the served topics, in micro-batches.

Each replica reads every partition itself, so a client on any replica receives every record of its
subscriptions and adding or removing replicas never moves partitions between them:

* ``assign`` (default): no consumer group; all partitions are assigned directly, and partitions or topics that
  appear later are picked up by a metadata refresh (at their beginning: every record in them is new).
* ``unique_group``: a consumer group of its own per replica (``<prefix>-<replica id>``), for clusters whose
  tooling wants every reader in a group; nothing is committed.

Where a replica starts: at the end of every topic, except ``lob``, read from ``BROADCASTER_BOOK_LOOKBACK_S``
back so the replica's books hold a venue or periodic snapshot before clients subscribe. The replica is ready
when every partition is assigned, has been read up to the high watermark it had at assignment, and a poll
then returned less than a full batch: brokers that report the base offset of their last record batch as the
high watermark (Tansu) make the watermark a floor only, and the short poll shows the consumer kept up.

Per batch: poll once (waiting), drain what is buffered without waiting, decode each record's Avro once,
encode its frame's JSON once, and hand the batch to the event loop, which fans it out. At most
`BATCHES_IN_FLIGHT` batches wait for the loop; beyond that the consumer waits (the loop, not the clients,
is what can slow it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from broadcaster.frames import record_frame
from broadcaster.hub import BOOK_CHANNEL, RecordItem
from broadcaster.metrics import BroadcasterMetrics
from broadcaster.settings import BroadcasterSettings
from connectors.config import FIRST_OFFSET, Settings
from schemas.serde import SchemaError, codec_for

__all__ = ["BATCHES_IN_FLIGHT", "FeedStatus", "KafkaFeed", "replica_id"]

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 4
METADATA_REFRESH_S = 10.0
LAG_REFRESH_S = 1.0
Partition = tuple[str, int]


def replica_id() -> str:
    """A name for this process that is unique across replicas and restarts."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """What ``/ready`` and ``/health`` report about the consumer."""

    running: bool
    ready: bool
    partitions: int
    behind: int
    missing_topics: tuple[str, ...]
    error: str | None


class KafkaFeed:
    """The consumer thread; ``dispatch`` runs on ``loop`` with each decoded batch."""

    def __init__(
        self,
        kafka: Settings,
        settings: BroadcasterSettings,
        metrics: BroadcasterMetrics,
        dispatch: Callable[[list[RecordItem]], None],
        replica: str,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._metrics = metrics
        self._dispatch = dispatch
        self._replica = replica
        self._codecs = {topic: codec_for(topic, kafka.schema_registry_url) for topic in settings.topics}
        self._slots = threading.Semaphore(BATCHES_IN_FLIGHT)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Consumer-thread state; the loop thread only reads `status()`.
        self._prev: dict[tuple[str, str], int] = {}
        self._next: dict[Partition, int] = {}
        self._targets: dict[Partition, int] = {}
        self._assigned: set[Partition] = set()
        self._missing: tuple[str, ...] = ()
        self._subscribed: tuple[str, ...] = ()
        self._caught_up = False
        self._error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="broadcaster-kafka", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> FeedStatus:
        running = self._thread is not None and self._thread.is_alive()
        behind = sum(1 for tp, target in self._targets.items() if self._next.get(tp, -1) < target)
        return FeedStatus(
            running=running,
            ready=running and self._caught_up and bool(self._assigned),
            partitions=len(self._assigned),
            behind=behind,
            missing_topics=self._missing,
            error=self._error,
        )

    # -- the thread ------------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        unique = self._settings.broadcaster_consumer_mode == "unique_group"
        group = f"{self._settings.broadcaster_group_prefix}-{self._replica}" if unique else self._replica
        return {
            **self._kafka.kafka_client_config(),
            "group.id": group,
            "client.id": f"broadcaster-{self._replica}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": self._kafka.kafka_fetch_wait_max_ms,
            "session.timeout.ms": self._settings.broadcaster_session_timeout_ms,
            "heartbeat.interval.ms": max(100, self._settings.broadcaster_session_timeout_ms // 3),
        }

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = Consumer(self._config())
            self._refresh(consumer)
            batch_size = self._settings.broadcaster_batch_size
            next_refresh = time.monotonic() + METADATA_REFRESH_S
            next_lag = time.monotonic() + LAG_REFRESH_S
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    self._refresh(consumer)
                    next_refresh = now + METADATA_REFRESH_S
                if now >= next_lag:
                    self._update_lag(consumer)
                    next_lag = now + LAG_REFRESH_S
                first = consumer.poll(0.2)
                messages = [first] if first is not None else []
                if first is not None and batch_size > 1:
                    messages.extend(consumer.consume(batch_size - 1, 0))
                if messages:
                    self._process(messages)
                if len(messages) < batch_size:
                    self._caught_up = self._caught_up or (
                        bool(self._assigned)
                        and all(self._next.get(tp, -1) >= target for tp, target in self._targets.items())
                    )
        except Exception as exc:  # the thread ends; /health turns red and the orchestrator restarts us
            log.exception("Kafka feed stopped")
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            if consumer is not None:
                consumer.close()

    def _process(self, messages: list[Message]) -> None:
        items: list[RecordItem] = []
        counts: Tally[str] = Tally()
        for msg in messages:
            error = msg.error()
            if error is not None:
                log.warning("Kafka consume error: %s", error)
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            self._next[(topic, partition)] = offset + 1
            counts[topic] += 1
            raw_key = msg.key()
            key = raw_key.decode("utf-8", "replace") if raw_key is not None else ""
            prev = self._prev.get((topic, key))
            self._prev[(topic, key)] = offset
            try:
                record = self._codecs[topic].decode(msg.value() or b"")
            except SchemaError as exc:
                # Not sent; the next frame of this key has a `prev` the client never saw: a visible gap.
                self._metrics.decode_errors.labels(topic).inc()
                log.warning("undecodable record %s/%d@%d: %s", topic, partition, offset, exc)
                continue
            frame = record_frame("data", topic, key, partition, offset, prev, record)
            items.append(RecordItem(topic, key, partition, offset, frame, record if topic == BOOK_CHANNEL else None))
        if items:
            self._hand_over(items)
        # Counted once handed to the loop: a records_in total reached means those records are dispatched
        # before anything the loop is asked to do afterwards.
        for topic, count in counts.items():
            self._metrics.records_in.labels(topic).inc(count)

    def _hand_over(self, items: list[RecordItem]) -> None:
        assert self._loop is not None
        while not self._slots.acquire(timeout=0.5):
            if self._stopping.is_set():
                return
        try:
            self._loop.call_soon_threadsafe(self._on_loop, items)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self._slots.release()
            self._stopping.set()

    def _on_loop(self, items: list[RecordItem]) -> None:
        try:
            self._dispatch(items)
        finally:
            self._slots.release()

    # -- assignment ------------------------------------------------------------------------------------------
    def _refresh(self, consumer: Consumer) -> None:
        """Assign (or subscribe to) every partition of the served topics that exist, new ones included."""
        metadata = consumer.list_topics(timeout=10)  # whole-cluster metadata: names no topic, creates none
        existing = {
            topic: sorted(metadata.topics[topic].partitions)
            for topic in self._settings.topics
            if topic in metadata.topics and metadata.topics[topic].error is None
        }
        missing = tuple(topic for topic in self._settings.topics if topic not in existing)
        if missing != self._missing and missing:
            log.info("topics not in the cluster yet (picked up when they appear): %s", ", ".join(missing))
        self._missing = missing
        wanted = {(topic, p) for topic, partitions in existing.items() for p in partitions}
        if self._settings.broadcaster_consumer_mode == "unique_group":
            if tuple(existing) != self._subscribed:
                self._subscribed = tuple(existing)
                consumer.subscribe(list(existing), on_assign=self._on_assign, on_revoke=self._on_revoke)
            return
        new = sorted(wanted - self._assigned)
        if not new:
            return
        initial = not self._assigned
        partitions = (
            self._start_positions(consumer, new)
            if initial
            else [TopicPartition(topic, p, FIRST_OFFSET) for topic, p in new]
        )
        self._record_targets(consumer, partitions)
        consumer.incremental_assign(partitions)
        self._assigned.update(new)
        log.info("assigned %d partitions (%d in total)", len(new), len(self._assigned))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        positioned = self._start_positions(consumer, [(tp.topic, tp.partition) for tp in partitions])
        self._record_targets(consumer, positioned)
        consumer.assign(positioned)
        self._assigned = {(tp.topic, tp.partition) for tp in positioned}
        log.info("group %s assigned %d partitions", self._config()["group.id"], len(positioned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}

    def _start_positions(self, consumer: Consumer, partitions: list[Partition]) -> list[TopicPartition]:
        """End of every partition, except lob: the first offset within the book lookback."""
        lookback = self._settings.broadcaster_book_lookback_s
        books = [TopicPartition(t, p, int((time.time() - lookback) * 1000)) for t, p in partitions if t == BOOK_CHANNEL]
        found: dict[Partition, int] = {}
        if books and lookback > 0:
            try:
                for tp in consumer.offsets_for_times(books, timeout=10):
                    found[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else OFFSET_END
            except KafkaException as exc:  # a broker without timestamp lookups: start the books from the beginning
                log.warning("offsets_for_times failed (%s); reading lob from the beginning", exc)
                found = {(tp.topic, tp.partition): FIRST_OFFSET for tp in books}
        return [TopicPartition(t, p, found.get((t, p), OFFSET_END)) for t, p in partitions]

    def _record_targets(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The high watermark each partition must be read up to before the replica is ready."""
        for tp in partitions:
            if tp.offset == OFFSET_END:
                continue
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            if high > max(tp.offset, 0):
                self._targets[(tp.topic, tp.partition)] = high

    def _update_lag(self, consumer: Consumer) -> None:
        for topic, partition in self._assigned:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            position = self._next.get((topic, partition))
            if high >= 0 and position is not None:
                self._metrics.lag.labels(topic, str(partition)).set(max(0, high - position))
            elif high >= 0:
                self._metrics.lag.labels(topic, str(partition)).set(0)
