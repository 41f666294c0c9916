"""Gemini: the real GEMINI v2 recording checked against its raw frames, plus the documented candle, mark-price
and v1 feeds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from operators.dead_letter import SourceRef
from operators.normalize import NormalizeLogic
from operators.symbols import Instrument, split_concatenated
from operators.venues.base import NormalizerSettings
from operators.venues.gemini import GeminiFramer
from tests.support import capture, envelopes, lob_actions, normalize, raw_lines, records, recv_messages, replay_books

GEMINI = capture("GEMINI")
ROOT = Path(__file__).resolve().parents[2]
CONN = "GEMINI.ws.2"


def _l2(messages: list[Any]) -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict) and m.get("type") == "l2_updates"]


def _all_trades(messages: list[Any]) -> list[dict[str, Any]]:
    """Recent trades of the initial l2 frames plus live trade frames."""
    history = [t for m in _l2(messages) for t in m.get("trades", [])]
    return history + [m for m in messages if isinstance(m, dict) and m.get("type") == "trade"]


def _naive_books(messages: list[Any]) -> dict[str, tuple[dict[float, float], dict[float, float]]]:
    """Per symbol: the frame carrying ``trades`` is the whole book; later frames set levels (0 deletes)."""
    books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    for m in _l2(messages):
        if "trades" in m:
            books[m["symbol"]] = ({}, {})
        if m["symbol"] not in books:
            continue  # deltas before any snapshot describe no known book
        bids, asks = books[m["symbol"]]
        for side, price, qty in m["changes"]:
            levels = bids if side == "buy" else asks
            if float(qty) == 0:
                levels.pop(float(price), None)
            else:
                levels[float(price)] = float(qty)
    return books


def _write_capture(path: Path, events: list[dict[str, Any]]) -> Path:
    header = {"t": "header", "format": 2, "exchange": "GEMINI", "config": {}}
    path.write_text("\n".join(json.dumps(e) for e in [header, *events]) + "\n")
    return path


@pytest.fixture(scope="module")
def messages() -> list[Any]:
    return recv_messages(GEMINI)


@pytest.fixture(scope="module")
def outs() -> list[Any]:
    return normalize(envelopes(GEMINI))


def test_every_trade_comes_out_once(messages: list[Any], outs: list[Any]) -> None:
    trades = _all_trades(messages)
    expected = Counter(
        (t["symbol"], str(t["tid"]), float(t["price"]), float(t["quantity"]), t["side"], t["timestamp"] * 1000)
        for t in trades
    )
    got = Counter(
        (r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"], r["event_timestamp"])
        for r in records(outs, "trades")
    )
    assert len(trades) == 812 and got == expected
    for key in {k for k, t, _ in outs if t == "trades"}:
        stamps = [r["event_timestamp"] for r in records(outs, "trades", key)]
        assert stamps == sorted(stamps), "recent trades come out oldest first"


def test_symbols_come_from_symbol_details(outs: list[Any]) -> None:
    details = {}
    for line in raw_lines(GEMINI):
        if line["t"] == "http" and "/symbols/details/" in line["url"]:
            d = json.loads(line["data"])
            details[d["symbol"]] = d
    seen = {(r["venue_symbol"], r["symbol"]) for _, _, r in outs}
    assert len(seen) == 10
    for venue_symbol, symbol in seen:
        d = details[venue_symbol]
        suffix = "-PERP" if d["product_type"] == "swap" else ""
        assert symbol == f"{d['base_currency']}.{d['quote_currency']}{suffix}"
    assert ("BTCUSDCPERP", "BTC.USDC-PERP") in seen


def test_books_equal_an_independent_rebuild(messages: list[Any], outs: list[Any]) -> None:
    lob = records(outs, "lob")
    assert not [r for r in lob if r["action"] == "resync"], "no false gaps"
    frames = _l2(messages)
    assert sum(1 for r in lob if r["action"] == "snapshot") == sum(1 for m in frames if "trades" in m) == 10
    assert sum(1 for r in lob if r["action"] == "update") == sum(1 for m in frames if "trades" not in m) == 549
    expected = _naive_books(messages)
    replayed = replay_books(outs)
    assert len(replayed) == len(expected)
    for key, book in replayed.items():
        venue_symbol = records(outs, "lob", key)[0]["venue_symbol"]
        bids, asks = expected[venue_symbol]
        assert book.valid and book.bids == bids and book.asks == asks
        best_bid, best_ask = book.best_bid(), book.best_ask()
        assert best_bid is not None and best_ask is not None and best_bid < best_ask


def test_reconnect_resyncs_and_a_resubscription_does_not_repeat_trades(tmp_path: Path, messages: list[Any]) -> None:
    """Gemini v2 has no sequence numbers: the collector's reconnect is the gap signal for every book on it."""
    lines = raw_lines(GEMINI)[1:]
    recv_at = [i for i, x in enumerate(lines) if x["t"] == "recv"]
    cut = recv_at[len(recv_at) // 2]
    ts = lines[cut]["ts"]
    initial = next(
        x
        for x in lines
        if x["t"] == "recv"
        and x["data"].startswith('{"auction_events"')
        and json.loads(x["data"])["symbol"] == "BTCUSD"
    )
    reconnect = {"t": "connect", "conn": CONN, "ts": ts, "addr": "wss://api.gemini.com/v2/marketdata/"}
    resubscribed = {**initial, "ts": ts}
    mutated = [*lines[:cut], reconnect, resubscribed, *lines[cut:]]
    outs = normalize(envelopes(_write_capture(tmp_path / "gemini.jsonl", mutated)))

    assert len(records(outs, "trades")) == len(_all_trades(messages)), "history repeated on resubscribe is dropped"
    keys = {k for k, t, _ in outs if t == "lob"}
    assert len(keys) == 10
    for key in keys:
        actions = lob_actions(outs, key)
        assert actions.count("resync") == 1
        after = actions[actions.index("resync") + 1 :]
        if key == "gemini:BTC.USD":
            assert after[0] == "snapshot" and "update" in after
        else:
            assert after == [], f"{key}: nothing is published before the next snapshot"
    resync = next(r for r in records(outs, "lob") if r["action"] == "resync")
    assert resync["reason"].startswith("reconnect")
    # BTCUSD resumes from the new snapshot: it equals that snapshot plus the deltas that follow it.
    later = [json.loads(x["data"]) for x in mutated[cut + 1 :] if x["t"] == "recv"]
    bids, asks = _naive_books(later)["BTCUSD"]
    book = replay_books(outs)["gemini:BTC.USD"]
    assert book.valid and book.bids == bids and book.asks == asks


def test_state_survives_a_recovery_snapshot() -> None:
    """Pickling every normalizer half way (as Bytewax snapshots do) changes nothing downstream."""
    envs = envelopes(GEMINI)
    ref = SourceRef(topic="test")
    logics: dict[str, NormalizeLogic] = {}
    got = []
    for i, env in enumerate(envs):
        if i == len(envs) // 2:
            logics = {k: NormalizeLogic(logic.snapshot(), NormalizerSettings(0)) for k, logic in logics.items()}
        logic = logics.setdefault(env.key, NormalizeLogic(None, NormalizerSettings(0)))
        got.extend(logic.on_batch([(env, ref)])[0])
    assert got == [(topic, rec) for _, topic, rec in normalize(envs)]


# -- documented feeds the recording does not contain ------------------------------------------------------------
CANDLES = (
    '{"type":"candles_15m_updates","symbol":"BTCUSD","changes":[[1561054500000,9350.18,9358.35,9350.18,9355.51,2.07],'
    "[1561053600000,9357.33,9357.33,9350.18,9350.18,1.5900161]]}"
)
MARK = (
    '{"type":"mark_price_updates","symbol":"BTCGUSDPERP","changes":[{"timestamp":1673932381478308169,'
    '"mark_price":"21154.098","spot_index":"21175.27333"}]}'
)
FUNDING_AMOUNT = (
    '{"type":"funding_amount_updates","symbol":"BTCGUSDPERP","changes":[{"timestamp":1673932380007696874,'
    '"funding_amount":"0","funding_date_time":1673932380007696874,"funding_interval_in_minutes":60,'
    '"is_realized":false}]}'
)


def _recv(conn: str, data: str, ts: float) -> dict[str, Any]:
    return {"t": "recv", "conn": conn, "ts": ts, "data": data}


def test_documented_v2_feeds(tmp_path: Path) -> None:
    events = [
        {"t": "connect", "conn": "v2", "ts": 1.0, "addr": "wss://api.gemini.com/v2/marketdata"},
        _recv("v2", CANDLES, 1.1),
        _recv("v2", MARK, 1.2),
        _recv("v2", FUNDING_AMOUNT, 1.3),
        _recv("v2", '{"type":"heartbeat","timestamp":1}', 1.4),
    ]
    outs = normalize(envelopes(_write_capture(tmp_path / "v2.jsonl", events)))
    changes = sorted(json.loads(CANDLES)["changes"])
    candles = records(outs, "candles")
    assert [
        (c["start_timestamp"], c["end_timestamp"], c["open"], c["high"], c["low"], c["close"], c["volume"])
        for c in candles
    ] == [(t * 1000, t * 1000 + 900_000_000, o, h, lo, c, v) for t, o, h, lo, c, v in changes]
    assert {c["interval"] for c in candles} == {"15m"} and {c["closed"] for c in candles} == {None}
    (ticker,) = records(outs, "ticker")
    mark = json.loads(MARK)["changes"][0]
    assert ticker["symbol"] == "BTC.GUSD-PERP"
    assert (ticker["event_timestamp"], ticker["mark_price"], ticker["index_price"]) == (
        mark["timestamp"] // 1000,
        float(mark["mark_price"]),
        float(mark["spot_index"]),
    )
    (dead,) = records(outs, "dead_letter")
    assert "funding_amount_updates" in dead["reason"]


V1_INITIAL = (
    '{"type":"update","eventId":5375461993,"socket_sequence":0,"events":[{"type":"change","reason":"initial",'
    '"price":"3641.61","delta":"0.83372051","remaining":"0.83372051","side":"bid"},{"type":"change",'
    '"reason":"initial","price":"3641.62","delta":"4.072","remaining":"4.072","side":"ask"}]}'
)
V1_TRADE = (
    '{"type":"update","eventId":5375503736,"timestamp":1547760288,"timestampms":1547760288001,"socket_sequence":%d,'
    '"events":[{"type":"trade","tid":%d,"price":"%s","amount":"0.5","makerSide":"%s"},{"type":"change",'
    '"side":"%s","price":"%s","remaining":"0.33372051","delta":"-0.5","reason":"trade"}]}'
)


def test_v1_feed_and_its_socket_sequence(tmp_path: Path) -> None:
    events = [
        {"t": "connect", "conn": "v1", "ts": 1.0, "addr": "wss://api.gemini.com/v1/marketdata/btcusd?heartbeat=true"},
        _recv("v1", V1_INITIAL, 1.1),
        _recv("v1", '{"type":"heartbeat","socket_sequence":1}', 1.2),
        _recv("v1", V1_TRADE % (2, 11, "3641.61", "bid", "bid", "3641.61"), 1.3),
        _recv("v1", V1_TRADE % (4, 12, "3641.62", "ask", "ask", "3641.62"), 1.4),  # 3 is missing
    ]
    outs = normalize(envelopes(_write_capture(tmp_path / "v1.jsonl", events)))
    key = "gemini:BTC.USD"
    assert lob_actions(outs, key) == ["snapshot", "update", "resync"]
    snapshot, update, resync = records(outs, "lob", key)
    assert (snapshot["bid_price"], snapshot["ask_price"], snapshot["sequence"]) == ([3641.61], [3641.62], 5375461993)
    assert (update["bid_price"], update["bid_size"]) == ([3641.61], [0.33372051])
    assert "sequence_gap" in resync["reason"]
    assert [(r["trade_id"], r["side"], r["price"]) for r in records(outs, "trades")] == [
        ("11", "sell", 3641.61),  # the maker was the bid: the taker sold
        ("12", "buy", 3641.62),
    ]


#: A made-up market: ``QQX`` is no quote currency the pipeline knows.
NEW_MARKET_TRADE = (
    '{"event_id":1,"price":"1.25","quantity":"40","side":"sell","symbol":"ZORPQQX","tid":77,"timestamp":1786313194672,'
    '"type":"trade"}'
)


def test_a_market_with_an_unknown_quote_currency_keeps_the_venue_symbol(tmp_path: Path) -> None:
    """A new Gemini market whose quote is not in KNOWN_QUOTES is named by its venue symbol instead of failing."""
    with pytest.raises(ValueError):
        split_concatenated("ZORPQQX")
    framer = GeminiFramer("gemini")
    assert framer.instrument("ZORPQQX") == Instrument("gemini", "ZORPQQX", "ZORPQQX")
    assert framer.instrument("zorpqqxperp") == Instrument("gemini", "ZORPQQXPERP", "zorpqqxperp")
    framer.on_http("https://api.gemini.com/v1/symbols", '["btcusd","zorpqqy"]', 0)
    assert {inst.symbol for inst in framer.known_instruments()} >= {"BTC.USD", "ZORPQQY"}

    events = [
        {"t": "connect", "conn": "v2", "ts": 1.0, "addr": "wss://api.gemini.com/v2/marketdata"},
        _recv("v2", NEW_MARKET_TRADE, 1.1),
    ]
    outs = normalize(envelopes(_write_capture(tmp_path / "new_market.jsonl", events)))
    assert not records(outs, "dead_letter")
    (trade,) = records(outs, "trades", "gemini:ZORPQQX")
    assert (trade["symbol"], trade["venue_symbol"], trade["trade_id"], trade["side"]) == (
        "ZORPQQX",
        "ZORPQQX",
        "77",
        "sell",
    )
    assert (trade["price"], trade["size"], trade["event_timestamp"]) == (1.25, 40.0, 1786313194672000)


def test_offline_command(tmp_path: Path, messages: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"flows.normalize_cex:offline('{GEMINI}', '{out}')"],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    assert topics["trades"] == len(_all_trades(messages))
    assert topics["dead_letter"] == 0
