"""One logical connection kept open: connect, subscribe, keep alive, attribute frames, fetch snapshots, reconnect.

A session is one physical websocket. Its framer (one per logical connection, kept across sessions) sees the
connect under the connection's stable id (so after a reconnect it emits ``control``/``reconnect`` envelopes for
the instruments the connection carried: their books must be rebuilt), every frame sent, and every frame
received, stamped with its receipt time (UTC microseconds) the moment it is read.

Health, as each venue declares it (`LiveSpec`): websocket-protocol pings every 20 s (a peer that stops answering
ends the session), the venue's application ping, answers the venue requires, a reconnect when the venue asks for
one, and a planned reconnect (rotation) before the venue's forced disconnect. A session that ends any other way
is followed by a reconnect after an exponential, jittered backoff, reset once the new session delivers data.

A frame the venue's framer fails on (a bug met on odd input) becomes a dead letter with the frame and the
reason; the connection carries on.

Snapshots: after the first frame of an instrument's book channel in a session, the REST snapshot the protocol
needs (Binance depth) is fetched, with retries, and fetched again while it is older than that first frame. A
reconnect starts a new session, so the snapshot is fetched again; fetches of the old session are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from connectors.collector.backoff import Backoff
from connectors.collector.messages import COLLECTOR_FLOW
from connectors.collector.plan import ConnectionPlan, VenuePlan
from connectors.collector.rest import RestError, get_text, now_us
from connectors.collector.settings import CollectorSettings
from operators.dead_letter import SourceRef, dead_letter
from operators.records import Output
from operators.venues.base import Framer
from operators.venues.live import LiveSpec
from schemas.raw import RawEnvelope

__all__ = ["Collected", "ConnectionOptions", "ConnectionRunner", "Emit"]

LOG = logging.getLogger(__name__)

#: What a connection produces: raw envelopes, and dead letters for frames its framer failed on.
Collected = RawEnvelope | Output
#: Receives what one event produced, in order.
Emit = Callable[[Sequence[Collected]], None]
#: Largest frame accepted (a Coinbase level-2 snapshot is about 6 MB).
MAX_FRAME_BYTES = 64 * 1024 * 1024
WEBSOCKET_PING_S = 20.0
#: Snapshot fetches while the venue keeps returning one older than the first buffered frame.
SNAPSHOT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Connection tunables from the settings."""

    backoff_min_s: float
    backoff_max_s: float
    rotation_s: float | None
    open_timeout_s: float

    @classmethod
    def from_settings(cls, settings: CollectorSettings) -> ConnectionOptions:
        return cls(
            settings.collector_backoff_min_s,
            settings.collector_backoff_max_s,
            settings.collector_rotation_interval_s,
            settings.collector_open_timeout_s,
        )

    def backoff(self) -> Backoff:
        return Backoff(self.backoff_min_s, self.backoff_max_s)


class _Snapshots:
    """The REST snapshots of one session: at most one per (instrument, channel), after its first frame."""

    def __init__(self, runner: ConnectionRunner) -> None:
        self._runner = runner
        self._decided: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, envelopes: list[RawEnvelope]) -> None:
        for env in envelopes:
            marker = (env.key, env.channel)
            if marker in self._decided:
                continue
            self._decided.add(marker)
            url = self._runner.spec.snapshot_url(env)
            if url is not None:
                task = asyncio.create_task(self._fetch(env, url))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _fetch(self, first: RawEnvelope, url: str) -> None:
        runner = self._runner
        backoff = runner.options.backoff()
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            try:
                text = await get_text(runner.client, url, backoff, None)
            except RestError as exc:
                LOG.error("%s: no snapshot for %s (%s); it waits for a reconnect", runner.conn_id, first.key, exc)
                return
            if attempt < SNAPSHOT_ATTEMPTS and runner.spec.snapshot_outdated(first, text):
                LOG.info("%s: snapshot %s is older than the first buffered frame; fetching again", runner.conn_id, url)
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                runner.emit(runner.framer.on_http(url, text, now_us()))
            except Exception as exc:  # a framer bug met on odd input must not stop the connection
                runner.reject("on_http", exc, text)
            return

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


