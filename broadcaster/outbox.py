"""One connection's bounded queue of outgoing frames, and the slow-client policy.

The Kafka feed offers each record's frame to the outboxes of its subscribers without ever waiting: a full
outbox is the connection's problem, never the feed's or another client's. What happens then is the policy:

* ``disconnect``: the outbox refuses the frame; the hub closes the connection (code 4008).
* ``conflate``: queued frames of conflatable channels (lob, ticker) are dropped and their ``(channel, key)``
  marked pending; the writer later sends the latest state of each pending key instead (the current book as a
  snapshot, the latest ticker). Frames of a pending key are not queued until its latest state went out, so
  per-key order holds. If the queue is still full (trades, candles, ... are never conflated), the outbox
  refuses the frame as under ``disconnect``.

Control frames (acks, errors, snapshots asked for by a subscribe) are always queued: the request rate limit
bounds them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["ACCEPTED", "CONFLATED", "REFUSED", "ConflationKey", "Outbox"]

#: Outcomes of `Outbox.offer` (sentinels compared by identity on the hot path).
ACCEPTED = "accepted"
CONFLATED = "conflated"
REFUSED = "refused"

#: (channel, key) of a conflatable frame.
ConflationKey = tuple[str, str]


class Outbox:
    """Frames waiting to be written to one websocket, at most ``capacity`` record frames."""

    __slots__ = ("_frames", "_pending", "_wakeup", "capacity", "close_code", "close_reason", "conflate", "on_close")

    def __init__(self, capacity: int, conflate: bool) -> None:
        self.capacity = capacity
        self.conflate = conflate
        self._frames: deque[tuple[str, ConflationKey | None]] = deque()
        self._pending: dict[ConflationKey, None] = {}
        self._wakeup = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        #: Called once by `close` (the session interrupts a write stuck behind a stalled socket).
        self.on_close: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._frames) + len(self._pending)

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def offer(self, frame: str, conflation: ConflationKey | None) -> str:
        """Queue a record frame: ACCEPTED, CONFLATED (the queue was full and got conflated) or REFUSED
        (the queue is full and the connection must go)."""
        if self.close_code is not None:
            return ACCEPTED
        if conflation is not None and conflation in self._pending:
            return ACCEPTED
        if len(self._frames) < self.capacity:
            self._frames.append((frame, conflation))
            self._wakeup.set()
            return ACCEPTED
        if not self.conflate:
            return REFUSED
        self._conflate()
        self._wakeup.set()
        if conflation is not None:
            self._pending[conflation] = None
            return CONFLATED
        if len(self._frames) >= self.capacity:
            return REFUSED
        self._frames.append((frame, conflation))
        return CONFLATED

    def put_control(self, frame: str) -> bool:
        """Queue a frame the client asked for (ack, error, snapshot); False once the queue holds more than
        ``capacity`` frames (a client that sends requests without reading the answers)."""
        if self.close_code is None:
            self._frames.append((frame, None))
            self._wakeup.set()
        return len(self._frames) <= self.capacity

    def _conflate(self) -> None:
        """Replace every queued conflatable frame by its pending key."""
        kept: deque[tuple[str, ConflationKey | None]] = deque()
        for frame, key in self._frames:
            if key is None:
                kept.append((frame, key))
            else:
                self._pending[key] = None
        self._frames = kept

    def close(self, code: int, reason: str) -> None:
        """Drop everything queued and ask the writer to close the websocket."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._frames.clear()
            self._pending.clear()
            self._wakeup.set()
            if self.on_close is not None:
                self.on_close()

    async def wait(self) -> None:
        """Until there is something to write or the connection is closing."""
        await self._wakeup.wait()

    def take(self, max_chars: int) -> tuple[list[str], list[ConflationKey]]:
        """Queued frames up to about ``max_chars`` (at least one), and the pending keys, all removed."""
        frames: list[str] = []
        size = 0
        queue = self._frames
        while queue and (not frames or size + len(queue[0][0]) <= max_chars):
            frame = queue.popleft()[0]
            frames.append(frame)
            size += len(frame) + 1
        pending = list(self._pending)
        self._pending.clear()
        if not queue:
            self._wakeup.clear()
        return frames, pending
