"""Coinbase Advanced Trade on the real recording: trades, tickers, candles and books, checked against the raw
frames, plus the connection-wide ``sequence_num`` rules (gaps seen by the framer, reordering by the normalizer).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.coinbase import CoinbaseFramer, CoinbaseNormalizer
from schemas.raw import CONTROL, RawEnvelope
from tests.support import (
    capture,
    envelopes,
    lob_actions,
    normalize,
    raw_lines,
    records,
    recv_messages,
    replay_books,
    swap_nth,
)

COINBASE = capture("COINBASE")
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"BTC-USD": "coinbase:BTC.USD", "ETH-USD": "coinbase:ETH.USD"}


def _us(text: str) -> int:
    """ISO-8601 UTC with up to nanoseconds -> microseconds (independent of operators.timeparse)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(f"{whole}+00:00")
    return int(stamp.timestamp()) * 1_000_000 + int((frac + "000000")[:6])


def _frames(channel: str) -> list[dict[str, Any]]:
    return [m for m in recv_messages(COINBASE) if m.get("channel") == channel]


def _trades() -> dict[tuple[str, str], tuple[float, float, str, int]]:
    """Every trade of the capture once, with its TAKER side (Coinbase's ``side`` is the maker's)."""
    out = {}
    for frame in _frames("market_trades"):
        for event in frame["events"]:
            for t in event["trades"]:
                taker = "buy" if t["side"] == "SELL" else "sell"
                out[(t["product_id"], t["trade_id"])] = (float(t["price"]), float(t["size"]), taker, _us(t["time"]))
    return out


def _naive_books() -> dict[str, tuple[dict[float, float], dict[float, float]]]:
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    for frame in _frames("l2_data"):
        for event in frame["events"]:
            if event["type"] == "snapshot":
                books[event["product_id"]] = ({}, {})
            bids, asks = books[event["product_id"]]
            for u in event["updates"]:
                side = bids if u["side"] == "bid" else asks
                if float(u["new_quantity"]) == 0:
                    side.pop(float(u["price_level"]), None)
                else:
                    side[float(u["price_level"])] = float(u["new_quantity"])
    return books


@pytest.fixture(scope="module")
def outs() -> list[Any]:
    return normalize(envelopes(COINBASE))


def _no_update_after_resync(actions: list[str]) -> None:
    after = actions[actions.index("resync") + 1 :]
    assert "update" not in (after[: after.index("snapshot")] if "snapshot" in after else after)


