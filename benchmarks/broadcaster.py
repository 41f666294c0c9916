"""Broadcaster fan-out: records delivered per second to 100 clients, and produce-to-receive latency.

    python -m benchmarks.broadcaster [--clients 100] [--quick]

Real parts: an embedded Tansu broker, ``python -m broadcaster`` as its own process, 100 websocket clients
(``websockets``) in this process, each subscribed to every record of the stream (trades, ticker and lob of the
hftbacktest Binance spot BTCUSDT capture, 41,247 standardized records produced as Avro).

* Throughput: every record produced at once; deliveries (records x clients) per second until every client has
  them all. Baseline: the same clients receiving the same frames, in the same message sizes, from a bare
  Starlette endpoint on uvicorn in its own process (no Kafka, no decoding, no routing): the websocket
  transport's limit here.
* Latency: time from ``produce()`` to receipt, p50 and p99 over 10 of the clients, at half the target's load
  (50,000 deliveries/s: 500 records/s to 100 clients), and p99 at half the measured maximum. Baseline: a plain
  confluent-kafka consumer of the same records at the same rate (what Kafka alone costs on this broker).
  Every latency run gets a broker of its own: Tansu's in-memory storage answers fetches more slowly as its log
  grows (its p99 tripled after the throughput run's records), which a real Kafka log does not do.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import websockets
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from benchmarks.common import REPO, Figure, Result, percentile, print_figures
from benchmarks.inputs import base_envelopes
from connectors.config import Settings
from connectors.kafka import ensure_topics
from embedded.kafka import TansuBroker
from embedded.process import ManagedProcess, free_port, wait_until
from operators.normalize import normalize_envelopes
from operators.venues.base import NormalizerSettings
from schemas.serde import codec_for

__all__ = ["main", "measure"]

TOPICS = ("trades", "ticker", "lob")
#: Envelopes of the recording and clients used with ``--quick``.
QUICK_ENVELOPES = 5000
QUICK_CLIENTS = 10
LATENCY_CLIENTS = 10
#: The issue's throughput target; latency is measured at half of it.
TARGET_DELIVERIES = 100_000
#: Seconds of records produced per latency run.
LATENCY_SECONDS = 8
Message = tuple[str, bytes, bytes]  # topic, key, Avro value


def _stream(limit: int | None = None) -> list[Message]:
    settings = NormalizerSettings()
    return [
        (topic, key.encode(), codec_for(topic).encode(record))
        for key, (topic, record) in normalize_envelopes(base_envelopes()[:limit], settings)
        if topic in TOPICS
    ]


async def _subscribed(url: str) -> websockets.ClientConnection:
    """A connection subscribed to every record of the stream (acks read)."""
    ws = await websockets.connect(url, ping_interval=None, max_size=None)
    for topic in TOPICS:
        await ws.send(
            orjson.dumps({"id": topic, "op": "subscribe", "channel": topic, "exchange": "*", "symbol": "*"}).decode()
        )
    acks = 0
    while acks < len(TOPICS):
        message = await ws.recv()
        acks += str(message).count('"type":"ack"')
    return ws


async def _count_all(urls: list[str], total: int, start: Callable[[], None]) -> float:
    """Seconds from ``start()`` until every client received ``total`` frames."""
    connections = [await _subscribed(url) for url in urls]

    async def receive(ws: websockets.ClientConnection) -> None:
        got = 0
        async for message in ws:
            assert isinstance(message, str)
            got += message.count('"type":"data"')
            if got >= total:
                return

    began = time.perf_counter()
    start()
    await asyncio.gather(*(receive(ws) for ws in connections))
    elapsed = time.perf_counter() - began
    for ws in connections:
        await ws.close()
    return elapsed


def _produce(
    bootstrap: str, stream: list[Message], rate: float | None, sent: dict[tuple[str, int, int], float]
) -> None:
    """Produce the stream (at ``rate`` records/s, or at once), noting each record's produce time by offset."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0 if rate else 5, "enable.idempotence": True})
    began = time.perf_counter()
    for i, (topic, key, value) in enumerate(stream):
        if rate:
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        produced_at = time.perf_counter()

        def delivered(err: Any, msg: Any, at: float = produced_at) -> None:
            if err is None:
                sent[(msg.topic(), msg.partition(), msg.offset())] = at

        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    producer.flush(60)


