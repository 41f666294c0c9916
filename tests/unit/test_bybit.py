"""Bybit v5 on the real recording (spot and linear): trades, tickers, funding, open interest, candles and books,
checked against expectations computed here from the raw frames; documented channels on frames from Bybit's docs."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.bybit import BybitFramer, BybitNormalizer
from schemas.raw import RawEnvelope
from tests.support import (
    capture,
    drop_nth,
    envelopes,
    lob_actions,
    normalize,
    raw_lines,
    records,
    replay_books,
    swap_nth,
)

BYBIT = capture("BYBIT")
ROOT = Path(__file__).resolve().parents[2]
TICKER_FIELDS = ("bid1Price", "bid1Size", "ask1Price", "ask1Size", "lastPrice", "volume24h", "markPrice", "indexPrice")
FUNDING_FIELDS = ("fundingRate", "nextFundingTime", "fundingIntervalHour")
OI_FIELDS = ("openInterest", "openInterestValue")


def _num(text: str | None) -> float | None:
    return float(text) if text else None


def _symbols() -> dict[tuple[str, str], str]:
    """(category, venue symbol) -> normalized symbol, read off the recorded instruments-info responses."""
    table = {}
    for line in raw_lines(BYBIT):
        if line["t"] == "http" and "instruments-info" in line["url"]:
            result = json.loads(line["data"])["result"]
            for info in result["list"]:
                suffix = "-PERP" if info.get("contractType") == "LinearPerpetual" else ""
                table[(result["category"], info["symbol"])] = f"{info['baseCoin']}.{info['quoteCoin']}{suffix}"
    return table


def _frames() -> list[tuple[str, dict[str, Any]]]:
    """(normalized symbol, frame) for every topic frame, in file order; the market comes from the connection."""
    symbols = _symbols()
    category = {}
    out = []
    for line in raw_lines(BYBIT):
        if line["t"] == "connect":
            category[line["conn"]] = line["addr"].rsplit("/", 1)[1]
        elif line["t"] == "recv":
            msg = json.loads(line["data"])
            if "topic" in msg:
                out.append((symbols[(category[line["conn"]], msg["topic"].rsplit(".", 1)[1])], msg))
    return out


def _of(channel: str) -> list[tuple[str, dict[str, Any]]]:
    return [(sym, msg) for sym, msg in _frames() if msg["topic"].startswith(channel + ".")]


@pytest.fixture(scope="module")
def outs() -> list[Any]:
    return normalize(envelopes(BYBIT))


def test_symbols_follow_the_connection_market(outs: list[Any]) -> None:
    assert not records(outs, "dead_letter")
    got = {(r["symbol"], r["venue_symbol"]) for _, _, r in outs}
    assert ("BTC.USDT", "BTCUSDT") in got and ("BTC.USDT-PERP", "BTCUSDT") in got
    assert got == {(sym, msg["topic"].rsplit(".", 1)[1]) for sym, msg in _frames()}


def test_every_trade_comes_out_once(outs: list[Any]) -> None:
    expected = Counter(
        (sym, t["i"], t["T"] * 1000, float(t["p"]), float(t["v"]), t["S"].lower(), t["seq"])
        for sym, msg in _of("publicTrade")
        for t in msg["data"]
    )
    got = Counter(
        (r["symbol"], r["trade_id"], r["event_timestamp"], r["price"], r["size"], r["side"], r["sequence"])
        for r in records(outs, "trades")
    )
    assert sum(expected.values()) == 347 and got == expected


def _merged_tickers() -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, list[Any]]]:
    """Ticker, funding and open-interest records expected from merging snapshots and deltas naively."""
    states: dict[str, dict[str, str]] = {}
    tickers, funding, oi = defaultdict(list), defaultdict(list), defaultdict(list)
    for sym, msg in _of("tickers"):
        old = states.get(sym)
        if msg["type"] == "delta" and old is None:
            continue
        new = dict(msg["data"]) if msg["type"] == "snapshot" else {**(old or {}), **msg["data"]}
        states[sym], old = new, old or {}
        ts = msg["ts"] * 1000
        if any(old.get(k) != new.get(k) for k in TICKER_FIELDS):
            tickers[sym].append((ts, *(_num(new.get(k)) for k in TICKER_FIELDS), msg.get("cs")))
        if new.get("fundingRate") and any(old.get(k) != new.get(k) for k in FUNDING_FIELDS):
            funding[sym].append(
                (
                    ts,
                    float(new["fundingRate"]),
                    int(new["nextFundingTime"]) * 1000,
                    float(new["fundingIntervalHour"]),
                    float(new["markPrice"]),
                    float(new["indexPrice"]),
                )
            )
        if any(old.get(k) != new.get(k) for k in OI_FIELDS):
            oi[sym].append((ts, float(new["openInterest"]), float(new["openInterestValue"])))
    return tickers, funding, oi


def _by_symbol(outs: list[Any], topic: str, fields: tuple[str, ...]) -> dict[str, list[Any]]:
    got = defaultdict(list)
    for rec in records(outs, topic):
        got[rec["symbol"]].append(tuple(rec[f] for f in fields))
    return got


def test_tickers_funding_and_open_interest_follow_the_merged_ticker(outs: list[Any]) -> None:
    tickers, funding, oi = _merged_tickers()
    ticker_fields = ("bid_price", "bid_size", "ask_price", "ask_size", "last_price", "volume_24h")
    got = _by_symbol(outs, "ticker", ("event_timestamp", *ticker_fields, "mark_price", "index_price", "sequence"))
    assert got == tickers and len(tickers) == 6 and len(tickers["BTC.USDT"]) > 1
    got = _by_symbol(
        outs,
        "funding",
        ("event_timestamp", "rate", "next_funding_timestamp", "interval_hours", "mark_price", "index_price"),
    )
    assert got == funding and sum(map(len, funding.values())) >= 4
    got = _by_symbol(outs, "open_interest", ("event_timestamp", "open_interest", "open_interest_value"))
    assert got == oi and sum(map(len, oi.values())) > 4


def test_candles_match_their_frames(outs: list[Any]) -> None:
    expected = defaultdict(list)
    for sym, msg in _of("kline.1"):
        for k in msg["data"]:
            ohlc = tuple(float(k[f]) for f in ("open", "high", "low", "close", "volume", "turnover"))
            expected[sym].append(("1m", k["start"] * 1000, (k["end"] + 1) * 1000, *ohlc, k["confirm"]))
    fields = ("open", "high", "low", "close", "volume", "quote_volume", "closed")
    got = _by_symbol(outs, "candles", ("interval", "start_timestamp", "end_timestamp", *fields))
    assert got == expected and len(expected) == 6
    assert any(c[-1] for rows in expected.values() for c in rows), "closed candles are covered too"


Side = dict[float, float]


def _naive_books() -> tuple[dict[str, tuple[Side, Side]], dict[str, int], Counter[str]]:
    books: dict[str, tuple[Side, Side]] = {}
    last_u: dict[str, int] = {}
    kinds: Counter[str] = Counter()
    for sym, msg in _of("orderbook.200"):
        data = msg["data"]
        kinds[msg["type"]] += 1
        if msg["type"] == "snapshot":
            books[sym] = ({}, {})
        for side, levels in zip(books[sym], (data["b"], data["a"]), strict=True):
            for price, size in levels:
                if float(size) == 0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = float(size)
        last_u[sym] = data["u"]
    return books, last_u, kinds


def test_books_have_no_false_gaps_and_equal_an_independent_rebuild(outs: list[Any]) -> None:
    books, last_u, kinds = _naive_books()
    lob = records(outs, "lob")
    assert kinds == {"snapshot": 6, "delta": 2142}
    assert Counter(r["action"] for r in lob) == {"snapshot": 6, "update": 2142}, "no false gaps"
    assert all(r["checksum"] is None for r in lob)  # Bybit sends no book checksum
    replayed = replay_books(outs)
    assert len(replayed) == len(books) == 6
    for sym, (bids, asks) in books.items():
        book = replayed[f"bybit:{sym}"]
        assert book.valid and book.bids == bids and book.asks == asks
        assert records(outs, "lob", f"bybit:{sym}")[-1]["sequence"] == last_u[sym]


def _is_eth_perp_book(env: RawEnvelope) -> bool:
    return env.symbol == "ETH.USDT-PERP" and env.channel.startswith("orderbook")


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_missing_or_reordered_delta_is_a_gap_then_resync(outs: list[Any], mutate: str) -> None:
    envs = envelopes(BYBIT)
    broken = drop_nth(envs, _is_eth_perp_book, 10) if mutate == "drop" else swap_nth(envs, _is_eth_perp_book, 10)
    mutated = normalize(broken)
    key = "bybit:ETH.USDT-PERP"
    actions = lob_actions(mutated, key)
    resync = next(r for r in records(mutated, "lob", key) if r["action"] == "resync")
    assert "gap" in resync["reason"] and actions.count("resync") == 1
    assert actions[actions.index("resync") + 1 :] == []  # no venue snapshot follows in the recording
    replay_books(mutated)  # asserts no update is ever published for an invalid book
    # Other instruments, the spot book with the same venue symbol included, are untouched.
    for other in ("bybit:ETH.USDT", "bybit:BTC.USDT-PERP", "bybit:SOL.USDT-PERP"):
        assert records(mutated, "lob", other) == records(outs, "lob", other)


def test_a_resent_snapshot_restores_the_book_after_a_gap() -> None:
    envs = drop_nth(envelopes(BYBIT), _is_eth_perp_book, 10)
    hits = [i for i, env in enumerate(envs) if _is_eth_perp_book(env)]
    snapshot = json.loads(envs[hits[0]].frame)
    snapshot["data"]["u"] = json.loads(envs[hits[29]].frame)["data"]["u"]
    resent = replace(envs[hits[0]], frame=json.dumps(snapshot), receipt_ts=envs[hits[30]].receipt_ts)
    mutated = normalize([*envs[: hits[30]], resent, *envs[hits[30] :]])
    actions = lob_actions(mutated, "bybit:ETH.USDT-PERP")
    after = actions[actions.index("resync") + 1 :]
    assert actions.count("resync") == 1 and after[0] == "snapshot" and after.count("update") == len(hits) - 30
    replay_books(mutated)


def test_state_survives_pickling_mid_stream() -> None:
    envs = [env for env in envelopes(BYBIT) if env.symbol == "BTC.USDT-PERP"]
    settings = NormalizerSettings(snapshot_interval_us=0)
    inst = Instrument("bybit", "BTC.USDT-PERP", "BTCUSDT")
    straight = BybitNormalizer(inst, settings)
    expected = [out for env in envs for out in straight.process(env)]
    resumed = BybitNormalizer(inst, settings)
    got = []
    for i, env in enumerate(envs):
        if i == len(envs) // 2:
            resumed = pickle.loads(pickle.dumps(resumed))
        got.extend(resumed.process(env))
    assert got == expected


def test_offline_command_runs_on_the_capture(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    spec = f"flows.normalize_cex:offline('{BYBIT}', '{out}')"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", spec], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    expected = sum(len(msg["data"]) for _, msg in _of("publicTrade"))
    assert topics["trades"] == expected and "dead_letter" not in topics


# -- channels the recording lacks, on frames shaped as Bybit documents them -----------------------------------
def _run(url: str, frames: list[dict[str, Any]]) -> tuple[list[RawEnvelope], list[Any]]:
    framer = BybitFramer("bybit")
    framer.on_connect("c", url, 1)
    envs = [env for i, frame in enumerate(frames) for env in framer.on_recv("c", json.dumps(frame), 1000 + i)]
    return envs, normalize(envs)


def test_liquidations_record_the_order_side() -> None:
    frames = [
        {
            "topic": "allLiquidation.BTCUSDT",
            "type": "snapshot",
            "ts": 1739502303204,
            "data": [{"T": 1739502302929, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "96000.1"}],
        },
        {
            "topic": "liquidation.BTCUSDT",
            "type": "snapshot",
            "ts": 1703485237953,
            "data": {"updatedTime": 1703485237953, "symbol": "BTCUSDT", "side": "Sell", "size": "0.003", "price": "1"},
        },
    ]
    _, got = _run("wss://stream.bybit.com/v5/public/linear", frames)
    liq = records(got, "liquidations")
    assert [(r["symbol"], r["side"], r["price"], r["size"], r["event_timestamp"]) for r in liq] == [
        ("BTC.USDT-PERP", "sell", 96000.1, 0.5, 1739502302929000),
        ("BTC.USDT-PERP", "buy", 1.0, 0.003, 1703485237953000),
    ]


def test_inverse_and_option_tickers_and_daily_candles() -> None:
    inverse = {"symbol": "BTCUSD", "lastPrice": "100", "bid1Price": "99", "bid1Size": "5", "ask1Price": "101"}
    inverse |= {"ask1Size": "7", "markPrice": "100.5", "indexPrice": "100.4", "volume24h": "10"}
    inverse |= {"openInterest": "1000", "openInterestValue": "10", "fundingRate": "0.0001", "nextFundingTime": "0"}
    frame = {"topic": "tickers.BTCUSD", "type": "snapshot", "ts": 1, "cs": 5, "data": inverse}
    _, got = _run("wss://stream.bybit.com/v5/public/inverse", [frame])
    assert {r["symbol"] for _, _, r in got} == {"BTC.USD-PERP"}
    assert [r["open_interest_value"] for r in records(got, "open_interest")] == [None]
    assert [(r["rate"], r["next_funding_timestamp"]) for r in records(got, "funding")] == [(0.0001, None)]
    option = {"symbol": "BTC-27DEC24-100000-C", "bidPrice": "10", "bidSize": "1", "askPrice": "12", "askSize": "2"}
    option |= {"lastPrice": "11", "markPrice": "11.5", "indexPrice": "95000", "openInterest": "3", "volume24h": "4"}
    frame = {"topic": "tickers.BTC-27DEC24-100000-C", "type": "snapshot", "ts": 2, "data": option}
    _, got = _run("wss://stream.bybit.com/v5/public/option", [frame])
    ticker = records(got, "ticker")[0]
    assert ticker["symbol"] == "BTC.USD-20241227-100000-C"
    assert (ticker["bid_price"], ticker["ask_size"], ticker["index_price"]) == (10.0, 2.0, 95000.0)
    kline = {"start": 1672272000000, "end": 1672358399999, "interval": "D", "open": "1", "close": "2", "high": "3"}
    kline |= {"low": "0.5", "volume": "9", "turnover": "18", "confirm": True, "timestamp": 1672358399999}
    frame = {"topic": "kline.D.BTCUSDT", "type": "snapshot", "ts": 3, "data": [kline]}
    _, got = _run("wss://stream.bybit.com/v5/public/spot", [frame])
    candle = records(got, "candles")[0]
    assert (candle["symbol"], candle["interval"], candle["end_timestamp"]) == ("BTC.USDT", "1d", 1672358400000000)


def _book(topic: str, kind: str, u: int, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
    return {"topic": topic, "type": kind, "ts": u, "data": {"s": "BTCUSD", "b": bids, "a": asks, "u": u, "seq": u}}


def test_u1_restart_shallower_depths_and_framer_inputs() -> None:
    frames: list[dict[str, Any]] = [
        {"success": True, "ret_msg": "", "conn_id": "x", "req_id": "", "op": "subscribe"},
        {"req_id": "", "op": "pong", "args": ["1675418560633"], "conn_id": "x"},
        _book("orderbook.1.BTCUSDH25", "snapshot", 7, [["1", "1"]], [["2", "1"]]),
        _book("orderbook.50.BTCUSDH25", "snapshot", 100, [["1", "1"]], [["2", "1"], ["3", "1"]]),
        _book("orderbook.1.BTCUSDH25", "snapshot", 8, [["1.5", "1"]], [["2", "1"]]),  # shallower: ignored
        _book("orderbook.50.BTCUSDH25", "delta", 101, [["1", "0"]], []),
        _book("orderbook.50.BTCUSDH25", "delta", 1, [["5", "2"]], [["6", "2"]]),  # service restart
        _book("orderbook.50.BTCUSDH25", "delta", 2, [], [["6", "3"]]),
        {"topic": "tickers.BTCUSDH25", "type": "weird", "ts": 1, "data": {}},
        {"topic": "foo.BTCUSDH25", "type": "snapshot", "ts": 1, "data": {}},
    ]
    envs, got = _run("wss://stream.bybit.com/v5/public/inverse", frames)
    assert len(envs) == len(frames) - 2 and {env.symbol for env in envs} == {"BTC.USD-20250328"}
    lob = records(got, "lob")
    assert [(r["action"], r["sequence"]) for r in lob] == [
        ("snapshot", 7),
        ("snapshot", 100),
        ("update", 101),
        ("snapshot", 1),
        ("update", 2),
    ]
    book = replay_books(got)["bybit:BTC.USD-20250328"]
    assert (book.bids, book.asks) == ({5.0: 2.0}, {6.0: 3.0})
    assert len(records(got, "dead_letter")) == 2


@pytest.mark.parametrize(
    ("category", "venue_symbol", "symbol"),
    [
        ("spot", "BTCUSDT", "BTC.USDT"),
        ("linear", "BTCUSDT", "BTC.USDT-PERP"),
        ("linear", "BTCPERP", "BTC.USDC-PERP"),
        ("linear", "BTC-27DEC24", "BTC.USDC-20241227"),
        ("linear", "ETHUSDT-26MAR27", "ETH.USDT-20270326"),
        ("inverse", "BTCUSD", "BTC.USD-PERP"),
        ("inverse", "BTCUSDH25", "BTC.USD-20250328"),
        ("option", "BTC-27DEC24-100000-C", "BTC.USD-20241227-100000-C"),
        ("option", "ETH-25JUN27-7000-P-USDT", "ETH.USDT-20270625-7000-P"),
        (None, "SOL-3JAN25-200-P", "SOL.USD-20250103-200-P"),
    ],
)
def test_symbols_without_instrument_lists(category: str | None, venue_symbol: str, symbol: str) -> None:
    assert BybitFramer("bybit").instrument(category, venue_symbol).symbol == symbol


def test_instrument_lists_name_dated_futures() -> None:
    framer = BybitFramer("bybit")
    for line in raw_lines(BYBIT):
        if line["t"] == "http":
            framer.on_http(line["url"], line["data"], 0)
    assert framer.instrument("linear", "BTCUSDT-14AUG26").symbol == "BTC.USDT-20260814"
    assert framer.instrument("linear", "BTCPERP").symbol == "BTC.USDC-PERP"
    assert framer.instrument("spot", "ETHUSDT").symbol == "ETH.USDT"


def test_recovery_snapshots_name_the_normalizer_by_the_venue_package() -> None:
    """Pickled state keeps the class path from before the venue became a package
    (``operators.venues.bybit``), so recovery snapshots load whichever side of the split took them."""
    normalizer = BybitNormalizer(Instrument("bybit", "BTC.USDT", "BTCUSDT"), NormalizerSettings())
    blob = pickle.dumps(normalizer, protocol=pickle.HIGHEST_PROTOCOL)
    assert BybitNormalizer.__module__ == "operators.venues.bybit"
    assert b"operators.venues.bybit.normalizer" not in blob
    assert type(pickle.loads(blob)) is BybitNormalizer
