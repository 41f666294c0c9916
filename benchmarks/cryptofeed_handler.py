"""Normalize throughput next to cryptofeed's own Binance handler on the same frames, offline.

    python -m benchmarks.cryptofeed_handler [--repeats N] [--quick]

cryptofeed (``pip install cryptofeed==2.4.1``) is driven without any network: its ``Binance`` feed is built
with the symbol table set beforehand (so no ``exchangeInfo`` request), its REST client answers the depth
snapshot request with the recorded snapshot, and every websocket frame is handed to ``message_handler`` the way
its connection handler does (``await handler(frame, conn, receipt_time)``), with no-op async callbacks for
trades, tickers and L2 book updates. It builds its own records (``Trade``, ``Ticker``, ``OrderBook`` with deltas,
``Decimal`` prices) and keeps the book.

Both sides get the same frames: the hftbacktest Binance spot stream with its ``trade`` events written as
``aggTrade`` events (cryptofeed's Binance feed only handles ``aggTrade``; same fields, ``a``/``f``/``l`` = the
trade id), 28,040 bookTicker, 9,757 trades, 3,451 depth diffs and the REST snapshot. Our side is the flow's
whole step as in ``benchmarks.normalize`` (envelope decoding included), so the comparison is conservative.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec
import orjson

from benchmarks.common import Figure, Result, Skipped, print_figures
from benchmarks.inputs import base_envelopes
from benchmarks.normalize import QUICK_FRAMES, normalize_all, raw_records
from schemas.raw import REST, RawEnvelope

__all__ = ["PIP_PIN", "measure"]

PIP_PIN = "cryptofeed==2.4.1"
NAME = "normalize vs cryptofeed Binance handler, same frames (1 process, books included)"
TARGET = "ratio >= 2"


def _as_agg_trade(env: RawEnvelope) -> RawEnvelope:
    """A ``trade`` event rewritten as the ``aggTrade`` event cryptofeed's Binance feed handles."""
    if env.channel != "trade":
        return env
    msg = orjson.loads(env.frame)
    d = msg["data"]
    agg = {"e": "aggTrade", "E": d["E"], "s": d["s"], "a": d["t"], "p": d["p"], "q": d["q"]}
    agg |= {"f": d["t"], "l": d["t"], "T": d["T"], "m": d["m"], "M": d["M"]}
    stream = msg["stream"].replace("@trade", "@aggTrade")
    frame = orjson.dumps({"stream": stream, "data": agg}).decode()
    return msgspec.structs.replace(env, channel="aggTrade", frame=frame)


class _RecordedRest:
    """cryptofeed's HTTP client, answering with the recorded depth snapshot."""

    def __init__(self, snapshot: str) -> None:
        self.snapshot = snapshot
        self.requests = 0

    async def read(self, *args: Any, **kwargs: Any) -> str:
        self.requests += 1
        return self.snapshot

    async def close(self) -> None:
        return None


def _cryptofeed_run(frames: list[tuple[str, float]], snapshot: str) -> tuple[float, dict[str, int]]:
    """Seconds cryptofeed's handler takes over ``frames``, and the callbacks it made per record type."""
    from cryptofeed.defines import BINANCE, L2_BOOK, SPOT, TICKER, TRADES
    from cryptofeed.exchanges import Binance
    from cryptofeed.symbols import Symbols

    info = {"tick_size": {"BTC-USDT": "0.01"}, "instrument_type": {"BTC-USDT": SPOT}}
    Symbols.set(BINANCE, {"BTC-USDT": "BTCUSDT"}, info)  # what exchangeInfo would have taught it
    counts: dict[str, int] = {}

    async def noop(obj: Any, receipt_timestamp: float) -> None:
        counts[type(obj).__name__] = counts.get(type(obj).__name__, 0) + 1

    callbacks = {TRADES: noop, TICKER: noop, L2_BOOK: noop}
    feed = Binance(symbols=["BTC-USDT"], channels=[TRADES, TICKER, L2_BOOK], callbacks=callbacks)
    feed.http_conn = _RecordedRest(snapshot)

    async def run() -> float:
        handler = feed.message_handler
        start = time.perf_counter()
        for frame, receipt in frames:
            await handler(frame, None, receipt)
        return time.perf_counter() - start

    elapsed = asyncio.run(run())
    return elapsed, counts


def measure(repeats: int = 5, quick: bool = False) -> list[Result]:
    try:
        import cryptofeed  # noqa: F401
    except ImportError as exc:
        reason = f"cryptofeed is not installed ({exc}); pip install {PIP_PIN}"
        return [Skipped(NAME, reason, "frames/s", "cryptofeed Binance.message_handler", TARGET)]
    envelopes = [_as_agg_trade(env) for env in base_envelopes()[: QUICK_FRAMES if quick else None]]
    snapshot = next(env.frame for env in envelopes if env.kind == REST)
    frames = [(env.frame, env.receipt_ts / 1e6) for env in envelopes if env.kind != REST]
    values = raw_records(envelopes)
    ours = 0.0
    theirs = 0.0
    counts: dict[str, int] = {}
    for _ in range(repeats):  # alternated, so both see the same machine weather
        elapsed, counts = _cryptofeed_run(frames, snapshot)
        theirs = max(theirs, len(values) / elapsed)
        start = time.perf_counter()
        normalize_all(values)
        ours = max(ours, len(values) / (time.perf_counter() - start))
    made = ", ".join(f"{count:,} {name}" for name, count in sorted(counts.items()))
    return [
        Figure(
            NAME,
            ours,
            "frames/s",
            theirs,
            f"cryptofeed {_version()} Binance.message_handler, no-op callbacks ({made})",
            TARGET,
            f"{len(values):,} frames, trades as aggTrade; our side includes envelope decoding; best of {repeats}",
        )
    ]


def _version() -> str:
    from importlib.metadata import version

    return version("cryptofeed")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help=f"only the first {QUICK_FRAMES:,} frames")
    args = parser.parse_args()
    print_figures(measure(args.repeats, args.quick))


if __name__ == "__main__":
    main()
