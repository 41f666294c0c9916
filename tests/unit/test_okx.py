"""OKX v5 on the real 2022 recording: trades, tickers and CRC32-checked books, checked against the raw frames.

Expectations come from the raw capture (tests/support.py's independent reader) with an independent book rebuild
and checksum. The seqId chain (absent from the 2022 frames) is exercised on a copy of the capture given synthetic
seqId/prevSeqId; channels the recording lacks use frames shaped like OKX's documentation examples.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from connectors.capture import capture_envelopes
from operators.symbols import Instrument
from operators.venues.base import NormalizerSettings
from operators.venues.okx import OkxFramer, OkxNormalizer, symbol_from_inst_id
from schemas import DEAD_LETTER
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

OKX = capture("OKX")
ROOT = Path(__file__).resolve().parents[2]
#: Keys by the symbol rules OKX's ids follow (spot, -SWAP perpetual, YYMMDD future).
KEYS = {"BTC-USDT": "okx:BTC.USDT", "UNI-USD-SWAP": "okx:UNI.USD-PERP", "BTC-USD-220527": "okx:BTC.USD-20220527"}
UNI = "UNI-USD-SWAP"
Book = tuple[dict[str, str], dict[str, str]]


def _pushes(channel: str) -> list[dict[str, Any]]:
    return [m for m in recv_messages(OKX) if "data" in m and m.get("arg", {}).get("channel") == channel]


def _crc(bids: dict[str, str], asks: dict[str, str]) -> int:
    """OKX's documented checksum, written independently of the module under test."""
    best_bids = sorted(bids.items(), key=lambda level: -float(level[0]))[:25]
    best_asks = sorted(asks.items(), key=lambda level: float(level[0]))[:25]
    fields: list[str] = []
    for i in range(max(len(best_bids), len(best_asks))):
        for side in (best_bids, best_asks):
            if i < len(side):
                fields.extend(side[i])
    value = zlib.crc32(":".join(fields).encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def _apply(book: Book, push: dict[str, Any]) -> None:
    data = push["data"][0]
    if push["action"] == "snapshot":
        book[0].clear()
        book[1].clear()
    for side, levels in zip(book, (data["bids"], data["asks"]), strict=True):
        for price, size, *_ in levels:
            if float(size) == 0:
                side.pop(price, None)
            else:
                side[price] = size


def _rebuild(pushes: list[dict[str, Any]]) -> tuple[dict[str, Book], int]:
    """Naive books from every push, and how many pushes' checksums the rebuilt book matched."""
    books: dict[str, Book] = {}
    matched = 0
    for push in pushes:
        book = books.setdefault(push["arg"]["instId"], ({}, {}))
        _apply(book, push)
        matched += _crc(*book) == push["data"][0]["checksum"]
    return books, matched


def _as_floats(side: dict[str, str]) -> dict[float, float]:
    return {float(p): float(s) for p, s in side.items()}


@pytest.fixture(scope="module")
def okx_envs() -> list[RawEnvelope]:
    return envelopes(OKX)


@pytest.fixture(scope="module")
def okx_outs(okx_envs: list[RawEnvelope]) -> list[Any]:
    return normalize(okx_envs)


def test_every_trade_comes_out_once(okx_outs: list[Any]) -> None:
    expected = Counter(
        (t["instId"], t["tradeId"], float(t["px"]), float(t["sz"]), t["side"])
        for m in _pushes("trades")
        for t in m["data"]
    )
    got = Counter(
        (r["venue_symbol"], r["trade_id"], r["price"], r["size"], r["side"]) for r in records(okx_outs, "trades")
    )
    assert expected and got == expected
    assert all(f"okx:{r['symbol']}" == KEYS[r["venue_symbol"]] for r in records(okx_outs, "trades"))


def test_tickers_match_their_frames(okx_outs: list[Any]) -> None:
    fields = ("bidPx", "bidSz", "askPx", "askSz", "last", "lastSz", "vol24h")
    expected = [
        (d["instId"], int(d["ts"]) * 1000, *(float(d[f]) for f in fields))
        for m in _pushes("tickers")
        for d in m["data"]
    ]
    names = ("bid_price", "bid_size", "ask_price", "ask_size", "last_price", "last_size", "volume_24h")
    got = [(r["venue_symbol"], r["event_timestamp"], *(r[n] for n in names)) for r in records(okx_outs, "ticker")]
    assert expected and got == expected


def test_books_match_every_checksum_and_an_independent_rebuild(okx_outs: list[Any]) -> None:
    pushes = _pushes("books")
    bearing = [(p["arg"]["instId"], p["data"][0]["checksum"]) for p in pushes if "checksum" in p["data"][0]]
    assert len(bearing) == len(pushes) == 290  # data/README.md: 3 snapshots + 287 updates, all checksummed
    books, matched = _rebuild(pushes)
    assert matched == len(bearing)  # the venue's checksums hold on a naive rebuild
    lob = records(okx_outs, "lob")
    assert [r["action"] for r in lob] == ["snapshot" if p["action"] == "snapshot" else "update" for p in pushes]
    assert [(r["venue_symbol"], r["checksum"]) for r in lob if r["checksum"] is not None] == bearing
    replayed = replay_books(okx_outs)
    for inst_id, (bids, asks) in books.items():
        book = replayed[KEYS[inst_id]]
        assert book.valid and book.bids == _as_floats(bids) and book.asks == _as_floats(asks)


def _is_uni_book(env: RawEnvelope) -> bool:
    return env.venue_symbol == UNI and env.channel == "books"


def _first_top_changing_update(start: int) -> int:
    """Index (among UNI book pushes) of the first update from ``start`` on that changed the top 25 levels."""
    pushes = [p for p in _pushes("books") if p["arg"]["instId"] == UNI]
    checksums = [p["data"][0]["checksum"] for p in pushes]
    return next(i for i in range(max(start, 1), len(pushes)) if checksums[i] != checksums[i - 1])


def _assert_only_uni_resyncs(outs: list[Any], base: list[Any], word: str) -> None:
    lob = records(outs, "lob", KEYS[UNI])
    actions = [r["action"] for r in lob]
    assert actions.count("resync") == 1, actions
    at = actions.index("resync")
    assert word in lob[at]["reason"]
    after = actions[at + 1 :]
    assert "update" not in (after[: after.index("snapshot")] if "snapshot" in after else after)
    replay_books(outs)  # asserts, record by record, that no update follows a resync before a snapshot
    for inst_id, key in KEYS.items():
        if inst_id != UNI:
            assert records(outs, "lob", key) == records(base, "lob", key)


@pytest.mark.parametrize("mutate", ["drop", "swap"])
def test_a_lost_or_reordered_update_is_a_checksum_resync(
    okx_envs: list[RawEnvelope], okx_outs: list[Any], mutate: str
) -> None:
    n = _first_top_changing_update(10)
    broken = drop_nth(okx_envs, _is_uni_book, n) if mutate == "drop" else swap_nth(okx_envs, _is_uni_book, n)
    _assert_only_uni_resyncs(normalize(broken), okx_outs, "checksum")


def test_a_modified_size_is_a_checksum_resync_at_that_frame(okx_envs: list[RawEnvelope], okx_outs: list[Any]) -> None:
    hits = [i for i, env in enumerate(okx_envs) if _is_uni_book(env)]
    book: Book = ({}, {})
    for n, i in enumerate(hits):
        push = json.loads(okx_envs[i].frame)
        _apply(book, push)
        top = sorted(book[0], key=float, reverse=True)[:25]
        level = next((lv for lv in push["data"][0]["bids"] if lv[0] in top), None)
        if n >= 10 and level is not None:
            level[1] = str(int(level[1]) + 1)
            target = i
            break
    broken = list(okx_envs)
    broken[target] = replace(okx_envs[target], frame=json.dumps(push, separators=(",", ":")))
    outs = normalize(broken)
    _assert_only_uni_resyncs(outs, okx_outs, "checksum")
    resync = next(r for r in records(outs, "lob", KEYS[UNI]) if r["action"] == "resync")
    assert resync["receipt_timestamp"] == okx_envs[target].receipt_ts


def _seq_capture(tmp_path: Path, mode: str) -> tuple[Path, list[int]]:
    """The capture as plain JSON Lines with synthetic seqId/prevSeqId on book pushes, mutated per ``mode``."""
    lines = raw_lines(OKX)
    last: dict[str, int] = {}
    uni_seq: list[int] = []
    out: list[dict[str, Any]] = []
    for line in lines:
        msg = json.loads(line["data"]) if line["t"] == "recv" else None
        if not msg or msg.get("arg", {}).get("channel") != "books" or "data" not in msg:
            out.append(line)
            continue
        inst_id, data = msg["arg"]["instId"], msg["data"][0]
        seq = last.get(inst_id, 1000) + 7
        data["prevSeqId"] = -1 if msg["action"] == "snapshot" else last[inst_id]
        data["seqId"] = last[inst_id] = seq
        if mode.endswith("deprecated"):
            data["checksum"] = 0
        if inst_id == UNI:
            uni_seq.append(seq)
            if len(uni_seq) == 11 and mode.startswith("drop"):
                continue
        out.append({**line, "data": json.dumps(msg)})
        if inst_id == UNI and len(uni_seq) == 11 and mode == "heartbeat":
            beat = {**data, "bids": [], "asks": [], "prevSeqId": seq}
            out.append({**line, "ts": line["ts"] + 1e-6, "data": json.dumps({**msg, "data": [beat]})})
    path = tmp_path / f"okx-{mode}.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in out) + "\n")
    return path, uni_seq


@pytest.mark.parametrize("mode", ["chain", "drop", "heartbeat", "deprecated", "drop-deprecated"])
def test_seq_id_chain(tmp_path: Path, okx_outs: list[Any], mode: str) -> None:
    path, uni_seq = _seq_capture(tmp_path, mode)
    outs = normalize(capture_envelopes(path))
    if mode.startswith("drop"):
        intact = _seq_capture(tmp_path, mode.replace("drop", "chain"))[0]
        _assert_only_uni_resyncs(outs, normalize(capture_envelopes(intact)), "gap")
        return
    lob = records(outs, "lob", KEYS[UNI])
    assert "resync" not in lob_actions(outs, KEYS[UNI])
    assert [r["sequence"] for r in lob] == uni_seq  # a heartbeat publishes nothing
    plain = records(okx_outs, "lob", KEYS[UNI])
    assert [r["bid_price"] for r in lob] == [r["bid_price"] for r in plain]
    if mode.endswith("deprecated"):
        assert all(r["checksum"] is None for r in lob)  # a zero checksum beside a seqId is not verified
    else:
        assert [r["checksum"] for r in lob] == [r["checksum"] for r in plain]


def test_state_survives_pickling_mid_stream(okx_envs: list[RawEnvelope]) -> None:
    envs = [e for e in okx_envs if e.venue_symbol == UNI]
    settings = NormalizerSettings(snapshot_interval_us=0)
    inst = Instrument("okx", envs[0].symbol, UNI)
    straight = OkxNormalizer(inst, settings)
    expected = [out for env in envs for out in straight.process(env)]
    first = OkxNormalizer(inst, settings)
    got = [out for env in envs[:60] for out in first.process(env)]
    resumed = pickle.loads(pickle.dumps(first))
    got += [out for env in envs[60:] for out in resumed.process(env)]
    assert got == expected


# -- channels the recording lacks, in the documented shapes ----------------------------------------------------
def _feed(*frames: Any) -> list[Any]:
    framer = OkxFramer("okx")
    texts = [f if isinstance(f, str) else json.dumps(f, separators=(",", ":")) for f in frames]
    return normalize([env for i, text in enumerate(texts) for env in framer.on_recv("c1", text, 1_700_000_000 + i)])


def test_connection_level_frames_are_consumed() -> None:
    framer = OkxFramer("okx")
    for text in (
        '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3ae55"}',
        '{"event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}',
        '{"event":"notice","code":"64008","msg":"The connection will soon be closed","connId":"a4d3ae55"}',
        "pong",
    ):
        assert framer.on_recv("c1", text, 0) == []


def test_funding_open_interest_mark_and_index() -> None:
    funding = {"fundingRate": "0.0001875", "fundingTime": "1700726400000", "instId": "BTC-USD-SWAP"}
    funding |= {"nextFundingRate": "", "nextFundingTime": "1700755200000", "method": "current_period"}
    funding |= {"ts": "1700724675402", "instType": "SWAP"}
    oi = {"instType": "SWAP", "instId": "BTC-USD-SWAP", "oi": "5000", "oiCcy": "555.55", "oiUsd": "50000"}
    oi |= {"ts": "1597026383085"}
    mark = {"instType": "SWAP", "instId": "BTC-USD-SWAP", "markPx": "42310.6", "ts": "1597026383085"}
    index = {"instId": "BTC-USDT", "idxPx": "42300.1", "high24h": "43000", "open24h": "41000", "ts": "1597026383086"}
    outs = _feed(
        {"arg": {"channel": "funding-rate", "instId": "BTC-USD-SWAP"}, "data": [funding]},
        {"arg": {"channel": "open-interest", "instId": "BTC-USD-SWAP"}, "data": [oi]},
        {"arg": {"channel": "mark-price", "instId": "BTC-USD-SWAP"}, "data": [mark]},
        {"arg": {"channel": "index-tickers", "instId": "BTC-USDT"}, "data": [index]},
    )
    [rate] = records(outs, "funding", "okx:BTC.USD-PERP")
    assert (rate["rate"], rate["predicted_rate"], rate["event_timestamp"]) == (0.0001875, None, 1700724675402000)
    assert (rate["next_funding_timestamp"], rate["interval_hours"]) == (1700726400000000, 8.0)
    [interest] = records(outs, "open_interest", "okx:BTC.USD-PERP")
    assert (interest["open_interest"], interest["open_interest_value"]) == (5000.0, 50000.0)
    [marked] = records(outs, "ticker", "okx:BTC.USD-PERP")
    [indexed] = records(outs, "ticker", "okx:BTC.USDT")
    assert (marked["mark_price"], marked["index_price"], marked["bid_price"]) == (42310.6, None, None)
    assert (indexed["index_price"], indexed["mark_price"], indexed["event_timestamp"]) == (
        42300.1,
        None,
        1597026383086000,
    )


def test_candles_normalize_the_bar_and_its_end() -> None:
    hk, utc = timezone(timedelta(hours=8)), UTC
    month_hk = int(datetime(2023, 11, 1, tzinfo=hk).timestamp() * 1000)
    month_utc = int(datetime(2023, 11, 1, tzinfo=utc).timestamp() * 1000)
    rows = {
        "candle1H": ["1597026000000", "8533.02", "8553.74", "8527.17", "8548.26", "45247", "529.58", "4.5e6", "1"],
        "candle1M": [str(month_hk), "1", "2", "0.5", "1.5", "10", "12", "13", "0"],
        "candle1Mutc": [str(month_utc), "1", "2", "0.5", "1.5", "10", "12"],
    }
    outs = _feed(*({"arg": {"channel": ch, "instId": "BTC-USDT"}, "data": [row]} for ch, row in rows.items()))
    hour, month, month_old = records(outs, "candles", "okx:BTC.USDT")
    row = rows["candle1H"]
    assert (hour["interval"], hour["start_timestamp"], hour["end_timestamp"]) == (
        "1h",
        1597026000000000,
        1597029600000000,
    )
    assert (hour["open"], hour["high"], hour["low"], hour["close"]) == tuple(float(v) for v in row[1:5])
    assert (hour["volume"], hour["quote_volume"], hour["closed"]) == (45247.0, 4.5e6, True)
    assert (month["interval"], month["closed"]) == ("1M", False)
    assert month["end_timestamp"] == int(datetime(2023, 12, 1, tzinfo=hk).timestamp()) * 1_000_000
    assert month_old["end_timestamp"] == int(datetime(2023, 12, 1, tzinfo=utc).timestamp()) * 1_000_000
    assert (month_old["quote_volume"], month_old["closed"]) == (12.0, None)  # 7-field spot row: volCcy is quote


def test_liquidations_by_inst_type_reach_each_instrument() -> None:
    iost = [{"bkLoss": "0", "bkPx": "0.007831", "posSide": "short", "side": "buy", "sz": "13", "ts": "1692266434010"}]
    btc = [
        {"bkPx": "26000.5", "posSide": "long", "side": "sell", "sz": "2", "ts": "1692266434011"},
        {"bkPx": "25990.1", "posSide": "long", "side": "sell", "sz": "1", "ts": "1692266434012"},
    ]
    data = [{"details": iost, "instId": "IOST-USDT-SWAP"}, {"details": btc, "instId": "BTC-USDT-SWAP"}]
    outs = _feed({"arg": {"channel": "liquidation-orders", "instType": "SWAP"}, "data": data})
    for key, details in (("okx:IOST.USDT-PERP", iost), ("okx:BTC.USDT-PERP", btc)):
        got = [(r["side"], r["price"], r["size"], r["event_timestamp"]) for r in records(outs, "liquidations", key)]
        assert got == [(d["side"], float(d["bkPx"]), float(d["sz"]), int(d["ts"]) * 1000) for d in details]


def test_trades_all_top_books_and_a_second_book_channel() -> None:
    trade = {"instId": "BTC-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "0.12", "side": "buy"}
    levels5 = {"asks": [["111.06", "55154", "0", "2"]], "bids": [["111.05", "57745", "0", "2"]], "seqId": 3639}
    bbo = {"asks": [["3000.1", "1.5", "0", "1"]], "bids": [["3000", "2", "0", "3"]], "ts": "1670324386803"}
    outs = _feed(
        {"arg": {"channel": "trades-all", "instId": "BTC-USDT"}, "data": [{**trade, "ts": "1630048897897"}]},
        {"arg": {"channel": "books5", "instId": "BCH-USDT-SWAP"}, "data": [{**levels5, "ts": "1670324386802"}]},
        {"arg": {"channel": "bbo-tbt", "instId": "ETH-USDT"}, "data": [{**bbo, "seqId": 77}]},
        {"arg": {"channel": "books", "instId": "ETH-USDT"}, "action": "snapshot", "data": [{**bbo, "checksum": 1}]},
        {"arg": {"channel": "price-limit", "instId": "ETH-USDT"}, "data": [{"buyLmt": "1", "ts": "1"}]},
        {"arg": {"channel": "trades", "instId": "ETH-USDT"}, "data": [{"instId": "ETH-USDT", "tradeId": "1"}]},
    )
    [got] = records(outs, "trades", "okx:BTC.USDT")
    assert (got["trade_id"], got["price"], got["size"], got["side"]) == ("130639474", 42219.9, 0.12, "buy")
    [bch] = records(outs, "lob", "okx:BCH.USDT-PERP")
    assert (bch["action"], bch["sequence"], bch["bid_price"], bch["ask_size"]) == (
        "snapshot",
        3639,
        [111.05],
        [55154.0],
    )
    [eth] = records(outs, "lob", "okx:ETH.USDT")  # the books frame after bbo-tbt is not mixed in
    assert (eth["sequence"], eth["bid_size"], eth["ask_price"]) == (77, [2.0], [3000.1])
    assert len(records(outs, DEAD_LETTER)) == 3  # second book channel, unknown channel, trade without price


def test_a_trade_repeated_on_resubscribe_is_emitted_once_oldest_first() -> None:
    trades = [
        {"instId": "BTC-USDT", "tradeId": str(i), "px": "100", "sz": "1", "side": "sell", "ts": str(1630048897000 + i)}
        for i in (3, 2)
    ]  # newest first
    arg = {"channel": "trades", "instId": "BTC-USDT"}
    outs = _feed({"arg": arg, "data": trades}, {"arg": arg, "data": trades[:1]})
    assert [r["trade_id"] for r in records(outs, "trades")] == ["2", "3"]


def test_symbols_from_the_instrument_lists_and_from_ids() -> None:
    framer = OkxFramer("okx")
    for line in raw_lines(OKX):
        if line["t"] == "http":
            assert framer.on_http(line["url"], line["data"], 0) == []
    expected = {**KEYS, "BTC-USD-220527-30000-C": "okx:BTC.USD-20220527-30000-C", "OKDOT2-DOT": "okx:OKDOT2.DOT"}
    for inst_id, key in expected.items():
        assert inst_id in framer.table and framer.instrument(inst_id).key == key
        assert f"okx:{symbol_from_inst_id(inst_id)}" == key
    assert OkxFramer("okx").instrument("BTC-USDT_BTC-USDT-SWAP").symbol == "BTC-USDT_BTC-USDT-SWAP"


def test_offline_command_writes_every_trade(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    command = f"flows.normalize_cex:offline('{OKX}', '{out}')"
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    topics = Counter(json.loads(line)["topic"] for line in out.read_text().splitlines())
    assert topics["trades"] == sum(len(m["data"]) for m in _pushes("trades"))
    assert topics[DEAD_LETTER] == 0


def test_recovery_snapshots_name_the_normalizer_by_the_venue_package() -> None:
    """Pickled state keeps the class path from before the venue became a package
    (``operators.venues.okx``), so recovery snapshots load whichever side of the split took them."""
    normalizer = OkxNormalizer(Instrument("okx", "BTC.USDT", "BTC-USDT"), NormalizerSettings())
    blob = pickle.dumps(normalizer, protocol=pickle.HIGHEST_PROTOCOL)
    assert OkxNormalizer.__module__ == "operators.venues.okx"
    assert b"operators.venues.okx.normalizer" not in blob
    assert type(pickle.loads(blob)) is OkxNormalizer
