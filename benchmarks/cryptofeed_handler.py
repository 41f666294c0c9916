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
trade id), 28,040 bookTicker, 9,757 trades, 3,451 depth diffs and the REST snapshot. Two figures:

* the flow's whole step as in ``benchmarks.normalize``, envelope decoding included (cryptofeed's side has no
  envelope: its frames arrive decoded from the websocket), the conservative comparison;
* handler against handler: our keyed step over envelopes decoded beforehand, in batches of 1000, the way
  cryptofeed's handler gets frames its connection already received.
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
from operators.dead_letter import SourceRef
from operators.normalize import NormalizeLogic
from operators.venues.base import NormalizerSettings
from schemas.raw import REST, RawEnvelope

__all__ = ["PIP_PIN", "measure"]

PIP_PIN = "cryptofeed==2.4.1"
NAME = "normalize vs cryptofeed Binance handler, same frames (1 process, books included)"
HANDLER_NAME = "normalize handler vs cryptofeed Binance handler (envelopes decoded beforehand)"
TARGET = "ratio >= 2"
BATCH = 1000


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


def _handler_only(envelopes: list[RawEnvelope]) -> None:
    """The keyed step over envelopes already decoded (one instrument: one logic), in Bytewax-sized batches."""
    logic = NormalizeLogic(None, NormalizerSettings())
    ref = SourceRef(topic="raw")
    for start in range(0, len(envelopes), BATCH):
        logic.on_batch([(env, ref) for env in envelopes[start : start + BATCH]])


def measure(repeats: int = 5, quick: bool = False) -> list[Result]:
    try:
        import cryptofeed  # noqa: F401
    except ImportError as exc:
        reason = f"cryptofeed is not installed ({exc}); pip install {PIP_PIN}"
        baseline = "cryptofeed Binance.message_handler"
        return [Skipped(name, reason, "frames/s", baseline, TARGET) for name in (NAME, HANDLER_NAME)]
    envelopes = [_as_agg_trade(env) for env in base_envelopes()[: QUICK_FRAMES if quick else None]]
    snapshot = next(env.frame for env in envelopes if env.kind == REST)
    frames = [(env.frame, env.receipt_ts / 1e6) for env in envelopes if env.kind != REST]
    values = raw_records(envelopes)
    ours = 0.0
    handler = 0.0
    theirs = 0.0
    counts: dict[str, int] = {}
    for _ in range(repeats):  # alternated, so both see the same machine weather
        elapsed, counts = _cryptofeed_run(frames, snapshot)
        theirs = max(theirs, len(values) / elapsed)
        start = time.perf_counter()
        normalize_all(values)
        ours = max(ours, len(values) / (time.perf_counter() - start))
        start = time.perf_counter()
        _handler_only(envelopes)
        handler = max(handler, len(envelopes) / (time.perf_counter() - start))
    made = ", ".join(f"{count:,} {name}" for name, count in sorted(counts.items()))
    baseline = f"cryptofeed {_version()} Binance.message_handler, no-op callbacks ({made})"
    note = f"{len(values):,} frames, trades as aggTrade; best of {repeats}"
    return [
        Figure(NAME, ours, "frames/s", theirs, baseline, TARGET, f"{note}; our side includes envelope decoding"),
        Figure(HANDLER_NAME, handler, "frames/s", theirs, baseline, TARGET, f"{note}; batches of {BATCH}"),
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
