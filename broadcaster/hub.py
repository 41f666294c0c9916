"""The fan-out core: routes each record's frame to the outboxes of its subscribers, on the event loop.

Everything here runs on the asyncio loop thread, so a subscribe (ack, book snapshots, index update) happens
between two records and never in the middle of a batch: a new lob subscriber's snapshot is exactly the book
before the first record it is sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broadcaster.books import BookKeeper
from broadcaster.frames import ack_frame, record_frame
from broadcaster.metrics import BroadcasterMetrics
from broadcaster.outbox import ACCEPTED, CONFLATED, REFUSED, ConflationKey, Outbox
from broadcaster.protocol import WILDCARD, ErrorCode, Pattern, ProtocolError, Subscribe, Unsubscribe
from broadcaster.subscriptions import SubscriptionIndex, matches

__all__ = ["BOOK_CHANNEL", "CONFLATABLE_CHANNELS", "SLOW_CLIENT_CLOSE_CODE", "Client", "Hub", "RecordItem"]

BOOK_CHANNEL = "lob"
#: Channels whose frames a slow client may receive conflated to the latest state (policy ``conflate``).
CONFLATABLE_CHANNELS = frozenset({BOOK_CHANNEL, "ticker"})
#: Close code for a client whose queue overflowed (4000-4999: application codes).
SLOW_CLIENT_CLOSE_CODE = 4008

_client_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class RecordItem:
    """One consumed record ready for fan-out: its route, its encoded frame, and (lob only) the record."""

    channel: str
    key: str
    partition: int
    offset: int
    frame: str
    record: dict[str, Any] | None = None


@dataclass(eq=False)
class Client:
    """One websocket connection as the hub sees it (hashed by identity)."""

    outbox: Outbox
    patterns: dict[Pattern, None] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_client_ids))


class Hub:
    """Subscriptions, books and latest tickers; turns batches of records into queued frames."""

    def __init__(self, channels: Iterable[str], max_subscriptions: int, metrics: BroadcasterMetrics) -> None:
        self.channels = list(channels)
        self.max_subscriptions = max_subscriptions
        self.metrics = metrics
        self.books = BookKeeper()
        self.clients: set[Client] = set()
        self._index: SubscriptionIndex[Client] = SubscriptionIndex()
        self._latest: dict[ConflationKey, str] = {}
        self._seen: dict[str, dict[str, None]] = {channel: {} for channel in self.channels}
        metrics.watch_queues(lambda: [len(client.outbox) for client in self.clients])

    # -- records ---------------------------------------------------------------------------------------------
    def dispatch(self, items: list[RecordItem]) -> None:
        """Apply lob records to the books and queue every frame for its subscribers."""
        targets_of = self._index.targets
        for item in items:
            channel, key = item.channel, item.key
            seen = self._seen[channel]
            if key not in seen:
                seen[key] = None
            conflation: ConflationKey | None = None
            if channel in CONFLATABLE_CHANNELS:
                conflation = (channel, key)
                if item.record is not None:
                    self.books.apply(key, item.record, item.partition, item.offset)
                else:
                    self._latest[conflation] = item.frame
            frame = item.frame
            for client in targets_of(channel, key):
                outcome = client.outbox.offer(frame, conflation)
                if outcome is not ACCEPTED:
                    self._slow(client, outcome)

    def reply(self, client: Client, frame: str) -> None:
        """Queue a frame the client asked for; a client that does not read its answers is disconnected."""
        if not client.outbox.put_control(frame):
            self._slow(client, REFUSED)

    def _slow(self, client: Client, outcome: object) -> None:
        if outcome is CONFLATED:
            self.metrics.slow_clients.labels("conflated").inc()
            return
        self.metrics.slow_clients.labels("disconnected").inc()
        capacity = client.outbox.capacity
        self.remove(client)
        client.outbox.close(SLOW_CLIENT_CLOSE_CODE, f"slow client: send queue full ({capacity} frames)")

    def instruments(self) -> dict[str, list[str]]:
        """Keys seen so far per channel (for the web page's pickers)."""
        return {channel: sorted(keys) for channel, keys in self._seen.items() if keys}

    # -- clients ---------------------------------------------------------------------------------------------
    def connect(self, outbox: Outbox) -> Client:
        client = Client(outbox)
        self.clients.add(client)
        self.metrics.connections.set(len(self.clients))
        return client

    def remove(self, client: Client) -> None:
        """Forget a client and all its subscriptions (idempotent)."""
        for pattern in client.patterns:
            self._index.remove(pattern, client)
        self.metrics.subscriptions.dec(len(client.patterns))
        client.patterns.clear()
        self.clients.discard(client)
        self.metrics.connections.set(len(self.clients))

    def subscribe(self, client: Client, request: Subscribe) -> None:
        """Ack, then (lob) the current book of every matching instrument, then its records from now on."""
        pattern = request.pattern
        if pattern in client.patterns:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed to this pattern", request.id)
        if len(client.patterns) >= self.max_subscriptions:
            raise ProtocolError(
                ErrorCode.SUBSCRIPTION_LIMIT,
                f"at most {self.max_subscriptions} subscriptions per connection",
                request.id,
            )
        client.patterns[pattern] = None
        self._index.add(pattern, client)
        self.metrics.subscriptions.inc()
        self.reply(client, ack_frame(request.id, "subscribe", subscription=pattern.as_dict()))
        if pattern.channel == BOOK_CHANNEL:
            for key in self._book_keys(pattern):
                frame = self._book_frame(key)
                if frame is not None:
                    self.reply(client, frame)

    def unsubscribe(self, client: Client, request: Unsubscribe) -> None:
        """Ack; no frame of the pattern follows the ack (frames queued before it still go out first)."""
        pattern = request.pattern
        if pattern not in client.patterns:
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, "not subscribed to this pattern", request.id)
        del client.patterns[pattern]
        self._index.remove(pattern, client)
        self.metrics.subscriptions.dec()
        self.reply(client, ack_frame(request.id, "unsubscribe", subscription=pattern.as_dict()))

    def latest_frames(self, client: Client, pending: list[ConflationKey]) -> list[str]:
        """The latest state of conflated keys the client is still subscribed to."""
        frames: list[str] = []
        for channel, key in pending:
            if not any(matches(pattern, channel, key) for pattern in client.patterns):
                continue
            frame = self._book_frame(key) if channel == BOOK_CHANNEL else self._latest.get((channel, key))
            if frame is not None:
                frames.append(frame)
        return frames

    def _book_keys(self, pattern: Pattern) -> list[str]:
        if WILDCARD not in (pattern.exchange, pattern.symbol):
            key = f"{pattern.exchange}:{pattern.symbol}"
            return [key]
        return [key for key in self.books.instruments() if matches(pattern, BOOK_CHANNEL, key)]

    def _book_frame(self, key: str) -> str | None:
        found = self.books.snapshot(key)
        if found is None:
            return None
        book, record = found
        return record_frame("snapshot", BOOK_CHANNEL, key, book.partition, book.offset, None, record)
