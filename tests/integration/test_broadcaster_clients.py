"""Slow clients and abusive clients against a real broadcaster: neither slows the others, both get clear answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from confluent_kafka import Producer
from websockets.exceptions import ConnectionClosed

from embedded.kafka import TansuBroker
from schemas.serde import codec_for
from tests.integration.test_broadcaster import (
    Broadcaster,
    Client,
    Out,
    books_of,
    create_topics,
    expected,
    produce,
    received,
    replayed,
    same_books,
    settle,
)
from tests.support import HFTBACKTEST, envelopes, normalize

pytestmark = pytest.mark.integration

KEY = "binance:BTC.USDT"


def _busy_stream(topics: tuple[str, ...]) -> list[Out]:
    """The hftbacktest Binance BTCUSDT stream (tens of thousands of records), Avro round-tripped."""
    outs: list[Out] = []
    for key, topic, record in normalize(envelopes(HFTBACKTEST, venue="binance")):
        if topic in topics:
            codec = codec_for(topic)
            outs.append((key, topic, codec.decode(codec.encode(record))))
    return outs


async def _stalled_client(broadcaster: Broadcaster) -> Client:
    """A client with a tiny socket receive buffer that will stop reading after its subscriptions."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", broadcaster.port))
    return await Client.connect(broadcaster.ws_url, reading=False, sock=sock, max_queue=1)


async def _subscribe_unread(client: Client, channel: str) -> None:
    """Subscribe without reading the answer (the client is stalled); the answer is checked once it reads."""
    await client.ws.send(
        orjson.dumps(
            {"id": channel, "op": "subscribe", "channel": channel, "exchange": "binance", "symbol": "*"}
        ).decode()
    )


async def _read_to_close(client: Client) -> tuple[int | None, str]:
    try:
        while True:
            await client.next_frame()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


