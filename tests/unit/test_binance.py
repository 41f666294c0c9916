"""Binance spot on real recordings: trades, tickers, candles and books, checked against the raw frames."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from msgspec.structs import replace

from operators.venues.binance import BinanceNormalizer
from tests.support import (
    HFTBACKTEST,
    capture,
    drop_nth,
    envelopes,
    hftbacktest_frames,
    lob_actions,
    normalize,
    raw_lines,
    records,
    recv_messages,
    replay_books,
    swap_nth,
)

BINANCE = capture("BINANCE")


def _payloads(messages: list[Any]) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if isinstance(m, dict) and "data" in m]


def _independent_books(snapshots: dict[str, dict[str, Any]], deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Snapshot + every later diff (u > lastUpdateId), applied naively: what a correct book must equal."""
    books = {}
    for symbol, snap in snapshots.items():
        bids = {float(p): float(q) for p, q in snap["bids"]}
        asks = {float(p): float(q) for p, q in snap["asks"]}
        last = snap["lastUpdateId"]
        for d in deltas:
            if d["s"] != symbol or d["u"] <= last:
                continue
            for side, levels in ((bids, d["b"]), (asks, d["a"])):
                for p, q in levels:
                    if float(q) == 0:
                        side.pop(float(p), None)
                    else:
                        side[float(p)] = float(q)
        books[symbol] = (bids, asks)
    return books


@pytest.fixture(scope="module")
def binance_outs() -> list[Any]:
    return normalize(envelopes(BINANCE))


