"""Deribit JSON-RPC v2 on the real recording: books, tickers and open interest, checked against the raw frames.

The recording (options) has no trades and no perpetuals: trades, liquidations, funding, quotes, candles and
grouped books are checked on Deribit's documented notification shapes.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.deribit import DeribitFramer, DeribitNormalizer
from schemas.raw import RawEnvelope
from tests.support import (
    capture,
    drop_nth,
    envelopes,
    lob_actions,
    normalize,
    raw_lines,
    records,
    recv_messages,
    replay_books,
    swap_nth,
)

DERIBIT = capture("DERIBIT")
REPO = Path(__file__).resolve().parents[2]
BUSY = "BTC-24SEP21-8000-P"
KEY_BUSY = "deribit:BTC.USD-20210924-8000-P"

Book = tuple[dict[float, float], dict[float, float]]


@pytest.fixture(scope="module")
def notes() -> list[dict[str, Any]]:
    """The ``params`` of every subscription notification (RPC responses and heartbeats have none)."""
    return [m["params"] for m in recv_messages(DERIBIT) if m.get("method") == "subscription"]


@pytest.fixture(scope="module")
def envs() -> list[RawEnvelope]:
    return envelopes(DERIBIT)


@pytest.fixture(scope="module")
def outs(envs: list[RawEnvelope]) -> list[Any]:
    return normalize(envs)


def _instrument(channel: str) -> str:
    return channel.split(".")[1]


def test_notifications_are_attributed_and_rpc_frames_dropped(notes: list[Any], envs: list[RawEnvelope]) -> None:
    assert len(envs) == len(notes) == 135
    assert [e.channel for e in envs] == [n["channel"] for n in notes]
    symbols = {(e.venue_symbol, e.symbol) for e in envs}
    assert ("BTC-24SEP21-8000-P", "BTC.USD-20210924-8000-P") in symbols
    assert ("ETH-30JUL21-2800-C", "ETH.USD-20210730-2800-C") in symbols
    assert ("BTC-31DEC21-300000-C", "BTC.USD-20211231-300000-C") in symbols


def _expected_symbol(info: dict[str, Any]) -> str:
    """The normalized symbol written out from the instrument list's own fields."""
    base, quote = info["base_currency"], info.get("counter_currency") or info["quote_currency"]
    quote = "USD" if quote == base else quote
    if info["settlement_period"] == "perpetual":
        return f"{base}.{quote}-PERP"
    day = datetime.fromtimestamp(info["expiration_timestamp"] / 1000, tz=UTC).strftime("%Y%m%d")
    if info["kind"] == "future":
        return f"{base}.{quote}-{day}"
    strike = info["strike"]
    strike_text = str(int(strike)) if strike == int(strike) else str(strike)
    return f"{base}.{quote}-{day}-{strike_text}-{info['option_type'][0].upper()}"


def test_instrument_lists_and_names_agree() -> None:
    infos = [i for line in raw_lines(DERIBIT) if line["t"] == "http" for i in json.loads(line["data"])["result"]]
    assert len(infos) == 1017
    framer = DeribitFramer("deribit")  # names only, no instrument list
    for info in infos:
        assert framer.instrument(info["instrument_name"]).symbol == _expected_symbol(info), info["instrument_name"]
    assert framer.instrument("BTC_USDC-PERPETUAL").symbol == "BTC.USDC-PERP"
    assert framer.instrument("XRP_USDC-30JUN23-0d625-C").symbol == "XRP.USDC-20230630-0.625-C"


