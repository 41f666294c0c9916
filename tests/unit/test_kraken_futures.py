"""Kraken Futures websocket v1 on the real recording: trades, ticker_lite and books, checked against the raw frames.

The ``ticker`` feed and liquidation trades are not in the recording: they are checked on Kraken's documented
message examples.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.kraken_futures import KrakenFuturesFramer, KrakenFuturesNormalizer
from schemas.raw import RawEnvelope
from tests.support import (
    capture,
    drop_nth,
    envelopes,
    lob_actions,
    normalize,
    records,
    recv_messages,
    replay_books,
    swap_nth,
)

KF = capture("KRAKEN_FUTURES")
REPO = Path(__file__).resolve().parents[2]
KEY_ETH = "kraken_futures:ETH.USD-PERP"

Book = tuple[dict[float, float], dict[float, float]]


@pytest.fixture(scope="module")
def frames() -> list[dict[str, Any]]:
    """Every received frame that concerns a product (connection-level frames carry no product_id)."""
    return [m for m in recv_messages(KF) if isinstance(m, dict) and "product_id" in m]


@pytest.fixture(scope="module")
def envs() -> list[RawEnvelope]:
    return envelopes(KF)


@pytest.fixture(scope="module")
def outs(envs: list[RawEnvelope]) -> list[Any]:
    return normalize(envs)


def _expected_trades(frames: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """Snapshot trades and live trades, each uid once."""
    trades: dict[str, tuple[Any, ...]] = {}
    for frame in frames:
        batch = frame["trades"] if frame["feed"] == "trade_snapshot" else [frame] if frame["feed"] == "trade" else []
        for t in batch:
            trades[t["uid"]] = (t["product_id"], t["uid"], float(t["price"]), float(t["qty"]), t["side"], t["seq"])
    return Counter(trades.values())


def _naive_books(frames: list[dict[str, Any]]) -> dict[str, Book]:
    """Each product's last snapshot plus every later delta (seq above the snapshot's), applied naively."""
    books: dict[str, Book] = {}
    seqs: dict[str, int] = {}
    for frame in frames:
        product = frame["product_id"]
        if frame["feed"] == "book_snapshot":
            books[product] = (
                {b["price"]: b["qty"] for b in frame["bids"]},
                {a["price"]: a["qty"] for a in frame["asks"]},
            )
            seqs[product] = frame["seq"]
        elif frame["feed"] == "book" and product in books and frame["seq"] > seqs[product]:
            side = books[product][0 if frame["side"] == "buy" else 1]
            if frame["qty"] == 0:
                side.pop(frame["price"], None)
            else:
                side[frame["price"]] = frame["qty"]
    return books


def test_frames_are_attributed_and_connection_frames_dropped(frames: list[Any], envs: list[RawEnvelope]) -> None:
    assert len(envs) == len(frames) == 7144
    symbols = {(e.venue_symbol, e.symbol) for e in envs}
    assert ("PI_ETHUSD", "ETH.USD-PERP") in symbols
    assert ("FI_XBTUSD_210730", "BTC.USD-20210730") in symbols
    assert ("FI_ETHUSD_211231", "ETH.USD-20211231") in symbols
    assert Counter(e.channel for e in envs) == Counter(f["feed"] for f in frames)


def test_every_trade_comes_out_once_oldest_first(frames: list[Any], outs: list[Any]) -> None:
    expected = _expected_trades(frames)
    trades = records(outs, "trades")
    got = Counter((r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"], r["sequence"]) for r in trades)
    assert sum(expected.values()) == 1003 and got == expected
    for key in {k for k, t, _ in outs if t == "trades"}:
        stamps = [r["event_timestamp"] for r in records(outs, "trades", key)]
        assert stamps == sorted(stamps)
    assert not records(outs, "liquidations")  # the recording has only fills


def test_ticker_lite_matches_its_frames(frames: list[Any], outs: list[Any]) -> None:
    lites = [f for f in frames if f["feed"] == "ticker_lite"]
    tickers = records(outs, "ticker")
    assert len(lites) == len(tickers) == 107
    assert [(f["product_id"], f["bid"], f["ask"], f["volume"]) for f in lites] == [
        (r["venue_symbol"], r["bid_price"], r["ask_price"], r["volume_24h"]) for r in tickers
    ]
    assert all(r["event_timestamp"] == r["receipt_timestamp"] for r in tickers)


def test_books_have_no_false_gaps_and_equal_a_naive_rebuild(frames: list[Any], outs: list[Any]) -> None:
    lob = records(outs, "lob")
    assert not [r for r in lob if r["action"] == "resync"]
    deltas = [f for f in frames if f["feed"] == "book"]
    assert Counter(r["action"] for r in lob) == Counter({"update": len(deltas), "snapshot": 10})
    assert [r["sequence"] for r in lob if r["action"] == "update"] == [d["seq"] for d in deltas]
    expected = _naive_books(frames)
    replayed = replay_books(outs)
    assert len(replayed) == len(expected) == 10
    for key, book in replayed.items():
        product = records(outs, "lob", key)[0]["venue_symbol"]
        assert book.valid and (book.bids, book.asks) == expected[product]


def _is_eth_delta(env: RawEnvelope) -> bool:
    return env.symbol == "ETH.USD-PERP" and env.channel == "book"


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_missing_or_reordered_delta_is_a_gap_then_resync(
    mutate: str, envs: list[RawEnvelope], outs: list[Any]
) -> None:
    broken = drop_nth(envs, _is_eth_delta, 10) if mutate == "drop" else swap_nth(envs, _is_eth_delta, 10)
    mutated = normalize(broken)
    actions = lob_actions(mutated, KEY_ETH)
    assert actions.count("resync") == 1
    resync = next(r for r in records(mutated, "lob", KEY_ETH) if r["action"] == "resync")
    assert "gap" in resync["reason"]
    # No snapshot follows in the recording, so nothing more is published for this book.
    assert actions[actions.index("resync") + 1 :] == []
    assert actions[: actions.index("resync")] == ["snapshot"] + ["update"] * 10
    replayed = replay_books(mutated)
    assert not replayed[KEY_ETH].valid
    # Every other instrument is untouched.
    healthy = replay_books(outs)
    for key, book in replayed.items():
        if key != KEY_ETH:
            assert "resync" not in lob_actions(mutated, key)
            assert (book.bids, book.asks) == (healthy[key].bids, healthy[key].asks)
    assert records(mutated, "trades") == records(outs, "trades")


def _inject(envs: list[RawEnvelope], after: int, frame: dict[str, Any]) -> list[RawEnvelope]:
    framer = KrakenFuturesFramer("kraken_futures")
    extra = framer.on_recv("KRAKEN_FUTURES.ws.1", json.dumps(frame), envs[after].receipt_ts)
    return envs[: after + 1] + extra + envs[after + 1 :]


def test_bad_frames_are_dead_lettered_without_touching_the_book(envs: list[RawEnvelope], outs: list[Any]) -> None:
    at = next(i for i, e in enumerate(envs) if _is_eth_delta(e)) + 50
    broken = _inject(envs, at, {"feed": "ticker_lite", "product_id": "PI_ETHUSD", "ask": 1.0})
    collided = {"feed": "book", "product_id": "PF_ETHUSD", "side": "buy", "seq": 1, "price": 1.0, "qty": 1.0}
    broken = _inject(broken, at + 5, collided)  # linear PF_ETHUSD shares the symbol ETH.USD-PERP
    mutated = normalize(broken)
    dead = records(mutated, "dead_letter")
    assert sorted(d["error_type"] for d in dead) == ["symbol_collision", "unexpected_shape"]
    assert lob_actions(mutated, KEY_ETH) == lob_actions(outs, KEY_ETH)
    book, healthy = replay_books(mutated)[KEY_ETH], replay_books(outs)[KEY_ETH]
    assert book.valid and (book.bids, book.asks) == (healthy.bids, healthy.asks)


# Kraken's documented examples (https://docs.kraken.com/api/docs/futures-api/websocket/ticker and /trade).
DOC_TICKER: dict[str, Any] = {
    "time": 1612270825253,
    "feed": "ticker",
    "product_id": "PI_XBTUSD",
    "bid": 34832.5,
    "ask": 34847.5,
    "bid_size": 42864,
    "ask_size": 2300,
    "volume": 262306237,
    "dtm": 0,
    "leverage": "50x",
    "index": 34803.45,
    "premium": 0.1,
    "last": 34852,
    "change": 2.995109121267192,
    "funding_rate": 3.891007752e-9,
    "funding_rate_prediction": 4.2233756e-9,
    "suspended": False,
    "tag": "perpetual",
    "pair": "XBT:USD",
    "openInterest": 107706940,
    "markPrice": 34844.25,
    "maturityTime": 0,
    "relative_funding_rate": 0.000135046879166667,
    "relative_funding_rate_prediction": 0.000146960125,
    "next_funding_rate_time": 1612281600000,
}
DOC_LIQUIDATION: dict[str, Any] = {
    "feed": "trade",
    "product_id": "PI_XBTUSD",
    "uid": "05af78ac-a774-478c-a50c-8b9c234e071e",
    "side": "sell",
    "type": "liquidation",
    "seq": 653355,
    "time": 1612266317519,
    "qty": 15000,
    "price": 34969.5,
}


def _run(frames: list[dict[str, Any]]) -> list[Any]:
    framer = KrakenFuturesFramer("kraken_futures")
    envs = [env for i, f in enumerate(frames) for env in framer.on_recv("c", json.dumps(f), 1_700_000_000_000_000 + i)]
    return normalize(envs)


def test_ticker_feed_gives_ticker_funding_and_open_interest() -> None:
    later = {**DOC_TICKER, "time": DOC_TICKER["time"] + 1000, "bid": 34833.0}
    dated = {**DOC_TICKER, "product_id": "FI_XBTUSD_210326", "tag": "quarter"}
    outs = _run([DOC_TICKER, later, dated])
    ticker = records(outs, "ticker")[0]
    t = DOC_TICKER
    assert (ticker["bid_price"], ticker["bid_size"], ticker["ask_price"], ticker["ask_size"]) == (
        t["bid"],
        t["bid_size"],
        t["ask"],
        t["ask_size"],
    )
    assert (ticker["last_price"], ticker["volume_24h"], ticker["mark_price"], ticker["index_price"]) == (
        t["last"],
        t["volume"],
        t["markPrice"],
        t["index"],
    )
    assert ticker["event_timestamp"] == t["time"] * 1000 and ticker["symbol"] == "BTC.USD-PERP"
    funding = records(outs, "funding")
    assert len(funding) == 2 and all(f["symbol"] == "BTC.USD-PERP" for f in funding)  # perpetual only
    assert (funding[0]["rate"], funding[0]["predicted_rate"]) == (
        t["relative_funding_rate"],
        t["relative_funding_rate_prediction"],
    )
    assert funding[0]["next_funding_timestamp"] == t["next_funding_rate_time"] * 1000
    interest = records(outs, "open_interest")  # unchanged on the second perpetual ticker
    assert [(r["symbol"], r["open_interest"]) for r in interest] == [
        ("BTC.USD-PERP", t["openInterest"]),
        ("BTC.USD-20210326", t["openInterest"]),
    ]


def test_liquidation_trades_also_give_a_liquidation() -> None:
    outs = _run([DOC_LIQUIDATION])
    (trade,) = records(outs, "trades")
    (liquidation,) = records(outs, "liquidations")
    expected = (DOC_LIQUIDATION["side"], DOC_LIQUIDATION["price"], DOC_LIQUIDATION["qty"])
    assert (trade["side"], trade["price"], trade["size"]) == expected
    assert (liquidation["side"], liquidation["price"], liquidation["size"]) == expected


def test_state_survives_pickling_mid_stream(envs: list[RawEnvelope], outs: list[Any]) -> None:
    eth = [e for e in envs if e.symbol == "ETH.USD-PERP"]
    normalizer = KrakenFuturesNormalizer(
        Instrument("kraken_futures", "ETH.USD-PERP", "PI_ETHUSD"), NormalizerSettings(0)
    )
    got: list[dict[str, Any]] = []
    for i, env in enumerate(eth):
        if i == len(eth) // 2:
            normalizer = pickle.loads(pickle.dumps(normalizer))
        got.extend(rec for _, rec in normalizer.process(env))
    assert got == [rec for key, _, rec in outs if key == KEY_ETH]


def test_offline_command(frames: list[Any], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    spec = f"flows.normalize_cex:offline('{KF}', '{out}')"
    result = subprocess.run([sys.executable, "-m", "bytewax.run", spec], cwd=REPO, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    assert topics["trades"] == sum(_expected_trades(frames).values())
    assert topics["ticker"] == sum(1 for f in frames if f["feed"] == "ticker_lite")
