"""The broadcaster on real servers: Tansu, the broadcaster as a real process, websocket clients.

Records are the pipeline's real standardized records (normalized recorded captures), produced as Avro keyed
``"<exchange>:<symbol>"``. The helpers here are shared by the other broadcaster integration modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import orjson
import pytest
import websockets
from confluent_kafka import Producer
from websockets.exceptions import ConnectionClosed

from connectors.config import Settings
from connectors.kafka import ensure_topics
from embedded.kafka import TansuBroker
from embedded.process import ManagedProcess, free_port, wait_until
from schemas import CEX_TOPICS
from schemas.serde import codec_for
from tests.support import ReplayedBook, capture, envelopes, normalize

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Out = tuple[str, str, dict[str, Any]]  # key, topic, record as normalized


def real_records(*venues: str) -> list[Out]:
    """Normalized records of the recorded captures, as the pipeline publishes them (Avro round trip)."""
    outs: list[Out] = []
    for venue in venues:
        for key, topic, record in normalize(envelopes(capture(venue))):
            codec = codec_for(topic)
            outs.append((key, topic, codec.decode(codec.encode(record))))
    return outs


def produce(bootstrap: str, outs: list[Out]) -> None:
    """Produce records as Avro, keyed, in order per key (idempotent producer)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for key, topic, record in outs:
        producer.produce(topic, key=key.encode(), value=codec_for(topic).encode(record))
        producer.poll(0)
    assert producer.flush(30) == 0


def create_topics(bootstrap: str, partitions: int = 3) -> None:
    ensure_topics(Settings(kafka_brokers=bootstrap, topic_partitions=f"default={partitions}"), CEX_TOPICS)