# -- trades --------------------------------------------------------------------------------------------------
def test_every_trade_comes_out_once_with_the_taker_side(outs: list[Any]) -> None:
    expected = Counter((pid, tid, *rest) for (pid, tid), rest in _trades().items())
    got = Counter(
        (r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"], r["event_timestamp"])
        for r in records(outs, "trades")
    )
    assert len(expected) > 200 and got == expected
    for key in KEYS.values():
        times = [r["event_timestamp"] for r in records(outs, "trades", key)]
        assert times == sorted(times), "oldest first, snapshot history before live trades"


def test_taker_side_agrees_with_the_quotes_it_hit(outs: list[Any]) -> None:
    """A taker buy prints at the best ask of the preceding ticker, a taker sell at the best bid."""
    side_of = {(r["venue_symbol"], r["trade_id"]): r["side"] for r in records(outs, "trades")}
    quotes: dict[str, tuple[float, float]] = {}
    checked = agreed = 0
    for frame in recv_messages(COINBASE):
        for event in frame.get("events", []):
            for t in event.get("tickers", []):
                quotes[t["product_id"]] = (float(t["best_bid"]), float(t["best_ask"]))
            if frame["channel"] != "market_trades" or event["type"] != "update":
                continue
            for t in event["trades"]:
                bid, ask = quotes[t["product_id"]]
                if float(t["price"]) in (bid, ask):
                    checked += 1
                    agreed += side_of[(t["product_id"], t["trade_id"])] == (
                        "buy" if float(t["price"]) == ask else "sell"
                    )
    assert checked >= 50 and agreed >= 0.9 * checked


# -- ticker and candles --------------------------------------------------------------------------------------
def test_tickers_match_their_frames(outs: list[Any]) -> None:
    expected = [
        (
            t["product_id"],
            f["sequence_num"],
            _us(f["timestamp"]),
            float(t["best_bid"]),
            float(t["best_bid_quantity"]),
            float(t["best_ask"]),
            float(t["best_ask_quantity"]),
            float(t["price"]),
            float(t["volume_24_h"]),
        )
        for f in _frames("ticker")
        for e in f["events"]
        for t in e["tickers"]
    ]
    got = [
        (
            r["venue_symbol"],
            r["sequence"],
            r["event_timestamp"],
            r["bid_price"],
            r["bid_size"],
            r["ask_price"],
            r["ask_size"],
            r["last_price"],
            r["volume_24h"],
        )
        for r in records(outs, "ticker")
    ]
    assert expected and got == expected


def test_candles_match_their_frames(outs: list[Any]) -> None:
    expected = []
    for f in _frames("candles"):
        frame_ts = _us(f["timestamp"])
        for e in f["events"]:
            for c in e["candles"]:
                start = int(c["start"]) * 1_000_000
                end = start + 300_000_000  # 5-minute candles
                prices = tuple(float(c[k]) for k in ("open", "high", "low", "close", "volume"))
                expected.append((c["product_id"], frame_ts, start, end, *prices, end <= frame_ts))
    got = [
        (
            r["venue_symbol"],
            r["event_timestamp"],
            r["start_timestamp"],
            r["end_timestamp"],
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
            r["closed"],
        )
        for r in records(outs, "candles")
    ]
    assert expected and got == expected
    assert {r["interval"] for r in records(outs, "candles")} == {"5m"}


# -- books ---------------------------------------------------------------------------------------------------
def test_books_equal_an_independent_rebuild(outs: list[Any]) -> None:
    events = [(e["product_id"], e["type"], f["sequence_num"]) for f in _frames("l2_data") for e in f["events"]]
    lob = records(outs, "lob")
    assert not [r for r in lob if r["action"] == "resync"], "no false gaps on the contiguous recording"
    action = {"snapshot": "snapshot", "update": "update"}
    assert [(r["venue_symbol"], r["action"], r["sequence"]) for r in lob] == [(p, action[t], s) for p, t, s in events]
    assert all(r["checksum"] is None for r in lob), "Coinbase sends no book checksum"
    replayed = replay_books(outs)
    for product_id, (bids, asks) in _naive_books().items():
        book = replayed[KEYS[product_id]]
        assert book.valid and book.bids == bids and book.asks == asks
        best_bid, best_ask = book.best_bid(), book.best_ask()
        assert best_bid is not None and best_ask is not None and best_bid < best_ask


def _mutated_capture(tmp_path: Path, mutate: str) -> Path:
    """A plain .jsonl copy of the capture with one BTC-USD l2_data update dropped, or two swapped."""
    lines = raw_lines(COINBASE)
    hits = [
        i
        for i, line in enumerate(lines)
        if line["t"] == "recv"
        and '"channel":"l2_data"' in line["data"]
        and '"type":"update","product_id":"BTC-USD"' in line["data"]
    ]
    a, b = hits[10], hits[11]
    if mutate == "drop":
        del lines[a]
    else:
        lines[a], lines[b] = {**lines[a], "data": lines[b]["data"]}, {**lines[b], "data": lines[a]["data"]}
    path = tmp_path / f"COINBASE-{mutate}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_connection_sequence_gap_resyncs_every_book_of_the_connection(tmp_path: Path, mutate: str) -> None:
    outs = normalize(envelopes(_mutated_capture(tmp_path, mutate)))
    for key in KEYS.values():  # the lost frame could have been any product's: every book resyncs
        actions = lob_actions(outs, key)
        resync = next(r for r in records(outs, "lob", key) if r["action"] == "resync")
        assert "gap" in resync["reason"]
        _no_update_after_resync(actions)
    replay_books(outs)
    assert len(records(outs, "trades")) == len(_trades()), "trades are not affected by a book gap"


def test_reordered_book_frames_of_one_product_are_a_gap() -> None:
    envs = envelopes(COINBASE)

    def is_btc_book(env: RawEnvelope) -> bool:
        return env.symbol == "BTC.USD" and env.channel == "l2_data"

    outs = normalize(swap_nth(envs, is_btc_book, 10))
    resync = next(r for r in records(outs, "lob", KEYS["BTC-USD"]) if r["action"] == "resync")
    assert "gap" in resync["reason"]
    _no_update_after_resync(lob_actions(outs, KEYS["BTC-USD"]))
    replay_books(outs)
    assert "resync" not in lob_actions(outs, KEYS["ETH-USD"]), "other instruments are unaffected"
    eth = replay_books(outs)[KEYS["ETH-USD"]]
    assert (eth.bids, eth.asks) == _naive_books()["ETH-USD"]


def test_a_reconnect_restarts_the_sequence_without_false_gaps() -> None:
    recv = [line for line in raw_lines(COINBASE) if line["t"] == "recv"][:120]
    framer = CoinbaseFramer("coinbase")
    envs = [env for line in recv for env in framer.on_recv(line["conn"], line["data"], int(line["ts"] * 1e6))]
    envs += framer.on_connect(recv[0]["conn"], "wss://advanced-trade-ws.coinbase.com", int(recv[-1]["ts"] * 1e6))
    envs += [env for line in recv for env in framer.on_recv(line["conn"], line["data"], int(line["ts"] * 1e6))]
    assert {env.channel for env in envs if env.kind == CONTROL} == {"reconnect"}
    outs = normalize(envs)
    for key in KEYS.values():
        actions = lob_actions(outs, key)
        assert actions.count("resync") == 1 and actions[-1] != "resync" and actions.count("snapshot") == 2
        assert "gap" not in str([r["reason"] for r in records(outs, "lob", key)])


def test_connection_frames_are_consumed_and_unknown_channels_dead_lettered() -> None:
    envs = envelopes(COINBASE)
    assert {env.channel for env in envs} == {"l2_data", "market_trades", "ticker", "candles"}
    ticker = next(env for env in envs if env.channel == "ticker")
    odd = replace(ticker, frame=ticker.frame.replace('"channel":"ticker"', '"channel":"mystery"'))
    outs = normalize([odd])
    assert [t for _, t, _ in outs] == ["dead_letter"] and "mystery" in outs[0][2]["reason"]


def test_offline_command(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"flows.normalize_cex:offline('{COINBASE}', '{out}')"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    assert topics["trades"] == len(_trades()) and topics["dead_letter"] == 0


def test_state_survives_a_recovery_snapshot_mid_stream(outs: list[Any]) -> None:
    envs = envelopes(COINBASE)
    half = len(envs) // 2
    settings = NormalizerSettings(snapshot_interval_us=0)
    normalizers: dict[str, Any] = {}
    resumed: list[Any] = []
    for i, env in enumerate(envs):
        if i == half:
            normalizers = {key: pickle.loads(pickle.dumps(n)) for key, n in normalizers.items()}
        inst = Instrument(env.exchange, env.symbol, env.venue_symbol)
        normalizer = normalizers.setdefault(env.key, CoinbaseNormalizer(inst, settings))
        resumed.extend((env.key, topic, rec) for topic, rec in normalizer.process(env))
    assert resumed == outs