async def _latency_clients(url: str, clients: int, total: int, started: threading.Event) -> list[tuple[Any, float]]:
    """(coordinates, receive time) of every data frame on ``LATENCY_CLIENTS`` of the clients."""
    connections = [await _subscribed(url) for _ in range(clients)]
    samples: list[tuple[Any, float]] = []

    async def receive(ws: websockets.ClientConnection, timed: bool) -> None:
        got = 0
        async for message in ws:
            now = time.perf_counter()
            assert isinstance(message, str)
            for line in message.split("\n"):
                if timed:
                    frame = orjson.loads(line)
                    if frame["type"] == "data":
                        samples.append(((frame["channel"], frame["partition"], frame["offset"]), now))
                        got += 1
                elif '"type":"data"' in line:
                    got += 1
            if got >= total:
                return

    started.set()
    await asyncio.gather(*(receive(ws, i < LATENCY_CLIENTS) for i, ws in enumerate(connections)))
    for ws in connections:
        await ws.close()
    return samples


def _kafka_latency(bootstrap: str, stream: list[Message], rate: float) -> list[float]:
    """Produce-to-consume latencies of a plain consumer (the baseline)."""
    # The broadcaster's own consumer settings (KAFKA_FETCH_WAIT_MAX_MS included), so only the broadcaster differs.
    consumer = Consumer({**Settings(kafka_brokers=bootstrap).kafka_consumer_config(), "group.id": "bench"})
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(t, p, OFFSET_END) for t in TOPICS for p in metadata.topics[t].partitions])
    consumer.poll(1.0)
    sent: dict[tuple[str, int, int], float] = {}
    producer = threading.Thread(target=_produce, args=(bootstrap, stream, rate, sent))
    producer.start()
    received: list[tuple[Any, float]] = []
    while len(received) < len(stream):
        first = consumer.poll(0.5)  # as the broadcaster polls: wait for one, then drain without waiting
        batch = [first, *consumer.consume(999, 0)] if first is not None else []
        for msg in batch:
            if msg.error() is None:
                received.append(((msg.topic(), msg.partition(), msg.offset()), time.perf_counter()))
    producer.join()
    consumer.close()
    return [(at - sent[coords]) * 1000 for coords, at in received if coords in sent]


def serve_bare(frames_path: str, port: int, clients: int, message_chars: int = 65_536) -> None:
    """The baseline server: sends the frames (one per line of the file) to every client once all subscribed."""
    frames = Path(frames_path).read_text().splitlines()
    messages: list[str] = []
    batch: list[str] = []
    size = 0
    for frame in frames:
        batch.append(frame)
        size += len(frame) + 1
        if size >= message_chars:
            messages.append("\n".join(batch))
            batch, size = [], 0
    if batch:
        messages.append("\n".join(batch))
    everyone: dict[str, Any] = {"count": 0, "event": None}

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        if everyone["event"] is None:
            everyone["event"] = asyncio.Event()
        for _ in TOPICS:
            await ws.receive_text()
            await ws.send_text('{"type":"ack"}')
        everyone["count"] += 1
        if everyone["count"] == clients:
            everyone["event"].set()
        await everyone["event"].wait()
        for message in messages:
            await ws.send_text(message)
        await ws.receive()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False)


def _bare_rate(frames: list[str], clients: int, workdir: Path) -> float:
    import socket
    import sys

    path = workdir / "frames.jsonl"
    path.write_text("\n".join(frames))
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "benchmarks.broadcaster",
        "--serve-bare",
        str(path),
        "--port",
        str(port),
        "--clients",
        str(clients),
    ]
    with ManagedProcess("bare", argv, workdir / "bare.log", cwd=REPO):

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True

        wait_until(listening, 30, "bare server")
        elapsed = asyncio.run(_count_all([f"ws://127.0.0.1:{port}/ws"] * clients, len(frames), lambda: None))
    return len(frames) * clients / elapsed


def _broadcaster(bootstrap: str, workdir: Path) -> tuple[ManagedProcess, int]:
    import os
    import sys
    import urllib.request

    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BROKERS": bootstrap,
        "PYTHONPATH": str(REPO),
        "BROADCASTER_PORT": str(port),
        "BROADCASTER_TOPICS": ",".join(TOPICS),
        "BROADCASTER_QUEUE_LENGTH": "100000",
    }
    process = ManagedProcess(
        "broadcaster", [sys.executable, "-m", "broadcaster"], workdir / "broadcaster.log", env, REPO
    )
    process.start()

    def ready() -> bool:
        process.check_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return bool(response.status == 200)

    wait_until(ready, 60, "broadcaster")
    return process, port