class Broadcaster:
    """``python -m broadcaster`` as a child process on 127.0.0.1, ready when /ready says so."""

    def __init__(self, bootstrap: str, workdir: Path, **settings: str) -> None:
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BROKERS": bootstrap,
                "PYTHONPATH": str(REPO),
                "BROADCASTER_HOST": "127.0.0.1",
                "BROADCASTER_PORT": str(self.port),
                "BROADCASTER_TOPICS": ",".join(CEX_TOPICS),
                "BROADCASTER_SESSION_TIMEOUT_MS": "6000",
                **{name.upper(): value for name, value in settings.items()},
            }
        )
        self.process = ManagedProcess(
            "broadcaster", [sys.executable, "-m", "broadcaster"], workdir / f"broadcaster-{self.port}.log", env, REPO
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _ready(self) -> bool:
        self.process.check_alive()
        return self.get("/ready")[0] == 200

    def start(self) -> Self:
        self.process.start()
        wait_until(self._ready, 60, f"broadcaster on port {self.port}", interval=0.1)
        return self

    def stop(self) -> None:
        self.process.stop()

    def metrics(self) -> dict[str, float]:
        samples: dict[str, float] = {}
        for line in self.get("/metrics")[1].decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, prefix: str) -> float:
        return sum(value for name, value in self.metrics().items() if name.startswith(prefix))

    def wait_consumed(self, total: int) -> None:
        """Until ``total`` records were consumed and handed to the fan-out."""
        wait_until(lambda: self.metric("broadcaster_records_in_total") >= total, 120, f"{total} records consumed")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Client:
    """A websocket client that keeps every frame it receives, in order.

    It reads continuously in the background (a fast client) unless made with ``reading=False`` (a client
    that stops reading once connected, until `start_reading`).
    """

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._unread: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._closed: ConnectionClosed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0

    @classmethod
    async def connect(cls, url: str, reading: bool = True, **options: Any) -> Client:
        ws = await websockets.connect(url, ping_interval=None, **options)
        client = cls(ws)
        client.start_reading()
        welcome = await client.next_frame()
        assert welcome["type"] == "welcome", welcome
        if not reading:
            await client.stop_reading()
        return client

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def stop_reading(self) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                assert isinstance(message, str), "the broadcaster sends text messages"
                self._unread.extend(orjson.loads(line) for line in message.split("\n"))
                self._arrived.set()
        except ConnectionClosed as exc:
            self._closed = exc
        if self._closed is None:
            self._closed = ConnectionClosed(self.ws.protocol.close_rcvd, self.ws.protocol.close_sent)
        self._arrived.set()

    async def next_frame(self, timeout: float = 60) -> dict[str, Any]:
        """The next frame; raises ConnectionClosed once every frame before the close was read."""
        while not self._unread:
            if self._closed is not None:
                raise self._closed
            if self._reader is None or self._reader.done():
                raise AssertionError("the client is not reading")
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout)
        frame = self._unread.pop(0)
        self.frames.append(frame)
        return frame

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and read up to its answer (ack or error with the same id)."""
        self._next_id += 1
        request_id = self._next_id
        await self.ws.send(orjson.dumps({"id": request_id, "op": op, **fields}).decode())
        return await self.answer(request_id)

    async def answer(self, request_id: Any) -> dict[str, Any]:
        while True:
            frame = await self.next_frame()
            if frame["type"] in ("ack", "error") and frame.get("id") == request_id:
                return frame

    async def subscribe(self, channel: str, exchange: str, symbol: str) -> dict[str, Any]:
        ack = await self.request("subscribe", channel=channel, exchange=exchange, symbol=symbol)
        assert ack["type"] == "ack", ack
        return ack

    async def read_until(self, done: Callable[[Client], bool]) -> None:
        while not done(self):
            await self.next_frame()

    def data(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "data" and (channel is None or f["channel"] == channel)]

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def per_key(items: list[tuple[str, str, dict[str, Any]]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(channel, key) -> records in order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for channel, key, record in items:
        grouped[(channel, key)].append(record)
    return dict(grouped)


def received(client: Client) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return per_key([(f["channel"], f["key"], f["data"]) for f in client.data()])


def expected(outs: list[Out], wanted: Callable[[str, str], bool]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return per_key([(topic, key, record) for key, topic, record in outs if wanted(topic, key)])


def books_of(client: Client) -> dict[str, ReplayedBook]:
    """Books rebuilt from the client's lob snapshot and data frames by the replay rule."""
    books: dict[str, ReplayedBook] = defaultdict(ReplayedBook)
    for frame in client.frames:
        if frame["type"] in ("data", "snapshot") and frame["channel"] == "lob":
            books[frame["key"]].apply(frame["data"])
    return dict(books)


def replayed(outs: list[Out]) -> dict[str, ReplayedBook]:
    books: dict[str, ReplayedBook] = defaultdict(ReplayedBook)
    for key, topic, record in outs:
        if topic == "lob":
            books[key].apply(record)
    return dict(books)