async def _produce_paced(bootstrap: str, outs: list[Out], fast: Client, chunk: int = 200) -> None:
    """Produce in chunks, each once the fast client has read every record before the previous chunk.

    The fast client then never lags by more than two chunks (less than the queue length), however slow the
    machine, while the stalled client's queue must overflow: the test depends on order, never on timing.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})

    def produce_chunk(records: list[Out]) -> None:
        for key, topic, record in records:
            producer.produce(topic, key=key.encode(), value=codec_for(topic).encode(record))
            producer.poll(0)
        assert producer.flush(30) == 0

    for start in range(0, len(outs), chunk):
        while len(fast.data()) < start - chunk:
            await fast.next_frame()
        await asyncio.to_thread(produce_chunk, outs[start : start + chunk])


def _is_prefix(got: dict[Any, list[Any]], full: dict[Any, list[Any]]) -> bool:
    return all(route in full and records == full[route][: len(records)] for route, records in got.items())


def _is_subsequence(part: list[Any], whole: list[Any]) -> bool:
    remaining = iter(whole)
    return all(any(item == candidate for candidate in remaining) for item in part)


def test_a_stalled_client_is_disconnected_and_never_delays_a_fast_one(kafka: TansuBroker, tmp_path: Path) -> None:
    create_topics(kafka.bootstrap)
    outs = _busy_stream(("trades", "ticker", "lob"))
    settings = {
        "broadcaster_queue_length": "500",
        "broadcaster_batch_size": "100",
        "broadcaster_close_timeout_s": "300",
        "broadcaster_ping_interval_s": "300",
    }

    async def run(broadcaster: Broadcaster) -> None:
        fast = await Client.connect(broadcaster.ws_url)
        slow = await _stalled_client(broadcaster)
        for channel in ("trades", "ticker", "lob"):
            await fast.subscribe(channel, "binance", "*")
            await _subscribe_unread(slow, channel)
        await _produce_paced(kafka.bootstrap, outs, fast)
        await settle(broadcaster, len(outs), fast)
        everything = expected(outs, lambda topic, key: True)
        assert received(fast) == everything
        # While the fast client got every record, the stalled one was already cut off.
        assert broadcaster.metric('broadcaster_slow_clients_total{action="disconnected"}') == 1
        slow.start_reading()
        code, reason = await _read_to_close(slow)
        assert code == 4008 and reason == "slow client: send queue full (500 frames)"
        assert 0 < len(slow.data()) < len(outs)
        assert _is_prefix(received(slow), everything)
        await fast.close()

    with Broadcaster(kafka.bootstrap, tmp_path, **settings) as broadcaster:
        asyncio.run(run(broadcaster))


def test_a_stalled_client_gets_conflated_books_and_tickers(kafka: TansuBroker, tmp_path: Path) -> None:
    create_topics(kafka.bootstrap)
    outs = _busy_stream(("ticker", "lob"))
    settings = {
        "broadcaster_queue_length": "500",
        "broadcaster_batch_size": "100",
        "broadcaster_slow_client_policy": "conflate",
        "broadcaster_ping_interval_s": "300",
    }

    async def run(broadcaster: Broadcaster) -> None:
        fast = await Client.connect(broadcaster.ws_url)
        slow = await _stalled_client(broadcaster)
        for channel in ("ticker", "lob"):
            await fast.subscribe(channel, "binance", "*")
            await _subscribe_unread(slow, channel)
        await _produce_paced(kafka.bootstrap, outs, fast)
        await settle(broadcaster, len(outs), fast)
        assert received(fast) == expected(outs, lambda topic, key: True)
        assert broadcaster.metric('broadcaster_slow_clients_total{action="conflated"}') >= 1
        assert broadcaster.metric('broadcaster_slow_clients_total{action="disconnected"}') == 0
        # The slow client catches up: still connected, fewer frames, the same final state.
        slow.start_reading()
        assert (await slow.request("ping"))["type"] == "ack"
        tickers = [record for _, topic, record in outs if topic == "ticker"]
        slow_tickers = [f["data"] for f in slow.data("ticker")]
        assert len(slow_tickers) < len(tickers)
        assert slow_tickers[-1] == tickers[-1]
        assert _is_subsequence(slow_tickers, tickers)
        assert any(f["type"] == "snapshot" for f in slow.frames)
        same_books(books_of(slow), replayed(outs))
        same_books(books_of(fast), replayed(outs))
        for client in (fast, slow):
            await client.close()

    with Broadcaster(kafka.bootstrap, tmp_path, **settings) as broadcaster:
        asyncio.run(run(broadcaster))


async def _refused(url: str, **options: Any) -> tuple[dict[str, Any], int | None, str]:
    """Connect, expect an error frame then a close: (frame, close code, reason)."""
    async with websockets.connect(url, ping_interval=None, **options) as ws:
        client = Client(ws)
        client.start_reading()
        frame = await client.next_frame()
        code, reason = await _read_to_close(client)
        return frame, code, reason


def test_protocol_abuse_gets_error_frames_and_the_connection_keeps_working(kafka: TansuBroker, tmp_path: Path) -> None:
    create_topics(kafka.bootstrap)
    settings = {
        "broadcaster_api_keys": "alpha-key,beta-key",
        "broadcaster_max_subscriptions": "3",
        "broadcaster_max_frame_bytes": "1024",
        "broadcaster_requests_per_second": "50",
    }

    async def run(broadcaster: Broadcaster) -> None:
        url = broadcaster.ws_url
        for options in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
            frame, code, _ = await _refused(url, **options)
            assert (frame["type"], frame["code"], code) == ("error", "unauthorized", 4001)
        frame, code, _ = await _refused(url + "?api_key=beta-key", origin="http://evil.example")
        assert (frame["code"], code) == ("forbidden_origin", 4003)
        same_origin = await Client.connect(url, additional_headers={"X-API-Key": "alpha-key"}, origin=broadcaster.url)
        await same_origin.close()

        client = await Client.connect(url + "?api_key=alpha-key")
        ws = client.ws

        async def answer_to(raw: str | bytes, request_id: Any = None) -> dict[str, Any]:
            await ws.send(raw)
            return await client.answer(request_id)

        def code_of(frame: dict[str, Any]) -> str:
            assert frame["type"] == "error" and frame["message"], frame
            return str(frame["code"])

        assert code_of(await answer_to("{not json")) == "malformed_json"
        assert code_of(await answer_to("[1, 2]")) == "malformed_json"
        assert code_of(await answer_to('{"op": "list"}')) == "invalid_request"
        assert code_of(await answer_to('{"id": 5, "op": "dance"}', 5)) == "invalid_request"
        assert code_of(await answer_to('{"id": 6, "op": "list", "extra": 1}', 6)) == "invalid_request"
        assert code_of(await answer_to(b'{"id": 7, "op": "list"}')) == "invalid_request"
        assert code_of(await answer_to('{"id": "x" , "op": "ping", "pad": "' + "x" * 2000 + '"}')) == "frame_too_large"
        unknown = await client.request("subscribe", channel="trade", exchange="binance", symbol="*")
        assert code_of(unknown) == "unknown_channel" and "trades" in unknown["message"]
        bad_name = await client.request("subscribe", channel="trades", exchange="bin ance", symbol="*")
        assert code_of(bad_name) == "invalid_request"
        for symbol in ("NKN.USDT", "LRC.BTC", "*"):
            await client.subscribe("trades", "binance", symbol)
        again = await client.request("subscribe", channel="trades", exchange="binance", symbol="*")
        assert code_of(again) == "already_subscribed"
        over = await client.request("subscribe", channel="ticker", exchange="binance", symbol="*")
        assert code_of(over) == "subscription_limit"
        absent = await client.request("unsubscribe", channel="ticker", exchange="binance", symbol="*")
        assert code_of(absent) == "not_subscribed"
        assert len((await client.request("list"))["subscriptions"]) == 3

        # A burst over the rate limit: every request answered, the excess refused.
        for request_id in range(100, 200):
            await ws.send(f'{{"id": {request_id}, "op": "ping"}}')
        answers = [await client.answer(request_id) for request_id in range(100, 200)]
        codes = {answer["type"] if answer["type"] == "ack" else answer["code"] for answer in answers}
        assert codes == {"ack", "rate_limited"}

        # After all that, the connection still delivers.
        records = _busy_stream(("trades",))[:50]
        await asyncio.to_thread(produce, kafka.bootstrap, records)
        await settle(broadcaster, len(records), client)
        assert received(client) == expected(records, lambda topic, key: True)

        # A frame over the transport limit (1 MiB) is refused by the websocket layer itself.
        with contextlib.suppress(ConnectionClosed):  # the server may close while the frame is still going out
            await ws.send("x" * 2_000_000)
        code, _ = await _read_to_close(client)
        assert code == 1009
        assert broadcaster.get("/health")[0] == 200

    with Broadcaster(kafka.bootstrap, tmp_path, **settings) as broadcaster:
        asyncio.run(run(broadcaster))
