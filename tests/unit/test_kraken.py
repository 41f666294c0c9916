"""Kraken websockets v1 on the real recording: trades, tickers and checksummed books, checked against raw frames.

Expectations are computed here from the raw capture (tests/support.py's independent reader), with an
independent book rebuild and checksum; spread and ohlc (not in the recording) use frames shaped like Kraken's
documentation examples.
"""

from __future__ import annotations

import heapq
import json
import pickle
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.kraken import KrakenFramer, KrakenNormalizer
from schemas.raw import CONTROL, RawEnvelope
from tests.support import (
    capture,
    drop_nth,
    envelopes,
    normalize,
    raw_lines,
    records,
    recv_messages,
    replay_books,
    swap_nth,
)

KRAKEN = capture("KRAKEN")
ROOT = Path(__file__).resolve().parents[2]
_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


def _key(pair: str) -> str:
    base, quote = pair.split("/")
    return f"kraken:{_ALIASES.get(base, base)}.{_ALIASES.get(quote, quote)}"


def _us(seconds: str) -> int:
    return int(Decimal(seconds) * 1_000_000)


def _data_frames() -> list[tuple[int, str, list[Any]]]:
    """(receipt µs, connection, frame) of every data frame (JSON array) in the capture, in file order."""
    out = []
    for line in raw_lines(KRAKEN):
        if line["t"] == "recv" and line["data"].startswith("["):
            out.append((round(line["ts"] * 1_000_000), line["conn"], json.loads(line["data"])))
    return out


def _book_frames() -> dict[str, list[list[Any]]]:
    """Each pair's book frames (payload dicts only), in order."""
    frames: dict[str, list[list[Any]]] = defaultdict(list)
    for msg in recv_messages(KRAKEN):
        if isinstance(msg, list) and msg[-2].startswith("book-"):
            frames[msg[-1]].append(msg[1:-2])
    return frames


def _strip(text: str) -> str:
    return str(int(text.replace(".", "")))