def test_tickers_and_open_interest_match_their_frames(notes: list[Any], outs: list[Any]) -> None:
    tickers = [n["data"] for n in notes if n["channel"].startswith("ticker.")]
    got = records(outs, "ticker")
    assert len(tickers) == len(got) == 89
    for t, r in zip(tickers, got, strict=True):
        bid = (t["best_bid_price"], t["best_bid_amount"]) if t["best_bid_amount"] else (None, None)
        ask = (t["best_ask_price"], t["best_ask_amount"]) if t["best_ask_amount"] else (None, None)
        assert (r["venue_symbol"], r["event_timestamp"]) == (t["instrument_name"], t["timestamp"] * 1000)
        assert ((r["bid_price"], r["bid_size"]), (r["ask_price"], r["ask_size"])) == (bid, ask)
        assert (r["last_price"], r["mark_price"], r["index_price"], r["volume_24h"]) == (
            t["last_price"],
            t["mark_price"],
            t["index_price"],
            t["stats"]["volume"],
        )
    last: dict[str, float] = {}
    expected = []
    for t in tickers:
        if last.get(t["instrument_name"]) != t["open_interest"]:
            expected.append((t["instrument_name"], t["timestamp"] * 1000, t["open_interest"]))
        last[t["instrument_name"]] = t["open_interest"]
    oi = records(outs, "open_interest")
    assert expected == [(r["venue_symbol"], r["event_timestamp"], r["open_interest"]) for r in oi]
    assert not records(outs, "funding")  # options only


def _naive_books(notes: list[Any]) -> dict[str, Book]:
    books: dict[str, Book] = {}
    for n in notes:
        if not n["channel"].startswith("book."):
            continue
        data = n["data"]
        if data["type"] == "snapshot":
            books[data["instrument_name"]] = ({p: a for _, p, a in data["bids"]}, {p: a for _, p, a in data["asks"]})
            continue
        bids, asks = books[data["instrument_name"]]
        for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
            for action, price, amount in levels:
                if action == "delete":
                    side.pop(price, None)
                else:
                    side[price] = amount
    return books


def test_books_have_no_false_gaps_and_equal_a_naive_rebuild(notes: list[Any], outs: list[Any]) -> None:
    lob = records(outs, "lob")
    assert not [r for r in lob if r["action"] == "resync"]
    changes = [n["data"] for n in notes if n["channel"].startswith("book.") and n["data"]["type"] == "change"]
    assert Counter(r["action"] for r in lob) == Counter({"update": len(changes), "snapshot": 10})
    assert [r["sequence"] for r in lob if r["action"] == "update"] == [c["change_id"] for c in changes]
    expected = _naive_books(notes)
    replayed = replay_books(outs)
    assert len(replayed) == len(expected) == 10
    for key, book in replayed.items():
        name = records(outs, "lob", key)[0]["venue_symbol"]
        assert book.valid and (book.bids, book.asks) == expected[name]


def _is_busy_change(env: RawEnvelope) -> bool:
    return env.channel == f"book.{BUSY}.raw" and '"type":"change"' in env.frame


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_missing_or_reordered_change_is_a_gap_then_resync(
    mutate: str, envs: list[RawEnvelope], outs: list[Any]
) -> None:
    broken = drop_nth(envs, _is_busy_change, 10) if mutate == "drop" else swap_nth(envs, _is_busy_change, 10)
    mutated = normalize(broken)
    actions = lob_actions(mutated, KEY_BUSY)
    assert actions.count("resync") == 1
    resync = next(r for r in records(mutated, "lob", KEY_BUSY) if r["action"] == "resync")
    assert "gap" in resync["reason"]
    assert actions[actions.index("resync") + 1 :] == []  # no snapshot follows in the recording
    assert actions[: actions.index("resync")] == ["snapshot"] + ["update"] * 10
    replayed = replay_books(mutated)
    healthy = replay_books(outs)
    for key, book in replayed.items():
        if key != KEY_BUSY:
            assert "resync" not in lob_actions(mutated, key)
            assert (book.bids, book.asks) == (healthy[key].bids, healthy[key].asks)
    assert records(mutated, "ticker") == records(outs, "ticker")


def test_bad_ticker_is_dead_lettered_without_touching_the_book(envs: list[RawEnvelope], outs: list[Any]) -> None:
    at = next(i for i, e in enumerate(envs) if _is_busy_change(e)) + 3
    bad = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": f"ticker.{BUSY}.raw", "data": {}}}
    extra = DeribitFramer("deribit").on_recv("c", json.dumps(bad), envs[at].receipt_ts)
    mutated = normalize(envs[: at + 1] + extra + envs[at + 1 :])
    assert [d["error_type"] for d in records(mutated, "dead_letter")] == ["unexpected_shape"]
    assert lob_actions(mutated, KEY_BUSY) == lob_actions(outs, KEY_BUSY)