@contextmanager
def _fresh_broker() -> Iterator[tuple[str, Path]]:
    """A broker of its own with the stream's topics (bootstrap address, work directory)."""
    with tempfile.TemporaryDirectory() as tmp, TansuBroker(Path(tmp)) as kafka:
        ensure_topics(Settings(kafka_brokers=kafka.bootstrap, topic_partitions="default=3"), TOPICS)
        yield kafka.bootstrap, Path(tmp)


@contextmanager
def _served() -> Iterator[tuple[str, str]]:
    """A fresh broker and a broadcaster reading it (bootstrap address, websocket URL)."""
    with _fresh_broker() as (bootstrap, workdir):
        process, port = _broadcaster(bootstrap, workdir)
        try:
            yield bootstrap, f"ws://127.0.0.1:{port}/ws"
        finally:
            process.stop()


def _broadcaster_latency(stream: list[Message], clients: int, rate: float) -> list[float]:
    """Produce-to-client latencies (ms) of ``stream`` at ``rate`` records/s, on a broker of its own."""
    sent: dict[tuple[str, int, int], float] = {}
    with _served() as (bootstrap, url):
        started = threading.Event()

        def produce_when_subscribed() -> None:
            started.wait(60)
            _produce(bootstrap, stream, rate, sent)

        producer = threading.Thread(target=produce_when_subscribed)
        producer.start()
        samples = asyncio.run(_latency_clients(url, clients, len(stream), started))
        producer.join()
    return [(at - sent[coords]) * 1000 for coords, at in samples if coords in sent]


def _baseline_latency(stream: list[Message], rate: float) -> list[float]:
    """The plain consumer's produce-to-consume latencies (ms), on a broker of its own."""
    with _fresh_broker() as (bootstrap, _):
        return _kafka_latency(bootstrap, stream, rate)


def _throughput(stream: list[Message], clients: int) -> float:
    """Deliveries per second when the whole stream is produced at once."""
    sent: dict[tuple[str, int, int], float] = {}
    with _served() as (bootstrap, url):
        producer = threading.Thread(target=_produce, args=(bootstrap, stream, None, sent))
        elapsed = asyncio.run(_count_all([url] * clients, len(stream), producer.start))
        producer.join()
    return len(stream) * clients / elapsed


def measure(clients: int = 100, quick: bool = False) -> list[Result]:
    if quick:
        clients = min(clients, QUICK_CLIENTS)
    stream = _stream(QUICK_ENVELOPES if quick else None)
    deliveries = _throughput(stream, clients)
    target_rate = TARGET_DELIVERIES / 2 / clients
    half_max_rate = deliveries / clients / 2
    runs: dict[float, tuple[list[float], list[float], int]] = {}
    for rate in (target_rate, half_max_rate):
        sample = stream[: int(rate * LATENCY_SECONDS)]
        runs[rate] = (_broadcaster_latency(sample, clients, rate), _baseline_latency(sample, rate), len(sample))
    with tempfile.TemporaryDirectory() as tmp:
        frames = [
            orjson.dumps({"type": "data", "channel": t, "key": k.decode(), "data": codec_for(t).decode(v)}).decode()
            for t, k, v in stream
        ]
        bare = _bare_rate(frames, clients, Path(tmp))

    def latency(rate: float, p: int, target: str, load: str) -> Figure:
        ours, kafka, count = runs[rate]
        return Figure(
            f"broadcaster latency p{p} at {rate * clients:,.0f} deliveries/s ({load})",
            percentile(ours, p),
            "ms",
            percentile(kafka, p),
            f"Kafka produce-to-consume p{p}",
            target,
            f"{rate:,.0f} records/s to {clients} clients; {count:,} records, timed on {LATENCY_CLIENTS} clients",
        )

    return [
        Figure(
            f"broadcaster deliveries/s to {clients} clients (1 process)",
            deliveries,
            "records/s",
            bare,
            "bare Starlette/uvicorn websocket send of the same frames",
            f"value >= {TARGET_DELIVERIES}",
            f"{len(stream):,} trades/ticker/lob records to every client",
        ),
        latency(target_rate, 50, "", "half the target's load"),
        latency(target_rate, 99, "value < 50", "half the target's load"),
        latency(half_max_rate, 99, "", "half the measured maximum"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIENTS} clients, {QUICK_ENVELOPES:,} frames")
    parser.add_argument("--serve-bare", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.port, args.clients)
        return
    print_figures(measure(args.clients, args.quick), digits=1)


if __name__ == "__main__":
    main()
