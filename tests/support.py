"""Helpers shared by the tests: the real captures, an independent reader of them, and a book replayer.

The capture reader here is deliberately separate from ``connectors.capture`` so tests count trades, tickers and
candles without trusting the code under test.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zstandard
from msgspec.structs import replace

from connectors.capture import capture_envelopes
from operators.normalize import normalize_envelopes
from operators.venues.base import NormalizerSettings
from schemas.raw import RawEnvelope

DATA = Path(__file__).resolve().parents[1] / "data"
CRYPTOFEED = DATA / "cex" / "cryptofeed"
HFTBACKTEST = DATA / "cex" / "hftbacktest" / "binance-spot-btcusdt-20240808.gz"

Out = tuple[str, str, dict[str, Any]]  # key, topic, record


def capture(name: str) -> Path:
    return CRYPTOFEED / f"{name}.jsonl.zst"


def raw_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a cryptofeed capture as JSON (independent of connectors.capture)."""
    text = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True).read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def recv_messages(path: Path) -> list[Any]:
    """Every received websocket frame of a cryptofeed capture, JSON-decoded, in file order."""
    return [json.loads(line["data"]) for line in raw_lines(path) if line["t"] == "recv" and "data" in line]


def hftbacktest_frames() -> list[Any]:
    with gzip.open(HFTBACKTEST, "rt") as handle:
        return [json.loads(line.split(" ", 1)[1]) for line in handle if line.strip()]


def envelopes(path: Path, venue: str | None = None) -> list[RawEnvelope]:
    return list(capture_envelopes(path, venue))


def normalize(envs: Iterable[RawEnvelope], snapshot_interval_us: int = 0) -> list[Out]:
    """Run the normalize step (the same logic the flow runs) and flatten to (key, topic, record)."""
    settings = NormalizerSettings(snapshot_interval_us=snapshot_interval_us)
    return [(key, topic, record) for key, (topic, record) in normalize_envelopes(envs, settings)]


def records(outs: list[Out], topic: str, key: str | None = None) -> list[dict[str, Any]]:
    return [rec for k, t, rec in outs if t == topic and (key is None or k == key)]


def drop_nth(envs: list[RawEnvelope], predicate: Callable[[RawEnvelope], bool], n: int) -> list[RawEnvelope]:
    """The envelopes with the n-th one matching ``predicate`` removed."""
    hits = [i for i, env in enumerate(envs) if predicate(env)]
    drop = hits[n]
    return envs[:drop] + envs[drop + 1 :]


def swap_nth(envs: list[RawEnvelope], predicate: Callable[[RawEnvelope], bool], n: int) -> list[RawEnvelope]:
    """The envelopes with the n-th and (n+1)-th matching ones exchanged (frames swapped, times kept)."""
    hits = [i for i, env in enumerate(envs) if predicate(env)]
    a, b = hits[n], hits[n + 1]
    out = list(envs)
    out[a] = replace(envs[b], receipt_ts=envs[a].receipt_ts)
    out[b] = replace(envs[a], receipt_ts=envs[b].receipt_ts)
    return out


class ReplayedBook:
    """A book rebuilt only from ``lob`` records, by the documented replay rule."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.valid = False

    def apply(self, rec: dict[str, Any]) -> None:
        action = rec["action"]
        if action == "resync":
            self.bids, self.asks, self.valid = {}, {}, False
            return
        if action == "snapshot":
            self.bids = dict(zip(rec["bid_price"], rec["bid_size"], strict=True))
            self.asks = dict(zip(rec["ask_price"], rec["ask_size"], strict=True))
            self.valid = True
            return
        assert self.valid, f"update published for an invalid book: {rec}"
        for side, prices, sizes in (
            (self.bids, rec["bid_price"], rec["bid_size"]),
            (self.asks, rec["ask_price"], rec["ask_size"]),
        ):
            for price, size in zip(prices, sizes, strict=True):
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size

    def best_bid(self) -> float | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> float | None:
        return min(self.asks) if self.asks else None


def replay_books(outs: list[Out]) -> dict[str, ReplayedBook]:
    """Apply every lob record in order; asserts no update is ever published for an invalid book."""
    books: dict[str, ReplayedBook] = defaultdict(ReplayedBook)
    for key, topic, rec in outs:
        if topic == "lob":
            books[key].apply(rec)
    return dict(books)


def lob_actions(outs: list[Out], key: str) -> list[str]:
    return [rec["action"] for rec in records(outs, "lob", key)]
