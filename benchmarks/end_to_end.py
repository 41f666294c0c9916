"""End-to-end latency: a venue frame received by the collector -> the trade at a broadcaster websocket client.

    python -m benchmarks.end_to_end [--seconds 40] [--quick]

Everything real and running at once: Tansu; the exchange simulator serving the hftbacktest Binance spot BTCUSDT
recording at its recorded pace (about 120 frames/s: bookTicker, trades, depth diffs, the REST snapshot);
``flows.collect_cex`` pointed at it; ``flows.normalize_cex`` (tailing raw); ``python -m broadcaster``; and one
websocket client subscribed to every Binance trade. Latency per trade = client receipt (wall clock) - the raw
envelope's ``receipt_timestamp`` (the collector's wall clock when the frame arrived). Same machine, same clock.

Before the venue starts, a probe trade produced to raw must reach the client, so the flows and the broadcaster
are consuming; trades of the first ``WARMUP_S`` seconds after the first one are left out (connection set-up).
Baseline, measured on the same frames at the same time: a plain Kafka consumer of raw, receipt timestamp to
consumption (what collection and one Kafka hop cost; the rest is normalize + Kafka + broadcaster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import websockets
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from benchmarks.common import HFTBACKTEST, REPO, Figure, Result, percentile, print_figures
from benchmarks.inputs import envelopes_for
from connectors.config import Settings
from connectors.kafka import ensure_topics
from embedded.kafka import TansuBroker
from embedded.process import ManagedProcess, free_port, wait_until
from schemas import CEX_TOPICS
from schemas.serde import codec_for
from simulator import Simulator

__all__ = ["measure"]

WARMUP_S = 5.0
NORMALIZE = "flows.normalize_cex:flow"
PROBE_KEY = "binance:ETH.USDT"


def _now_us() -> int:
    return time.time_ns() // 1000


class _Watcher(threading.Thread):
    """A plain consumer of ``topic`` noting, per trade, receipt -> produced (record timestamp) and -> consumed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.codec = None if topic == "raw" else codec_for(topic)
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "fetch.wait.max.ms": 10}
        )
        metadata = self.consumer.list_topics(topic, timeout=10)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in metadata.topics[topic].partitions])
        self.samples: list[tuple[int, float, float]] = []  # (receipt us, produced ms, consumed ms) after receipt
        self.frames = 0
        self.receipts: tuple[int, int] | None = None  # first and last receipt time of every record (us)
        self.stopping = threading.Event()

    def _receipt(self, value: bytes) -> tuple[int, bool]:
        """(receipt time, whether the record is a trade) of a record."""
        if self.codec is None:
            env = orjson.loads(value)
            return env["receipt_ts"], env.get("channel") == "trade"
        return self.codec.decode(value)["receipt_timestamp"], True

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                one = self.consumer.poll(0.05)  # wait for one, then drain without waiting (as the broadcaster)
                for msg in [one, *self.consumer.consume(999, 0)] if one is not None else []:
                    value = msg.value()
                    if msg.error() is not None or value is None or msg.key() == PROBE_KEY.encode():
                        continue
                    now = _now_us()
                    receipt, trade = self._receipt(value)
                    self.frames += 1
                    earliest, latest = self.receipts or (receipt, receipt)
                    self.receipts = (min(earliest, receipt), max(latest, receipt))
                    if trade:
                        produced = (msg.timestamp()[1] * 1000 - receipt) / 1000
                        self.samples.append((receipt, produced, (now - receipt) / 1000))
        finally:
            self.consumer.close()


def _produce_probe(bootstrap: str) -> None:
    """One ETHUSDT trade envelope into raw (the producer is gone when this returns)."""
    trade = next(env for env in envelopes_for("ETH", 20) if env.channel == "trade")
    producer = Producer({"bootstrap.servers": bootstrap})
    value = orjson.dumps({**orjson.loads(trade.to_json()), "receipt_ts": _now_us()})
    producer.produce("raw", key=PROBE_KEY.encode(), value=value)
    producer.flush(10)


async def _subscribed(url: str) -> Any:
    ws = await websockets.connect(url, ping_interval=None, max_size=None)
    request = {"id": 1, "op": "subscribe", "channel": "trades", "exchange": "binance", "symbol": "*"}
    await ws.send(orjson.dumps(request).decode())
    while '"type":"ack"' not in str(await ws.recv()):
        pass
    return ws