def test_every_aggtrade_comes_out_once(binance_outs: list[Any]) -> None:
    expected = Counter(
        (d["s"], str(d["a"]), float(d["p"]), float(d["q"]), "sell" if d["m"] else "buy")
        for d in _payloads(recv_messages(BINANCE))
        if d.get("e") == "aggTrade"
    )
    got = Counter(
        (r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"]) for r in records(binance_outs, "trades")
    )
    assert expected and got == expected


def test_tickers_and_candles_match_their_frames(binance_outs: list[Any]) -> None:
    payloads = _payloads(recv_messages(BINANCE))
    tickers = [d for d in payloads if "e" not in d and "u" in d]
    assert [(t["s"], t["u"], float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"])) for t in tickers] == [
        (r["venue_symbol"], r["sequence"], r["bid_price"], r["bid_size"], r["ask_price"], r["ask_size"])
        for r in records(binance_outs, "ticker")
    ]
    klines = [d for d in payloads if d.get("e") == "kline"]
    candles = records(binance_outs, "candles")
    assert len(candles) == len(klines) > 0
    for k, c in zip(klines, candles, strict=True):
        assert (float(k["k"]["o"]), float(k["k"]["h"]), float(k["k"]["l"]), float(k["k"]["c"])) == (
            c["open"],
            c["high"],
            c["low"],
            c["close"],
        )
        assert c["start_timestamp"] == k["k"]["t"] * 1000 and c["interval"] == "1m" and c["closed"] is False


def test_books_bridge_snapshots_and_equal_an_independent_rebuild(binance_outs: list[Any]) -> None:
    lines = raw_lines(BINANCE)
    snapshots = {}
    for line in lines:
        if line["t"] == "http" and "/depth?" in line["url"]:
            symbol = line["url"].split("symbol=")[1].split("&")[0]
            snapshots[symbol] = json.loads(line["data"])
    deltas = [d for d in _payloads(recv_messages(BINANCE)) if d.get("e") == "depthUpdate"]
    expected = _independent_books(snapshots, deltas)
    replayed = replay_books(binance_outs)
    assert not [r for r in records(binance_outs, "lob") if r["action"] == "resync"], "no false gaps"
    for key, book in replayed.items():
        bids, asks = expected[next(r["venue_symbol"] for r in records(binance_outs, "lob", key))]
        assert book.valid and book.bids == bids and book.asks == asks


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_missing_or_reordered_diff_is_a_gap_then_resync(mutate: str) -> None:
    envs = envelopes(BINANCE)

    def is_nkn_depth(env: Any) -> bool:
        return env.symbol == "NKN.USDT" and env.channel.startswith("depth")

    broken = drop_nth(envs, is_nkn_depth, 10) if mutate == "drop" else swap_nth(envs, is_nkn_depth, 10)
    outs = normalize(broken)
    actions = lob_actions(outs, "binance:NKN.USDT")
    assert "resync" in actions
    resync = next(r for r in records(outs, "lob", "binance:NKN.USDT") if r["action"] == "resync")
    assert "gap" in resync["reason"]
    # Nothing is published from the bad book: no update after the resync until a new snapshot.
    after = actions[actions.index("resync") + 1 :]
    assert "update" not in after[: after.index("snapshot")] if "snapshot" in after else "update" not in after
    replay_books(outs)  # asserts the same rule record by record
    # Other instruments are untouched.
    assert "resync" not in lob_actions(outs, "binance:BLZ.ETH")


def test_hftbacktest_capture_snapshot_after_diffs() -> None:
    frames = hftbacktest_frames()
    outs = normalize(envelopes(HFTBACKTEST, venue="binance"))
    trades = [f["data"] for f in frames if "stream" in f and f["data"].get("e") == "trade"]
    assert len(trades) == 9757
    assert Counter((str(t["t"]), float(t["p"]), float(t["q"]), "sell" if t["m"] else "buy") for t in trades) == Counter(
        (r["trade_id"], r["price"], r["size"], r["side"]) for r in records(outs, "trades")
    )
    snapshot = next(f for f in frames if "lastUpdateId" in f)
    deltas = [f["data"] for f in frames if "stream" in f and f["data"].get("e") == "depthUpdate"]
    bids, asks = _independent_books({"BTCUSDT": snapshot}, deltas)["BTCUSDT"]
    book = replay_books(outs)["binance:BTC.USDT"]
    assert book.bids == bids and book.asks == asks
    assert lob_actions(outs, "binance:BTC.USDT").count("resync") == 0
    assert len(records(outs, "ticker")) == 28040


def test_periodic_snapshots_reproduce_the_book() -> None:
    outs = normalize(envelopes(HFTBACKTEST, venue="binance"), snapshot_interval_us=60_000_000)
    lob = records(outs, "lob", "binance:BTC.USDT")
    periodic = [r for r in lob if r["reason"] == "periodic"]
    assert len(periodic) >= 4
    # A reader starting at any periodic snapshot rebuilds the same final book as one starting at the first.
    full = replay_books(outs)["binance:BTC.USDT"]
    start = lob.index(periodic[-1])
    late = replay_books([("k", "lob", r) for r in lob[start:]])["k"]
    assert late.bids == full.bids and late.asks == full.asks


@pytest.mark.parametrize("name", ["hftbacktest", "BINANCE", "BINANCE_FUTURES"])
def test_typed_decoding_gives_the_records_of_the_generic_decode(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = envelopes(HFTBACKTEST, venue="binance") if name == "hftbacktest" else envelopes(capture(name))
    typed = normalize(envs, snapshot_interval_us=60_000_000)
    monkeypatch.setattr(BinanceNormalizer, "typed_decoder", lambda self, env: None)
    assert normalize(envs, snapshot_interval_us=60_000_000) == typed


@pytest.mark.parametrize(
    ("channel", "field", "value"),
    [("bookTicker", "b", "not a price"), ("trade", "p", None), ("depth@100ms", "b", [["61837.63", "1", "x"]])],
)
def test_a_frame_off_its_typed_shape_is_judged_by_the_generic_path(channel: str, field: str, value: Any) -> None:
    envs = envelopes(HFTBACKTEST, venue="binance")
    at = next(i for i, env in enumerate(envs) if env.channel == channel and i > 100)
    frame = json.loads(envs[at].frame)
    frame["data"][field] = value
    changed = replace(envs[at], frame=json.dumps(frame, separators=(",", ":")))
    outs = normalize([*envs[:at], changed, *envs[at + 1 :]])
    before = normalize(envs[:at])
    topics = [topic for _, topic, _ in outs[len(before) :]]
    if channel.startswith("depth"):  # three-element levels are still levels: the update applies as usual
        assert topics[0] == "lob" and outs[len(before)][2]["action"] == "update"
        assert "dead_letter" not in topics
    else:  # a price that is no number is a dead letter naming the frame, and nothing else is lost
        dead = [record for _, topic, record in outs if topic == "dead_letter"]
        assert len(dead) == 1 and f"unexpected {channel} frame shape" in dead[0]["reason"]
        assert len(outs) == len(normalize(envs)) and topics[0] == "dead_letter"
