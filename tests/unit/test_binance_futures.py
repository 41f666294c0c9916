"""Binance USD-M / COIN-M futures: the real BINANCE_FUTURES recording checked against its raw frames, plus the
documented futures-only streams (mark price, liquidations, continuous klines, open interest, COIN-M symbols)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from operators.dead_letter import SourceRef
from operators.normalize import NormalizeLogic
from operators.venues.base import NormalizerSettings
from operators.venues.binance_futures import BinanceDeliveryFramer, BinanceFuturesFramer
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

FUTURES = capture("BINANCE_FUTURES")
ROOT = Path(__file__).resolve().parents[2]


def _payloads() -> list[dict[str, Any]]:
    return [m["data"] for m in recv_messages(FUTURES)]


def _snapshots() -> dict[str, dict[str, Any]]:
    out = {}
    for line in raw_lines(FUTURES):
        if line["t"] == "http" and "/depth?" in line["url"]:
            out[line["url"].split("symbol=")[1].split("&")[0]] = json.loads(line["data"])
    return out


def _naive_book(snap: dict[str, Any], deltas: list[dict[str, Any]]) -> tuple[dict[float, float], dict[float, float]]:
    """The REST snapshot plus every diff of its symbol with u >= lastUpdateId, applied naively."""
    bids = {float(p): float(q) for p, q in snap["bids"]}
    asks = {float(p): float(q) for p, q in snap["asks"]}
    for d in deltas:
        if d["u"] < snap["lastUpdateId"]:
            continue
        for side, levels in ((bids, d["b"]), (asks, d["a"])):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
    return bids, asks


def _write_capture(path: Path, exchange: str, events: list[dict[str, Any]]) -> Path:
    header = {"t": "header", "format": 2, "exchange": exchange, "config": {}}
    path.write_text("\n".join(json.dumps(e) for e in [header, *events]) + "\n")
    return path


@pytest.fixture(scope="module")
def outs() -> list[Any]:
    return normalize(envelopes(FUTURES))


def test_every_aggtrade_comes_out_once(outs: list[Any]) -> None:
    expected = Counter(
        (d["s"], str(d["a"]), float(d["p"]), float(d["q"]), "sell" if d["m"] else "buy", d["T"] * 1000)
        for d in _payloads()
        if d["e"] == "aggTrade"
    )
    got = Counter(
        (r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"], r["event_timestamp"])
        for r in records(outs, "trades")
    )
    assert sum(expected.values()) == 91 and got == expected
    assert {r["symbol"] for r in records(outs, "trades")} == {
        "SUSHI.USDT-PERP",
        "AKRO.USDT-PERP",
        "KEEP.USDT-PERP",
        "CTK.USDT-PERP",
    }


def test_book_tickers_match_their_frames(outs: list[Any]) -> None:
    tickers = [d for d in _payloads() if d["e"] == "bookTicker"]
    assert len(tickers) == 613
    assert [
        (t["s"], t["u"], t["E"] * 1000, float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"])) for t in tickers
    ] == [
        (
            r["venue_symbol"],
            r["sequence"],
            r["event_timestamp"],
            r["bid_price"],
            r["bid_size"],
            r["ask_price"],
            r["ask_size"],
        )
        for r in records(outs, "ticker")
    ]


def test_klines_match_their_frames(outs: list[Any]) -> None:
    klines = [d for d in _payloads() if d["e"] == "kline"]
    candles = records(outs, "candles")
    assert len(candles) == len(klines) == 67
    for d, c in zip(klines, candles, strict=True):
        k = d["k"]
        assert (c["venue_symbol"], c["interval"], c["start_timestamp"], c["end_timestamp"]) == (
            d["s"],
            "1m",
            k["t"] * 1000,
            (k["T"] + 1) * 1000,
        )
        assert (c["open"], c["high"], c["low"], c["close"], c["volume"], c["quote_volume"]) == tuple(
            float(k[f]) for f in "ohlcvq"
        )
        assert (c["trades"], c["closed"]) == (k["n"], k["x"])


def test_books_bridge_and_equal_an_independent_rebuild(outs: list[Any]) -> None:
    snapshots = _snapshots()
    deltas = [d for d in _payloads() if d["e"] == "depthUpdate"]
    lob = records(outs, "lob")
    assert not [r for r in lob if r["action"] == "resync"], "no false gaps on the contiguous recording"
    # One update per diff at or after the snapshot's lastUpdateId (AKRO's first applied diff has u == L).
    expected_updates = sum(1 for d in deltas if d["u"] >= snapshots[d["s"]]["lastUpdateId"])
    assert expected_updates == 752
    assert sum(1 for r in lob if r["action"] == "update") == expected_updates
    replayed = replay_books(outs)
    assert len(replayed) == len(snapshots) == 4
    for key, book in replayed.items():
        venue_symbol = next(r["venue_symbol"] for r in records(outs, "lob", key))
        bids, asks = _naive_book(snapshots[venue_symbol], [d for d in deltas if d["s"] == venue_symbol])
        assert book.valid and book.bids == bids and book.asks == asks
    snapshot_records = [r for r in lob if r["action"] == "snapshot"]
    assert sorted((r["venue_symbol"], r["sequence"], r["event_timestamp"]) for r in snapshot_records) == sorted(
        (s, snap["lastUpdateId"], snap["E"] * 1000) for s, snap in snapshots.items()
    )


def _is_sushi_depth(env: Any) -> bool:
    return env.symbol == "SUSHI.USDT-PERP" and env.channel.startswith("depth@")


@pytest.mark.parametrize(("mutate", "n"), [("drop", 10), ("swap", 10), ("drop", 3)])
def test_a_missing_or_reordered_diff_is_a_gap_then_resync(mutate: str, n: int) -> None:
    # n=3 drops the diff that bridges the REST snapshot (the first three SUSHI diffs predate it).
    envs = envelopes(FUTURES)
    broken = drop_nth(envs, _is_sushi_depth, n) if mutate == "drop" else swap_nth(envs, _is_sushi_depth, n)
    outs = normalize(broken)
    key = "binance_futures:SUSHI.USDT-PERP"
    actions = lob_actions(outs, key)
    assert actions.count("resync") == 1
    resync = next(r for r in records(outs, "lob", key) if r["action"] == "resync")
    assert "gap" in resync["reason"]
    # No REST snapshot follows in the recording, so nothing at all is published for the book after the resync.
    assert actions[actions.index("resync") + 1 :] == []
    replay_books(outs)  # asserts no update for an invalid book, record by record
    for other in ("AKRO", "KEEP", "CTK"):
        assert "resync" not in lob_actions(outs, f"binance_futures:{other}.USDT-PERP")


def test_symbols_come_from_exchange_info() -> None:
    info = next(json.loads(x["data"]) for x in raw_lines(FUTURES) if x["t"] == "http" and "exchangeInfo" in x["url"])
    framer = BinanceFuturesFramer("binance_futures")
    framer.learn(info)
    for s in info["symbols"]:
        if s["contractType"] == "PERPETUAL":
            assert framer.instrument(s["symbol"]).symbol == f"{s['baseAsset']}.{s['quoteAsset']}-PERP"
        elif s["contractType"]:
            day = datetime.fromtimestamp(s["deliveryDate"] / 1000, tz=UTC).strftime("%Y%m%d")
            assert framer.instrument(s["symbol"]).symbol == f"{s['baseAsset']}.{s['quoteAsset']}-{day}"
    assert framer.instrument("BTCUSDT_210924").symbol == "BTC.USDT-20210924"
    bare = BinanceFuturesFramer("binance_futures")
    assert bare.instrument("BTCUSDT").symbol == "BTC.USDT-PERP"
    assert bare.instrument("BTCUSDT_240927").symbol == "BTC.USDT-20240927"
    coin = BinanceDeliveryFramer("binance_delivery")
    assert coin.instrument("BTCUSD_PERP").symbol == "BTC.USD-PERP"
    assert coin.instrument("ETHUSD_240927").symbol == "ETH.USD-20240927"


def test_hftbacktest_futures_file(tmp_path: Path) -> None:
    """An hftbacktest-format file (``<ns> <frame>``, fstream frames, one REST snapshot line) of one symbol."""
    lines = []
    for line in raw_lines(FUTURES):
        is_frame = line["t"] == "recv" and line["data"].startswith('{"stream":"sushiusdt@')
        if is_frame or (line["t"] == "http" and "depth?symbol=SUSHIUSDT" in line["url"]):
            lines.append((line["ts"], line["data"]))
    lines.sort(key=lambda x: x[0])
    path = tmp_path / "binance-futures-sushiusdt.gz"
    with gzip.open(path, "wt") as handle:
        handle.writelines(f"{round(ts * 1e9)} {frame}\n" for ts, frame in lines)
    outs = normalize(envelopes(path, venue="binance_futures"))
    frames = [json.loads(frame) for _, frame in lines]
    trades = [f["data"] for f in frames if "stream" in f and f["data"]["e"] == "aggTrade"]
    assert len(trades) == 40
    assert Counter((str(t["a"]), float(t["p"]), float(t["q"])) for t in trades) == Counter(
        (r["trade_id"], r["price"], r["size"]) for r in records(outs, "trades")
    )
    snap = next(f for f in frames if "lastUpdateId" in f)
    bids, asks = _naive_book(snap, [f["data"] for f in frames if "stream" in f and f["data"]["e"] == "depthUpdate"])
    book = replay_books(outs)["binance_futures:SUSHI.USDT-PERP"]
    assert book.valid and book.bids == bids and book.asks == asks


# -- documented streams the recording does not contain ----------------------------------------------------------
MARK: dict[str, Any] = json.loads(
    '{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091",'
    '"P":"11784.25641265","r":"0.00038167","T":1562306400000}'
)
MARK_DATED: dict[str, Any] = json.loads(
    '{"e":"markPriceUpdate","E":1591261236000,"s":"BTCUSD_200925","p":"9391.7","P":"9391.1","r":"","T":0}'
)
FORCE: dict[str, Any] = json.loads(
    '{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014",'
    '"p":"9910","ap":"9911","X":"FILLED","l":"0.014","z":"0.014","T":1568014460890}}'
)
CONT: dict[str, Any] = json.loads(
    '{"e":"continuous_kline","E":1607443058651,"ps":"BTCUSDT","ct":"PERPETUAL","k":{"t":1607443020000,'
    '"T":1607443079999,"i":"1m","f":116467658886,"L":116468012423,"o":"18787.00","c":"18804.04","h":"18804.04",'
    '"l":"18786.54","v":"197.664","n":543,"x":false,"q":"3715253.19494","V":"184.769","Q":"3472925.84746","B":"0"}}'
)
DEPTH5: dict[str, Any] = json.loads(
    '{"e":"depthUpdate","E":1571889248277,"T":1571889248276,"s":"BTCUSDT","U":390497796,"u":390497878,'
    '"pu":390497794,"b":[["7403.89","0.002"],["7403.90","3.906"]],"a":[["7405.96","3.340"]]}'
)
COIN_KLINE: dict[str, Any] = json.loads(
    '{"e":"kline","E":1,"s":"BTCUSD_200925","k":{"t":0,"T":59999,"s":"BTCUSD_200925","i":"1m","o":"1","c":"2",'
    '"h":"3","l":"0.5","v":"10","n":2,"x":true,"q":"0.01"}}'
)


def _http(url: str, data: str, ts: float) -> dict[str, Any]:
    return {"t": "http", "ts": ts, "url": url, "data": data}


def _recv(stream: str, data: Any, ts: float) -> dict[str, Any]:
    frame = json.dumps({"stream": stream, "data": data}, separators=(",", ":"))
    return {"t": "recv", "conn": "c1", "ts": ts, "data": frame}


def test_documented_futures_streams(tmp_path: Path) -> None:
    events = [
        {"t": "connect", "conn": "c1", "ts": 1.0, "addr": "wss://fstream.binance.com/stream"},
        _recv("btcusdt@markPrice@1s", MARK, 1.1),
        _recv("!forceOrder@arr", FORCE, 1.2),
        _recv("btcusdt_perpetual@continuousKline_1m", CONT, 1.3),
        _recv("btcusdt@depth5@100ms", DEPTH5, 1.4),
        _recv("!markPrice@arr", [MARK], 1.5),
        _http(
            "https://fapi.binance.com/fapi/v1/openInterest?symbol=BTCUSDT",
            '{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}',
            1.6,
        ),
        _recv("btcusdt@weird", {"e": "weird", "E": 1, "s": "BTCUSDT"}, 1.7),
    ]
    outs = normalize(envelopes(_write_capture(tmp_path / "f.jsonl", "BINANCE_FUTURES", events)))
    assert {k for k, _, _ in outs} == {"binance_futures:BTC.USDT-PERP"}
    (dead,) = records(outs, "dead_letter")
    assert "weird" in dead["reason"]
    (funding,) = records(outs, "funding")
    assert (funding["rate"], funding["next_funding_timestamp"], funding["mark_price"], funding["index_price"]) == (
        float(MARK["r"]),
        MARK["T"] * 1000,
        float(MARK["p"]),
        float(MARK["i"]),
    )
    assert funding["predicted_rate"] is None and funding["event_timestamp"] == MARK["E"] * 1000
    (liq,) = records(outs, "liquidations")
    order = FORCE["o"]
    assert (liq["side"], liq["price"], liq["size"], liq["status"], liq["event_timestamp"]) == (
        "sell",
        float(order["ap"]),
        float(order["z"]),
        "FILLED",
        order["T"] * 1000,
    )
    (candle,) = records(outs, "candles")
    assert (candle["start_timestamp"], candle["close"], candle["trades"]) == (
        CONT["k"]["t"] * 1000,
        float(CONT["k"]["c"]),
        CONT["k"]["n"],
    )
    (book,) = records(outs, "lob")
    assert (book["action"], book["sequence"], book["bid_price"], book["ask_price"]) == (
        "snapshot",
        DEPTH5["u"],
        [7403.90, 7403.89],
        [7405.96],
    )
    (oi,) = records(outs, "open_interest")
    assert (oi["open_interest"], oi["event_timestamp"]) == (10659.509, 1589437530011000)


def test_coin_m_dated_contract(tmp_path: Path) -> None:
    events = [
        {"t": "connect", "conn": "c1", "ts": 1.0, "addr": "wss://dstream.binance.com/stream"},
        _recv("btcusd_200925@markPrice", MARK_DATED, 1.1),
        _recv("btcusd_200925@kline_1m", COIN_KLINE, 1.2),
        _http(
            "https://dapi.binance.com/dapi/v1/openInterest?symbol=BTCUSD_200925",
            '{"symbol":"BTCUSD_200925","pair":"BTCUSD","openInterest":"15004","contractType":"CURRENT_QUARTER",'
            '"time":1591261042378}',
            1.3,
        ),
    ]
    outs = normalize(envelopes(_write_capture(tmp_path / "d.jsonl", "BINANCE_DELIVERY", events)))
    assert {k for k, _, _ in outs} == {"binance_delivery:BTC.USD-20200925"}
    assert not records(outs, "funding"), "a dated contract has no funding"
    (ticker,) = records(outs, "ticker")
    assert (ticker["mark_price"], ticker["index_price"]) == (float(MARK_DATED["p"]), None)
    (candle,) = records(outs, "candles")
    assert (candle["volume"], candle["quote_volume"], candle["closed"]) == (10.0, None, True)
    assert records(outs, "open_interest")[0]["open_interest"] == 15004.0


def test_state_survives_a_recovery_snapshot() -> None:
    """Pickling every normalizer half way (as Bytewax snapshots do) changes nothing downstream."""
    envs = envelopes(FUTURES)
    ref = SourceRef(topic="test")
    logics: dict[str, NormalizeLogic] = {}
    got = []
    for i, env in enumerate(envs):
        if i == len(envs) // 2:
            logics = {k: NormalizeLogic(logic.snapshot(), NormalizerSettings(0)) for k, logic in logics.items()}
        logic = logics.setdefault(env.key, NormalizeLogic(None, NormalizerSettings(0)))
        got.extend(logic.on_batch([(env, ref)])[0])
    assert got == [(topic, rec) for _, topic, rec in normalize(envs)]


def test_offline_command(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"flows.normalize_cex:offline('{FUTURES}', '{out}')"],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    assert topics["trades"] == sum(1 for d in _payloads() if d["e"] == "aggTrade")
    assert topics["dead_letter"] == 0