def _note(channel: str, data: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}


def _run(frames: list[dict[str, Any]]) -> list[Any]:
    framer = DeribitFramer("deribit")
    noise = [{"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}]
    envs = [
        env
        for i, f in enumerate(noise + frames)
        for env in framer.on_recv("c", json.dumps(f), 1_700_000_000_000_000 + i)
    ]
    return normalize(envs)


# Shapes from Deribit's documentation (docs.deribit.com, subscriptions/market-data).
TRADE: dict[str, Any] = {
    "trade_seq": 30289442,
    "trade_id": "48079269",
    "timestamp": 1590484255886,
    "tick_direction": 2,
    "price": 8950,
    "mark_price": 8948.9,
    "instrument_name": "BTC-PERPETUAL",
    "index_price": 8955.88,
    "direction": "sell",
    "amount": 10,
}


def test_trades_and_liquidations_per_instrument() -> None:
    maker = {**TRADE, "trade_id": "48079270", "trade_seq": 30289443, "liquidation": "M"}
    both = {**TRADE, "trade_id": "48079271", "trade_seq": 30289444, "direction": "buy", "liquidation": "MT"}
    option = {**TRADE, "trade_id": "ETH-1", "instrument_name": "ETH-30JUL21-2800-C", "price": 0.002, "amount": 3}
    outs = _run(
        [
            _note("trades.BTC-PERPETUAL.100ms", [TRADE, maker]),
            _note("trades.any.any.raw", [both, option]),  # one notification, two instruments
        ]
    )
    trades = records(outs, "trades")
    expected = Counter(
        (t["instrument_name"], t["trade_id"], t["trade_seq"], float(t["price"]), float(t["amount"]), t["direction"])
        for t in (TRADE, maker, both, option)
    )
    got = Counter((r["venue_symbol"], r["trade_id"], r["sequence"], r["price"], r["size"], r["side"]) for r in trades)
    assert got == expected
    assert {r["symbol"] for r in trades} == {"BTC.USD-PERP", "ETH.USD-20210730-2800-C"}
    liquidations = Counter((r["symbol"], r["side"]) for r in records(outs, "liquidations"))
    # M: the maker (opposite of the taker's sell) was liquidated; MT: both sides of the taker's buy.
    assert liquidations == Counter({("BTC.USD-PERP", "buy"): 2, ("BTC.USD-PERP", "sell"): 1})


def test_perpetual_ticker_funding_and_interest_channel() -> None:
    ticker: dict[str, Any] = {
        "timestamp": 1623060194301,
        "stats": {"volume_usd": 100, "volume": 12.5, "price_change": 1.2, "low": 35000, "high": 36000},
        "state": "open",
        "open_interest": 502097590,
        "mark_price": 35790.21,
        "last_price": 35791.5,
        "instrument_name": "BTC-PERPETUAL",
        "index_price": 35791.38,
        "funding_8h": 0.00002051,
        "current_funding": 0.00001523,
        "best_bid_price": 35791.0,
        "best_bid_amount": 1000,
        "best_ask_price": 35791.5,
        "best_ask_amount": 2000,
    }
    interest: dict[str, Any] = {"interest": 0.004999511380756577, "timestamp": 1571386349530, "index_price": 7872.88}
    outs = _run([_note("ticker.BTC-PERPETUAL.100ms", ticker), _note("perpetual.BTC-PERPETUAL.100ms", interest)])
    first, second = records(outs, "funding")
    assert (first["rate"], first["mark_price"], first["index_price"], first["event_timestamp"]) == (
        ticker["current_funding"],
        ticker["mark_price"],
        ticker["index_price"],
        ticker["timestamp"] * 1000,
    )
    assert (second["rate"], second["index_price"]) == (interest["interest"], interest["index_price"])
    assert [r["open_interest"] for r in records(outs, "open_interest")] == [ticker["open_interest"]]
    (rec,) = records(outs, "ticker")
    assert (rec["bid_price"], rec["bid_size"], rec["volume_24h"]) == (35791.0, 1000, 12.5)


def test_quote_candles_and_grouped_book() -> None:
    quote = {"timestamp": 1550658624149, "instrument_name": "BTC-PERPETUAL"}
    quote |= {"best_bid_price": 3914.97, "best_bid_amount": 40, "best_ask_price": 3996.61, "best_ask_amount": 50}
    bar = {"volume": 0.05219351, "tick": 1573645080000, "cost": 460}
    bar |= {"open": 8869.79, "low": 8788.25, "high": 8870.31, "close": 8791.25}
    grouped = {"timestamp": 1554375447971, "instrument_name": "ETH-PERPETUAL", "change_id": 109615}
    grouped |= {"bids": [[160, 40]], "asks": [[161, 20], [162, 5]]}
    outs = _run(
        [
            _note("quote.BTC-PERPETUAL", quote),
            _note("chart.trades.BTC-PERPETUAL.60", bar),
            _note("book.ETH-PERPETUAL.none.10.100ms", grouped),
            _note("deribit_price_index.btc_usd", {"index_name": "btc_usd", "price": 3937.89, "timestamp": 1}),
        ]
    )
    (ticker,) = records(outs, "ticker")
    best = (ticker["bid_price"], ticker["bid_size"], ticker["ask_price"], ticker["ask_size"])
    assert best == (
        quote["best_bid_price"],
        quote["best_bid_amount"],
        quote["best_ask_price"],
        quote["best_ask_amount"],
    )
    (candle,) = records(outs, "candles")
    assert candle["interval"] == "1h" and candle["start_timestamp"] == bar["tick"] * 1000
    assert candle["end_timestamp"] - candle["start_timestamp"] == 3_600_000_000
    assert (
        candle["open"],
        candle["high"],
        candle["low"],
        candle["close"],
        candle["volume"],
        candle["quote_volume"],
    ) == (
        bar["open"],
        bar["high"],
        bar["low"],
        bar["close"],
        bar["volume"],
        bar["cost"],
    )
    book = replay_books(outs)["deribit:ETH.USD-PERP"]
    assert book.valid and book.bids == {160: 40} and book.asks == {161: 20, 162: 5}
    assert not records(outs, "dead_letter")


def test_state_survives_pickling_mid_stream(envs: list[RawEnvelope], outs: list[Any]) -> None:
    busy = [e for e in envs if e.venue_symbol == BUSY]
    inst = Instrument("deribit", "BTC.USD-20210924-8000-P", BUSY)
    normalizer = DeribitNormalizer(inst, NormalizerSettings(0))
    got: list[dict[str, Any]] = []
    for i, env in enumerate(busy):
        if i == len(busy) // 2:
            normalizer = pickle.loads(pickle.dumps(normalizer))
        got.extend(rec for _, rec in normalizer.process(env))
    assert got == [rec for key, _, rec in outs if key == KEY_BUSY]


def test_offline_command(notes: list[Any], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    spec = f"flows.normalize_cex:offline('{DERIBIT}', '{out}')"
    result = subprocess.run([sys.executable, "-m", "bytewax.run", spec], cwd=REPO, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    trades = sum(len(n["data"]) for n in notes if n["channel"].startswith("trades."))
    assert topics["trades"] == trades == 0  # the recording holds no trades
    assert topics["ticker"] == sum(1 for n in notes if n["channel"].startswith("ticker."))
    assert topics["lob"] >= sum(1 for n in notes if n["channel"].startswith("book."))


def test_recovery_snapshots_name_the_normalizer_by_the_venue_package() -> None:
    """Pickled state keeps the class path from before the venue became a package
    (``operators.venues.deribit``), so recovery snapshots load whichever side of the split took them."""
    normalizer = DeribitNormalizer(Instrument("deribit", "BTC.USD-PERP", "BTC-PERPETUAL"), NormalizerSettings())
    blob = pickle.dumps(normalizer, protocol=pickle.HIGHEST_PROTOCOL)
    assert DeribitNormalizer.__module__ == "operators.venues.deribit"
    assert b"operators.venues.deribit.normalizer" not in blob
    assert type(pickle.loads(blob)) is DeribitNormalizer