async def _trades(ws: Any, until: float, samples: list[tuple[int, float]], probe_seen: asyncio.Event) -> None:
    """Collect (receipt us, latency ms) of every trade data frame until the monotonic time ``until``."""
    while (left := until - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            return
        now = _now_us()
        for line in str(message).split("\n"):
            frame = orjson.loads(line)
            if frame.get("type") != "data":
                continue
            if frame["key"] == PROBE_KEY:
                probe_seen.set()
                continue
            receipt = frame["data"]["receipt_timestamp"]
            samples.append((receipt, (now - receipt) / 1000))


def _wait_ready(process: ManagedProcess, port: int) -> None:
    def ready() -> bool:
        process.check_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return bool(response.status == 200)

    wait_until(ready, 90, "broadcaster")


@contextlib.contextmanager
def _pipeline(workdir: Path) -> Iterator[tuple[TansuBroker, str, dict[str, str]]]:
    """Tansu, the normalize flow and the broadcaster, started and ready; yields (broker, ws url, flow env)."""
    with ExitStack() as stack:
        broker = stack.enter_context(TansuBroker(workdir / "kafka"))
        partitions = "default=4,raw=4"
        env = {
            **os.environ,
            "KAFKA_BROKERS": broker.bootstrap,
            "PYTHONPATH": str(REPO),
            "TOPIC_PARTITIONS": partitions,
            "LOG_LEVEL": "WARNING",
        }
        ensure_topics(Settings(kafka_brokers=broker.bootstrap, topic_partitions=partitions), ["raw", *CEX_TOPICS])
        bytewax = [sys.executable, "-m", "bytewax.run"]
        stack.enter_context(ManagedProcess("normalize", [*bytewax, NORMALIZE], workdir / "normalize.log", env, REPO))
        port = free_port()
        broadcaster_env = {**env, "BROADCASTER_PORT": str(port), "BROADCASTER_TOPICS": "trades,ticker,lob"}
        argv = [sys.executable, "-m", "broadcaster"]
        process = ManagedProcess("broadcaster", argv, workdir / "broadcaster.log", broadcaster_env, REPO)
        broadcaster = stack.enter_context(process)
        _wait_ready(broadcaster, port)
        yield broker, f"ws://127.0.0.1:{port}/ws", env


async def _run(workdir: Path, seconds: float) -> tuple[list[tuple[int, float]], list[_Watcher]]:
    with ExitStack() as stack:
        broker, url, env = stack.enter_context(_pipeline(workdir))
        ws = await _subscribed(url)
        samples: list[tuple[int, float]] = []
        probe_seen = asyncio.Event()
        reader = asyncio.create_task(_trades(ws, time.monotonic() + 3600, samples, probe_seen))
        try:
            _produce_probe(broker.bootstrap)
            await asyncio.wait_for(probe_seen.wait(), 120)  # the normalize flow and the broadcaster are live
            watchers = [_Watcher(broker.bootstrap, topic) for topic in ("raw", "trades")]
            for watcher in watchers:
                watcher.start()
                stack.callback(watcher.join, 5)
                stack.callback(watcher.stopping.set)
            simulator = stack.enter_context(Simulator(HFTBACKTEST, workdir, speed=1.0, venue="binance"))
            config = workdir / "collector.json"
            venue = {"instruments": ["BTCUSDT"], "channels": ["depth@100ms", "bookTicker", "trade"]}
            config.write_bytes(orjson.dumps({"venues": {"binance": {**venue, "endpoint": simulator.url}}}))
            collector_env = {**env, "COLLECTOR_CONFIG": str(config), "COLLECTOR_BACKOFF_MIN_S": "0.1"}
            argv = [sys.executable, "-m", "bytewax.run", "flows.collect_cex:flow"]
            collector = ManagedProcess("collector", argv, workdir / "collector.log", collector_env, REPO)
            stack.enter_context(collector)
            deadline = time.monotonic() + 120
            while not samples:
                if time.monotonic() > deadline or reader.done():
                    raise RuntimeError(f"no trade reached the client in 120s; collector log:\n{collector.log_tail()}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(WARMUP_S + seconds)
            return samples, watchers
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ws.close()


def _steady(samples: list[tuple[int, float]]) -> list[float]:
    """The latencies of the trades received from ``WARMUP_S`` after the first one on."""
    if not samples:
        return []
    start = min(receipt for receipt, _ in samples) + WARMUP_S * 1_000_000
    return [latency for receipt, latency in samples if receipt >= start]


def _p(values: list[float]) -> str:
    return f"{percentile(values, 50):.0f}/{percentile(values, 99):.0f}" if len(values) > 1 else "-"


def measure(seconds: float = 40.0, quick: bool = False) -> list[Result]:
    seconds = 10.0 if quick else seconds
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        samples, (raw, trades) = asyncio.run(_run(Path(tmp), seconds))
    latencies = _steady(samples)
    baseline = _steady([(receipt, consumed) for receipt, _, consumed in raw.samples])
    if len(latencies) < 2 or len(baseline) < 2:
        raise RuntimeError(f"too few trades: {len(latencies)} at the client, {len(baseline)} in raw")
    first, last = raw.receipts or (0, 0)
    rate = raw.frames / max((last - first) / 1e6, 1.0)
    hops = {
        "raw produced": _steady([(r, produced) for r, produced, _ in raw.samples]),
        "raw consumed": baseline,
        "trades produced": _steady([(r, produced) for r, produced, _ in trades.samples]),
        "trades consumed": _steady([(r, consumed) for r, _, consumed in trades.samples]),
        "client": latencies,
    }
    return [
        Figure(
            "end-to-end p99 latency, venue frame -> websocket client (trades, recorded pace)",
            percentile(latencies, 99),
            "ms",
            percentile(baseline, 99),
            "collector receipt -> plain Kafka consumer of raw, p99 (same trades, same time)",
            "value < 100",
            f"{len(latencies):,} trades over {seconds:.0f}s after {WARMUP_S:.0f}s warm-up, about {rate:,.0f} raw "
            f"frames/s; ms after receipt, p50/p99: "
            + ", ".join(f"{hop} {_p(values)}" for hop, values in hops.items())
            + f"; max {max(latencies):.0f}",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--quick", action="store_true", help="10 seconds")
    args = parser.parse_args()
    print_figures(measure(args.seconds, args.quick), digits=1)


if __name__ == "__main__":
    main()
