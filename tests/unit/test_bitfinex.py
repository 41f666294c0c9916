"""Bitfinex v2: trades, tickers and P0 books of the real recording checked against its raw frames, the
connection-wide SEQ_ALL sequence, and (on small captures written here) the channels the recording lacks."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.bitfinex import BitfinexNormalizer, js_number, symbol_from_venue
from tests.support import capture, envelopes, lob_actions, normalize, raw_lines, records, recv_messages, replay_books

BITFINEX = capture("BITFINEX")
REPO = Path(__file__).resolve().parents[2]
_TICKER_FIELDS = (
    "venue_symbol",
    "sequence",
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "last_price",
    "volume_24h",
)


# -- an independent reading of the raw frames ----------------------------------------------------------------
def _subscriptions(messages: list[Any]) -> dict[int, dict[str, Any]]:
    return {m["chanId"]: m for m in messages if isinstance(m, dict) and m.get("event") == "subscribed"}


def _data_frames(messages: list[Any], channel: str) -> list[tuple[str, list[Any]]]:
    """(venue symbol, frame) of every data frame of ``channel`` in order, heartbeats left out."""
    subs = _subscriptions(messages)
    return [
        (subs[m[0]]["symbol"], m)
        for m in messages
        if isinstance(m, list) and m[0] in subs and subs[m[0]]["channel"] == channel and m[1] != "hb"
    ]


def _expected_trades(messages: list[Any]) -> Counter[tuple[Any, ...]]:
    trades: dict[tuple[str, int], tuple[Any, ...]] = {}
    for symbol, frame in _data_frames(messages, "trades"):
        rows = frame[1] if isinstance(frame[1], list) else [frame[2]]
        for trade_id, mts, amount, price in (row[:4] for row in rows):
            side = "buy" if amount > 0 else "sell"
            trades[(symbol, trade_id)] = (symbol, str(trade_id), float(price), abs(float(amount)), side, mts * 1000)
    return Counter(trades.values())


def _naive_books(messages: list[Any]) -> dict[str, tuple[dict[float, float], dict[float, float]]]:
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    for symbol, frame in _data_frames(messages, "book"):
        levels = frame[1] if isinstance(frame[1][0], list) else [frame[1]]
        if isinstance(frame[1][0], list):
            books[symbol] = ({}, {})
        bids, asks = books[symbol]
        for price, count, amount in levels:
            side = bids if amount > 0 else asks
            if count == 0:
                side.pop(price, None)
            else:
                side[price] = abs(amount)
    return books


@pytest.fixture(scope="module")
def messages() -> list[Any]:
    return recv_messages(BITFINEX)


@pytest.fixture(scope="module")
def outs() -> list[Any]:
    return normalize(envelopes(BITFINEX))


# -- the recording -------------------------------------------------------------------------------------------
def test_every_trade_comes_out_once(messages: list[Any], outs: list[Any]) -> None:
    expected = _expected_trades(messages)
    got = Counter(
        (r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"], r["event_timestamp"])
        for r in records(outs, "trades")
    )
    assert sum(expected.values()) == 210 and max(expected.values()) == 1
    assert got == expected


def test_tickers_match_their_frames(messages: list[Any], outs: list[Any]) -> None:
    expected = [
        (symbol, f[2], f[1][0], f[1][1], f[1][2], f[1][3], f[1][6], f[1][7])
        for symbol, f in _data_frames(messages, "ticker")
    ]
    got = [tuple(r[field] for field in _TICKER_FIELDS) for r in records(outs, "ticker")]
    assert len(expected) == 21 and got == expected
    assert {r["symbol"] for r in records(outs, "ticker")} == {
        "BFT.USD", "IOT.ETH", "DOG.USD", "MNA.BTC", "ODE.USD", "TESTBTC.TESTUSD", "SNG.USD",
    }  # fmt: skip


def test_books_have_no_false_gaps_and_equal_a_naive_rebuild(messages: list[Any], outs: list[Any]) -> None:
    lob = records(outs, "lob")
    assert Counter(r["action"] for r in lob) == {"update": 1593, "snapshot": 7}, "no resync on the recording"
    frames = _data_frames(messages, "book")
    assert [r["sequence"] for r in lob] == [f[2] for _, f in frames]
    expected = _naive_books(messages)
    replayed = replay_books(outs)
    assert len(replayed) == len(expected) == 7
    for key, book in replayed.items():
        venue_symbol = records(outs, "lob", key)[0]["venue_symbol"]
        bids, asks = expected[venue_symbol]
        assert book.valid and book.bids == bids and book.asks == asks


def _write_mutated(tmp_path: Path, mutate: str, target: int) -> tuple[Path, int]:
    """The capture as plain JSON Lines with the ``target`` chanId's n-th book update dropped or swapped with
    the frame right after it (also a book update of that chanId); returns the path and n."""
    lines = raw_lines(BITFINEX)
    hits = [i for i, line in enumerate(lines) if line["t"] == "recv" and line["data"].startswith(f"[{target},[")]
    updates = [i for i in hits if not _is_snapshot(lines[i])]
    n = next(k for k in range(10, len(updates) - 1) if updates[k + 1] == updates[k] + 1)
    i = updates[n]
    if mutate == "drop":
        del lines[i]
    else:
        lines[i]["data"], lines[i + 1]["data"] = lines[i + 1]["data"], lines[i]["data"]
    path = tmp_path / f"bitfinex-{mutate}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path, n


def _is_snapshot(line: dict[str, Any]) -> bool:
    return isinstance(json.loads(line["data"])[1][0], list)


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_missing_or_swapped_frame_is_a_gap_then_resync(tmp_path: Path, messages: list[Any], mutate: str) -> None:
    target = next(c for c, s in _subscriptions(messages).items() if s["channel"] == "book" and s["pair"] == "DOGUSD")
    path, n = _write_mutated(tmp_path, mutate, target)
    outs = normalize(envelopes(path))
    actions = lob_actions(outs, "bitfinex:DOG.USD")
    assert actions.count("resync") == 1
    resync = actions.index("resync")
    assert actions[:resync] == ["snapshot"] + ["update"] * n, "updates before the lost frame are published"
    assert actions[resync + 1 :] == [], "nothing after the resync: Bitfinex sends no new snapshot"
    reason = next(r["reason"] for r in records(outs, "lob", "bitfinex:DOG.USD") if r["action"] == "resync")
    assert "gap" in reason
    replay_books(outs)  # asserts no update is ever published for an invalid book
    # The gap is connection-wide: every book with a snapshot before it resyncs too.
    lob = [(key, rec["action"]) for key, topic, rec in outs if topic == "lob"]
    gap_at = lob.index(("bitfinex:DOG.USD", "resync"))
    before = {key for key, action in lob[:gap_at] if action == "snapshot"}
    assert len(before) >= 4
    assert before == {key for key, action in lob if action == "resync"}


def test_offline_command(tmp_path: Path, messages: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    spec = f"flows.normalize_cex:offline('{BITFINEX}', '{out}')"
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", spec], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    assert topics["trades"] == sum(_expected_trades(messages).values())
    assert topics["ticker"] == 21 and topics["dead_letter"] == 0


# -- documented channels the recording lacks, on a small capture written here ----------------------------------
def _signed_crc(text: str) -> int:
    crc = zlib.crc32(text.encode())
    return crc - 2**32 if crc >= 2**31 else crc


def _capture(tmp_path: Path, flags: int, frames: list[Any]) -> Path:
    """A cryptofeed-style capture: one connection, a conf, then ``frames`` (a sequence number is appended to
    every data frame when ``flags`` has SEQ_ALL, after a timestamp when it has TIMESTAMP)."""
    lines: list[dict[str, Any]] = [
        {"t": "header", "exchange": "BITFINEX", "config": {}},
        {"t": "connect", "conn": "c", "ts": 1.0, "addr": "wss://api.bitfinex.com/ws/2"},
        {"t": "send", "conn": "c", "ts": 1.0, "data": json.dumps({"event": "conf", "flags": flags})},
    ]
    seq = 0
    for i, frame in enumerate(frames):
        if isinstance(frame, list):
            seq += 1
            frame = frame + ([1_700_000_000_000 + i] if flags & 32768 else []) + ([seq] if flags & 65536 else [])
        data = json.dumps(frame, separators=(",", ":"))  # compact, as Bitfinex sends
        lines.append({"t": "recv", "conn": "c", "ts": 2.0 + i / 1000, "data": data})
    path = tmp_path / "synthetic.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _subscribed(chan_id: int, channel: str, **fields: str) -> dict[str, Any]:
    return {"event": "subscribed", "channel": channel, "chanId": chan_id, **fields}


def test_documented_trades_candles_and_derivatives_status(tmp_path: Path) -> None:
    status = [1596124822000, None, 0.896, 0.771995, None, 1396531.67460709, None, 1596153600000, 0.0001056, 6, None]
    status += [-0.01381344, None, None, 0.7664, None, None, 246502.09001551, None, None, None, None, 0.3]
    frames = [
        _subscribed(1, "trades", symbol="tBTCUSD"),
        [1, [[3, 1000, 1.5, 50.0], [2, 999, -0.5, 49.0]]],
        [1, "te", [4, 1001, 0.25, 51.0]],
        [1, "tu", [4, 1001, 0.25, 51.0]],
        [1, "hb"],
        _subscribed(2, "candles", key="trade:1m:tTESTBTC:TESTUSD"),
        [2, [[120000, 10, 11, 13, 9, 5.5], [60000, 8, 10, 12, 7, 4.0]]],
        [2, [120000, 10, 12, 14, 9, 6.0]],
        _subscribed(3, "status", key="deriv:tBTCF0:USTF0"),
        [3, status],
        _subscribed(4, "trades", symbol="fUSD"),
        [4, "fte", [5, 1002, 10, 0.0002, 2]],
    ]
    outs = normalize(envelopes(_capture(tmp_path, 65536, frames)))
    assert not records(outs, "dead_letter") and not records(outs, "lob")
    trades = [(r["trade_id"], r["price"], r["size"], r["side"]) for r in records(outs, "trades", "bitfinex:BTC.USD")]
    assert trades == [("2", 49.0, 0.5, "sell"), ("3", 50.0, 1.5, "buy"), ("4", 51.0, 0.25, "buy")]
    candles = records(outs, "candles", "bitfinex:TESTBTC.TESTUSD")
    assert [(c["start_timestamp"], c["end_timestamp"], c["closed"]) for c in candles] == [
        (60_000_000, 120_000_000, True),
        (120_000_000, 180_000_000, None),
        (120_000_000, 180_000_000, None),
    ]
    assert [(c["open"], c["close"], c["high"], c["low"], c["volume"]) for c in candles][-1] == (10, 12, 14, 9, 6.0)
    (funding,) = records(outs, "funding", "bitfinex:BTC.USDT-PERP")
    assert (funding["rate"], funding["predicted_rate"], funding["mark_price"]) == (-0.01381344, 0.0001056, 0.7664)
    assert funding["next_funding_timestamp"] == 1596153600000 * 1000 and funding["interval_hours"] == 8
    (oi,) = records(outs, "open_interest", "bitfinex:BTC.USDT-PERP")
    assert oi["open_interest"] == 246502.09001551 and oi["event_timestamp"] == 1596124822000 * 1000


def test_checksums_timestamps_and_raw_books(tmp_path: Path) -> None:
    # Checksum strings written out by hand as the docs' JavaScript prints them (asks negative, 1e-7 notation).
    first = "100.5:2:101:-3:100:0.5:102:-1e-7"
    second = "100.5:2.5:101:-3:100:0.5:102:-1e-7"
    fixed = "100.5:2.5:101:-3:100:0.75:102:-0.0000001"  # tiny numbers printed without exponent: accepted too
    frames = [
        _subscribed(7, "book", symbol="tBTCUSD", prec="P0", freq="F0", len="25"),
        [7, [[100.5, 1, 2], [100, 2, 0.5], [101, 1, -3], [102, 1, -0.0000001]]],
        [7, "cs", _signed_crc(first)],
        [7, [100.5, 1, 2.5]],
        [7, "cs", _signed_crc(second)],
        [7, [100, 1, 0.75]],
        [7, "cs", _signed_crc(fixed)],
        [7, [101, 0, -1]],
        [7, "cs", _signed_crc(fixed)],  # stale: the ask at 101 is gone
        [7, [99, 1, 1]],
        [7, "cs", _signed_crc("99:1")],
        _subscribed(8, "book", symbol="tETHUSD", prec="R0", len="25"),
        [8, [[11, 100.0, 1.0]]],
    ]
    outs = normalize(envelopes(_capture(tmp_path, 65536 | 32768 | 131072, frames)))
    lob = records(outs, "lob", "bitfinex:BTC.USD")
    assert [(r["action"], r["bid_price"], r["bid_size"], r["checksum"]) for r in lob[1:3]] == [
        ("update", [100.5], [2.5], _signed_crc(second)),
        ("update", [100.0], [0.75], _signed_crc(fixed)),
    ]
    assert [r["action"] for r in lob] == ["snapshot", "update", "update", "resync"]
    assert "checksum" in lob[-1]["reason"]
    assert lob[0]["event_timestamp"] == (1_700_000_000_000 + 1) * 1000 and lob[0]["sequence"] == 1
    (dead,) = records(outs, "dead_letter")
    assert "R0" in dead["reason"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (60400.0, "60400"), (0.0010261, "0.0010261"), (1.7e-7, "1.7e-7"), (-1e-7, "-1e-7"),
     (2.5e-6, "0.0000025"), (1e16, "10000000000000000"), (1e21, "1e+21"), (123456789012.5, "123456789012.5"),
     (-0.68826974, "-0.68826974")],
)  # fmt: skip
def test_numbers_print_as_javascript_does(value: float, text: str) -> None:
    assert js_number(value) == text


@pytest.mark.parametrize(
    ("venue_symbol", "symbol"),
    [("tBTCUSD", "BTC.USD"), ("tTESTBTC:TESTUSD", "TESTBTC.TESTUSD"), ("tBTCF0:USTF0", "BTC.USDT-PERP"),
     ("tETHUST", "ETH.USDT"), ("tAAVE:USD", "AAVE.USD")],
)  # fmt: skip
def test_symbols(venue_symbol: str, symbol: str) -> None:
    assert symbol_from_venue(venue_symbol) == symbol


def test_recovery_snapshots_name_the_normalizer_by_the_venue_package() -> None:
    """Pickled state keeps the class path from before the venue became a package
    (``operators.venues.bitfinex``), so recovery snapshots load whichever side of the split took them."""
    normalizer = BitfinexNormalizer(Instrument("bitfinex", "BTC.USD", "tBTCUSD"), NormalizerSettings())
    blob = pickle.dumps(normalizer, protocol=pickle.HIGHEST_PROTOCOL)
    assert BitfinexNormalizer.__module__ == "operators.venues.bitfinex"
    assert b"operators.venues.bitfinex.normalizer" not in blob
    assert type(pickle.loads(blob)) is BitfinexNormalizer