def same_books(a: dict[str, ReplayedBook], b: dict[str, ReplayedBook]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert (a[key].valid, a[key].bids, a[key].asks) == (b[key].valid, b[key].bids, b[key].asks), key


async def settle(broadcaster: Broadcaster, total: int, *clients: Client) -> None:
    """Every produced record consumed and dispatched; each client has read every frame queued for it."""
    await asyncio.to_thread(broadcaster.wait_consumed, total)
    for client in clients:
        answer = await client.request("ping")
        while answer.get("code") == "rate_limited":  # a client that just used up its request budget
            await asyncio.sleep(0.1)
            answer = await client.request("ping")
        assert answer["type"] == "ack", answer


@pytest.fixture
def broadcaster(kafka: TansuBroker, tmp_path: Path) -> Iterator[Broadcaster]:
    create_topics(kafka.bootstrap)
    with Broadcaster(kafka.bootstrap, tmp_path) as server:
        yield server


def test_clients_receive_exactly_their_subscriptions_in_order_with_wildcards(
    kafka: TansuBroker, broadcaster: Broadcaster
) -> None:
    outs = real_records("COINBASE", "GEMINI", "OKX", "BYBIT")

    async def run() -> None:
        exact = await Client.connect(broadcaster.ws_url)
        await exact.subscribe("trades", "coinbase", "BTC.USD")
        venue = await Client.connect(broadcaster.ws_url)
        await venue.subscribe("ticker", "bybit", "*")
        symbol = await Client.connect(broadcaster.ws_url)
        await symbol.subscribe("trades", "*", "BTC.USDT")
        overlapping = await Client.connect(broadcaster.ws_url)
        await overlapping.subscribe("trades", "*", "*")
        await overlapping.subscribe("trades", "gemini", "*")
        await overlapping.subscribe("trades", "*", "ETH.USD")
        await asyncio.to_thread(produce, kafka.bootstrap, outs)
        clients = (exact, venue, symbol, overlapping)
        await settle(broadcaster, len(outs), *clients)

        assert received(exact) == expected(outs, lambda t, k: t == "trades" and k == "coinbase:BTC.USD")
        assert received(venue) == expected(outs, lambda t, k: t == "ticker" and k.startswith("bybit:"))
        by_symbol = expected(outs, lambda t, k: t == "trades" and k.endswith(":BTC.USDT"))
        assert {key for _, key in by_symbol} == {"okx:BTC.USDT", "gemini:BTC.USDT", "bybit:BTC.USDT"}
        assert received(symbol) == by_symbol
        # Three overlapping subscriptions, each record once.
        assert received(overlapping) == expected(outs, lambda t, k: t == "trades")
        assert len(overlapping.data()) == sum(1 for _, topic, _ in outs if topic == "trades")
        for client in clients:
            await client.close()

    asyncio.run(run())


def test_prev_links_each_keys_frames_so_gaps_are_visible(kafka: TansuBroker, broadcaster: Broadcaster) -> None:
    outs = real_records("OKX")

    async def run() -> None:
        client = await Client.connect(broadcaster.ws_url)
        await client.subscribe("lob", "okx", "*")
        await client.subscribe("trades", "okx", "*")
        await asyncio.to_thread(produce, kafka.bootstrap, outs)
        await settle(broadcaster, len(outs), client)
        last: dict[tuple[str, str], int] = {}
        for frame in client.data():
            route = (frame["channel"], frame["key"])
            if route in last:
                assert frame["prev"] == last[route]
                assert frame["offset"] > last[route]
            last[route] = frame["offset"]
        assert len(last) == len({(t, k) for k, t, _ in outs if t in ("lob", "trades")})
        await client.close()

    asyncio.run(run())


def test_unsubscribe_stops_the_flow_and_list_shows_what_is_left(kafka: TansuBroker, broadcaster: Broadcaster) -> None:
    outs = real_records("COINBASE")
    half = len(outs) // 2

    async def run() -> None:
        client = await Client.connect(broadcaster.ws_url)
        await client.subscribe("trades", "coinbase", "*")
        await client.subscribe("ticker", "coinbase", "*")
        await asyncio.to_thread(produce, kafka.bootstrap, outs[:half])
        await settle(broadcaster, half, client)
        ack = await client.request("unsubscribe", channel="trades", exchange="coinbase", symbol="*")
        assert ack["type"] == "ack" and ack["subscription"]["channel"] == "trades"
        after_ack = len(client.frames)
        listed = await client.request("list")
        assert listed["subscriptions"] == [{"channel": "ticker", "exchange": "coinbase", "symbol": "*"}]
        await asyncio.to_thread(produce, kafka.bootstrap, outs[half:])
        await settle(broadcaster, len(outs), client)
        later = [f for f in client.frames[after_ack:] if f["type"] == "data"]
        assert {f["channel"] for f in later} == {"ticker"}
        assert received(client) == {
            **expected(outs[:half], lambda t, k: t == "trades"),
            **expected(outs, lambda t, k: t == "ticker"),
        }
        await client.close()

    asyncio.run(run())