class NaiveBook:
    """Kraken's documented book maintenance, written plainly: dicts, full sorts, string checksum."""

    def __init__(self, depth: int, snapshot: dict[str, Any]) -> None:
        self.depth = depth
        self.asks = {float(p): (p, s) for p, s, *_ in snapshot["as"]}
        self.bids = {float(p): (p, s) for p, s, *_ in snapshot["bs"]}

    def apply(self, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            for side, levels in ((self.asks, payload.get("a", [])), (self.bids, payload.get("b", []))):
                for price, size, *_ in levels:
                    if Decimal(size) == 0:
                        side.pop(float(price), None)
                    else:
                        side[float(price)] = (price, size)
        for side, keep in ((self.asks, sorted(self.asks)), (self.bids, sorted(self.bids, reverse=True))):
            for price in keep[self.depth :]:
                del side[price]

    def checksum(self) -> int:
        asks = [self.asks[p] for p in heapq.nsmallest(10, self.asks)]
        bids = [self.bids[p] for p in heapq.nlargest(10, self.bids)]
        return zlib.crc32("".join(_strip(p) + _strip(s) for p, s in asks + bids).encode())

    def floats(self) -> tuple[dict[float, float], dict[float, float]]:
        return {p: float(s) for p, (_, s) in self.bids.items()}, {p: float(s) for p, (_, s) in self.asks.items()}


def _replay(frames: list[list[Any]], depth: int = 1000) -> tuple[NaiveBook, list[tuple[int, int | None]], int | None]:
    """Snapshot + updates: the book, (event µs, checksum) per verified update, index of the first mismatch."""
    book = NaiveBook(depth, frames[0][0])
    verified: list[tuple[int, int | None]] = []
    for index, payloads in enumerate(frames[1:], start=1):
        book.apply(payloads)
        c = payloads[-1].get("c")
        if c is not None and book.checksum() != int(c):
            return book, verified, index
        stamps = [Decimal(lv[2]) for p in payloads for side in ("a", "b") for lv in p.get(side, [])]
        verified.append((int(max(stamps) * 1_000_000), None if c is None else int(c)))
    return book, verified, None


@pytest.fixture(scope="module")
def kraken_envs() -> list[RawEnvelope]:
    return envelopes(KRAKEN)


@pytest.fixture(scope="module")
def kraken_outs(kraken_envs: list[RawEnvelope]) -> list[Any]:
    return normalize(kraken_envs)


def test_every_trade_comes_out_once(kraken_outs: list[Any]) -> None:
    seen: dict[str, tuple[str, int]] = {}
    expected: Counter[tuple[Any, ...]] = Counter()
    for _, _, msg in _data_frames():
        if msg[-2] != "trade":
            continue
        for price, size, time, side, *_ in msg[1]:
            last, n = seen.get(msg[-1], ("", -1))
            n = n + 1 if time == last else 0
            seen[msg[-1]] = (time, n)
            expected[(_key(msg[-1]), f"{time}-{n}", _us(time), float(price), float(size), side)] += 1
    got = Counter(
        (f"kraken:{r['symbol']}", r["trade_id"], r["event_timestamp"], r["price"], r["size"], r["side"][0])
        for r in records(kraken_outs, "trades")
    )
    assert sum(expected.values()) == 10
    assert got == expected


def test_tickers_match_their_frames(kraken_outs: list[Any]) -> None:
    expected = []
    for ts, _, msg in _data_frames():
        if msg[-2] == "ticker":
            t = msg[1]
            bid, ask, last = float(t["b"][0]), float(t["a"][0]), float(t["c"][0])
            sizes = (float(t["b"][2]), float(t["a"][2]), float(t["c"][1]))
            expected.append((_key(msg[-1]), ts, bid, ask, last, sizes, float(t["v"][1])))
    got = [
        (
            f"kraken:{r['symbol']}",
            r["event_timestamp"],
            r["bid_price"],
            r["ask_price"],
            r["last_price"],
            (r["bid_size"], r["ask_size"], r["last_size"]),
            r["volume_24h"],
        )
        for r in records(kraken_outs, "ticker")
    ]
    assert len(expected) == 18
    assert got == expected


def test_books_verify_every_checksum_and_equal_an_independent_rebuild(kraken_outs: list[Any]) -> None:
    frames = _book_frames()
    checksummed = sum(1 for pair in frames.values() for payloads in pair if "c" in payloads[-1])
    assert checksummed == 4269
    lob = records(kraken_outs, "lob")
    assert not [r for r in lob if r["action"] == "resync"], "no false checksum mismatches"
    assert sum(1 for r in lob if r["action"] == "update" and r["checksum"] is not None) == checksummed
    replayed = replay_books(kraken_outs)
    assert len(replayed) == len(frames) == 10
    for pair, pair_frames in frames.items():
        naive, verified, mismatch = _replay(pair_frames)
        assert mismatch is None, f"{pair}: the recording itself fails its checksum at frame {mismatch}"
        updates = [r for r in records(kraken_outs, "lob", _key(pair)) if r["action"] == "update"]
        assert [(r["event_timestamp"], r["checksum"]) for r in updates] == verified
        book = replayed[_key(pair)]
        assert book.valid and (book.bids, book.asks) == naive.floats()


def _first_detected(pair_frames: list[list[Any]], mutate: str) -> tuple[int, list[list[Any]]]:
    """The first n >= 5 whose drop (or swap with n+1) the independent rebuild detects, and the mutated frames."""
    for n in range(5, len(pair_frames) - 1):
        frames = list(pair_frames)
        if mutate == "drop":
            del frames[n]
        else:
            frames[n], frames[n + 1] = frames[n + 1], frames[n]
        if _replay(frames)[2] is not None:
            return n, frames
    raise AssertionError("no detectable mutation")


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_lost_or_reordered_update_is_a_checksum_resync(kraken_envs: list[RawEnvelope], mutate: str) -> None:
    pair = "XMR/USD"
    n, frames = _first_detected(_book_frames()[pair], mutate)
    _, verified, mismatch = _replay(frames)

    def is_book(env: RawEnvelope) -> bool:
        return env.venue_symbol == pair and env.channel.startswith("book-")

    broken = drop_nth(kraken_envs, is_book, n) if mutate == "drop" else swap_nth(kraken_envs, is_book, n)
    outs = normalize(broken)
    lob = records(outs, "lob", _key(pair))
    assert [r["action"] for r in lob] == ["snapshot"] + ["update"] * len(verified) + ["resync"]
    assert mismatch is not None and "checksum" in lob[-1]["reason"]
    replay_books(outs)  # asserts no update is published for an invalid book
    clean = normalize(kraken_envs)
    for other in {k for k, t, _ in clean if t == "lob"} - {_key(pair)}:
        assert records(outs, "lob", other) == records(clean, "lob", other)


def test_a_corrupted_checksum_resyncs_at_that_frame(kraken_envs: list[RawEnvelope]) -> None:
    pair = "SC/EUR"
    hits = [i for i, e in enumerate(kraken_envs) if e.venue_symbol == pair and e.channel.startswith("book-")]
    target = hits[20]
    frame = json.loads(kraken_envs[target].frame)
    frame[-3]["c"] = str((int(frame[-3]["c"]) + 1) % 2**32)
    broken = list(kraken_envs)
    broken[target] = replace(kraken_envs[target], frame=json.dumps(frame, separators=(",", ":")))
    actions = [r["action"] for r in records(normalize(broken), "lob", _key(pair))]
    assert actions == ["snapshot"] + ["update"] * 19 + ["resync"]


def _control(env: RawEnvelope, conn: str) -> RawEnvelope:
    return replace(env, channel="reconnect", kind=CONTROL, frame="{}", conn=conn)


def test_only_the_book_connection_reconnecting_invalidates_the_book(kraken_envs: list[RawEnvelope]) -> None:
    conns = {msg[-2]: conn for _, conn, msg in _data_frames()}
    pair = "XMR/USD"
    middle = [i for i, e in enumerate(kraken_envs) if e.venue_symbol == pair and e.channel.startswith("book-")][50]
    env = kraken_envs[middle]
    for channel, resyncs in (("trade", False), ("ticker", False), ("book-1000", True)):
        envs = [*kraken_envs[:middle], _control(env, conns[channel]), *kraken_envs[middle:]]
        actions = [r["action"] for r in records(normalize(envs), "lob", _key(pair))]
        assert ("resync" in actions) is resyncs
        assert actions[-1] == ("resync" if resyncs else "update")


def test_a_bad_ticker_frame_is_dead_lettered_and_leaves_the_book_alone(kraken_envs: list[RawEnvelope]) -> None:
    pair = "XMR/USD"
    middle = [i for i, e in enumerate(kraken_envs) if e.venue_symbol == pair and e.channel.startswith("book-")][50]
    bad = replace(kraken_envs[middle], channel="ticker", frame=f'[996,{{"a":[]}},"ticker","{pair}"]')
    outs = normalize([*kraken_envs[:middle], bad, *kraken_envs[middle:]])
    assert len(records(outs, "dead_letter")) == 1
    assert records(outs, "lob", _key(pair)) == records(normalize(kraken_envs), "lob", _key(pair))


def test_state_survives_pickling_mid_stream(kraken_envs: list[RawEnvelope]) -> None:
    pair = "XMR/USD"
    envs = [e for e in kraken_envs if e.venue_symbol == pair]
    settings = NormalizerSettings(snapshot_interval_us=0)
    straight = KrakenNormalizer(_instrument(envs[0]), settings)
    expected = [out for e in envs for out in straight.process(e)]
    first = KrakenNormalizer(_instrument(envs[0]), settings)
    half = len(envs) // 2
    got = [out for e in envs[:half] for out in first.process(e)]
    resumed: KrakenNormalizer = pickle.loads(pickle.dumps(first))
    got += [out for e in envs[half:] for out in resumed.process(e)]
    assert got == expected


def _instrument(env: RawEnvelope) -> Instrument:
    return Instrument(env.exchange, env.symbol, env.venue_symbol)


def _feed(texts: list[str]) -> list[tuple[str, dict[str, Any]]]:
    framer = KrakenFramer("kraken")
    envs = [env for i, text in enumerate(texts) for env in framer.on_recv("c1", text, 1_000_000 + i)]
    norm = KrakenNormalizer(_instrument(envs[0]), NormalizerSettings(snapshot_interval_us=0))
    return [out for env in envs for out in norm.process(env)]


def test_spread_and_ohlc_follow_the_documented_layout() -> None:
    spread = ["5698.40000", "5700.00000", "1542057299.545897", "1.01234567", "0.98765432"]
    ohlc: list[Any] = ["1542057314.748456", "1542057360.000000", "3586.70000", "3586.80000", "3586.60000", "3586.65000"]
    ohlc += ["3586.68894", "0.03373000", 2]
    outs = _feed(
        [
            '{"event":"heartbeat"}',
            json.dumps([0, spread, "spread", "XBT/USD"]),
            json.dumps([42, ohlc, "ohlc-5", "XBT/USD"]),
        ]
    )
    (t_topic, ticker), (c_topic, candle) = outs
    assert t_topic == "ticker" and ticker["symbol"] == "BTC.USD"
    assert (ticker["bid_price"], ticker["ask_price"], ticker["bid_size"], ticker["ask_size"]) == (
        5698.4,
        5700.0,
        1.01234567,
        0.98765432,
    )
    assert ticker["event_timestamp"] == _us(spread[2])
    assert c_topic == "candles" and candle["interval"] == "5m"
    assert candle["end_timestamp"] == _us(ohlc[1]) and candle["start_timestamp"] == _us(ohlc[1]) - 300_000_000
    assert candle["event_timestamp"] == _us(ohlc[0])
    assert (candle["open"], candle["high"], candle["low"], candle["close"], candle["volume"], candle["trades"]) == (
        3586.7,
        3586.8,
        3586.6,
        3586.65,
        0.03373,
        2,
    )


def _levels(start: float, step: float, n: int) -> list[list[str]]:
    return [[f"{start + i * step:.5f}", f"{i + 1:.8f}", f"1600000000.{i:06d}"] for i in range(n)]


def test_depth_truncation_republish_and_two_payload_updates() -> None:
    snapshot = {"as": _levels(101.0, 1.0, 10), "bs": _levels(100.0, -1.0, 10)}
    naive = NaiveBook(10, snapshot)
    ask = {"a": [["100.50000", "0.50000000", "1600000001.000000"]]}
    naive.apply([ask])
    first = naive.checksum()
    # The ask at 100.5 goes; Kraken republishes 110.0 ("r") as it re-enters the top 10; a bid changes.
    republished = ["110.00000", "10.00000000", "1600000001.500000", "r"]
    gone = {"a": [["100.50000", "0.00000000", "1600000002.000000"], republished]}
    bid = {"b": [["100.00000", "2.50000000", "1600000002.500000"]]}
    naive.apply([gone, bid])
    second = naive.checksum()
    outs = _feed(
        [
            json.dumps([7, snapshot, "book-10", "ETH/XBT"]),
            json.dumps([7, {**ask, "c": str(first)}, "book-10", "ETH/XBT"]),
            json.dumps([7, gone, {**bid, "c": str(second)}, "book-10", "ETH/XBT"]),
        ]
    )
    snap, update, update2 = (rec for _, rec in outs)
    assert snap["action"] == "snapshot" and snap["symbol"] == "ETH.BTC" and snap["event_timestamp"] == 1600000000000009
    assert update["action"] == update2["action"] == "update"
    assert update["ask_price"] == [100.5, 110.0] and update["ask_size"] == [0.5, 0.0]  # 110.0 truncated away
    assert update["checksum"] == first and update["event_timestamp"] == 1600000001000000
    assert update2["ask_price"] == [100.5, 110.0] and update2["ask_size"] == [0.0, 10.0]
    assert update2["bid_price"] == [100.0] and update2["checksum"] == second
    assert update2["event_timestamp"] == 1600000002500000


def test_pairs_are_learned_from_asset_pairs() -> None:
    framer = KrakenFramer("kraken")
    http = next(line for line in raw_lines(KRAKEN) if line["t"] == "http")
    assert framer.on_http(http["url"], http["data"], 0) == []
    wsnames = {v["wsname"] for v in json.loads(http["data"])["result"].values() if "wsname" in v}
    assert wsnames <= set(framer.table)
    assert framer.instrument("XBT/CHF").symbol == "BTC.CHF" and framer.instrument("XDG/USD").symbol == "DOGE.USD"
    assert framer.instrument("ETH2.S/ETH").symbol == "ETH2S.ETH"
    assert framer.instrument("ETH2.S/ETH").venue_symbol == "ETH2.S/ETH"


def test_offline_command_writes_every_trade(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    command = f"flows.normalize_cex:offline('{KRAKEN}', '{out}')"
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    trades = sum(len(m[1]) for _, _, m in _data_frames() if m[-2] == "trade")
    assert topics["trades"] == trades == 10
    assert "dead_letter" not in topics