class ConnectionRunner:
    """Keeps one logical connection of a venue open until ``stop`` is set (see the module docstring)."""

    def __init__(
        self,
        venue: VenuePlan,
        connection: ConnectionPlan,
        framer: Framer,
        emit: Emit,
        options: ConnectionOptions,
        client: httpx2.AsyncClient,
    ) -> None:
        self.spec: LiveSpec = venue.spec
        self.connection = connection
        self.conn_id = connection.conn_id
        self.framer = framer
        self.emit = emit
        self.options = options
        self.client = client
        self.backoff = options.backoff()
        #: Sessions opened so far (1 + reconnects).
        self.sessions = 0

    @property
    def rotate_after_s(self) -> float | None:
        return self.options.rotation_s or self.spec.rotate_after_s

    async def run(self, stop: asyncio.Event) -> None:
        """Sessions one after another, with backoff after failures, until ``stop`` is set."""
        while not stop.is_set():
            planned = False
            try:
                planned = await self._session(stop)
            except (OSError, TimeoutError, WebSocketException) as exc:
                LOG.warning("%s: connection lost: %s: %s", self.conn_id, type(exc).__name__, exc)
            if stop.is_set():
                return
            delay = 0.0 if planned else self.backoff.next_delay()
            LOG.info("%s: reconnecting in %.2fs (attempt %d)", self.conn_id, delay, self.backoff.attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _session(self, stop: asyncio.Event) -> bool:
        """One websocket; True when it ended by plan (rotation, the venue's request, stop)."""
        url = self.connection.url
        async with connect(
            url,
            open_timeout=self.options.open_timeout_s,
            ping_interval=WEBSOCKET_PING_S,
            ping_timeout=WEBSOCKET_PING_S,
            close_timeout=5,
            max_size=MAX_FRAME_BYTES,
        ) as ws:
            self.sessions += 1
            LOG.info("%s: connected to %s (session %d)", self.conn_id, url, self.sessions)
            self.emit(self.framer.on_connect(self.conn_id, url, now_us()))
            for frame in self.spec.subscribe_frames(self.connection.subscriptions):
                await self._send(ws, frame)
            snapshots = _Snapshots(self)
            helpers = [asyncio.create_task(self._close_on(stop, ws))]
            if self.spec.ping_interval_s:
                helpers.append(asyncio.create_task(self._ping(ws, self.spec.ping_interval_s)))
            try:
                return await self._receive(ws, snapshots, stop)
            finally:
                snapshots.cancel()
                for task in helpers:
                    task.cancel()

    async def _receive(self, ws: ClientConnection, snapshots: _Snapshots, stop: asyncio.Event) -> bool:
        rotate = self.rotate_after_s
        deadline = asyncio.get_running_loop().time() + rotate if rotate else None
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                async for message in ws:
                    ts = now_us()
                    text = message if isinstance(message, str) else message.decode("utf-8", "surrogateescape")
                    envelopes = self._attribute(text, ts)
                    if envelopes:
                        self.emit(envelopes)
                        self.backoff.reset()
                        snapshots.after(envelopes)
                    answer = self.spec.reply(text)
                    if answer is not None:
                        await self._send(ws, answer)
                    if self.spec.asks_reconnect(text):
                        LOG.info("%s: the venue asks for a reconnect: %s", self.conn_id, text[:200])
                        return True
        except TimeoutError:
            if not timer.expired():
                raise
            LOG.info("%s: rotating the connection after %.0fs", self.conn_id, rotate)
            return True
        if stop.is_set():
            return True
        LOG.warning("%s: closed by the venue: %s %s", self.conn_id, ws.close_code, ws.close_reason)
        return False

    def _attribute(self, text: str, ts: int) -> list[RawEnvelope]:
        try:
            return self.framer.on_recv(self.conn_id, text, ts)
        except Exception as exc:  # a framer bug met on odd input must not stop the connection
            self.reject("on_recv", exc, text)
            return []

    def reject(self, step: str, exc: Exception, text: str) -> None:
        """A dead letter for a frame or REST response the framer failed on."""
        LOG.exception("%s: the framer failed on a frame", self.conn_id)
        reason = f"{self.conn_id}: framer {step} failed: {type(exc).__name__}: {exc}"
        payload = text.encode("utf-8", "surrogateescape")
        venue = self.framer.exchange
        self.emit([dead_letter(COLLECTOR_FLOW, step, reason, "internal_error", SourceRef(), payload, exchange=venue)])

    async def _send(self, ws: ClientConnection, frame: str) -> None:
        self.framer.on_send(self.conn_id, frame, now_us())
        await ws.send(frame)

    async def _ping(self, ws: ClientConnection, interval: float) -> None:
        frame = self.spec.ping_frame()
        with contextlib.suppress(ConnectionClosed):
            while frame is not None:
                await asyncio.sleep(interval)
                await self._send(ws, frame)

    @staticmethod
    async def _close_on(stop: asyncio.Event, ws: ClientConnection) -> None:
        await stop.wait()
        await ws.close()
