"""The venues' live declarations against the real recordings: URLs, subscribe frames, instruments, health rules."""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import orjson
import pytest

from connectors.capture import read_capture
from connectors.collector.backoff import Backoff
from connectors.collector.config import CollectorConfigError, VenueSelection, live_specs
from connectors.collector.plan import plan_venue
from operators.venues.live import Subscription
from simulator.recording import frame_tokens, load_recording, query_tokens
from tests.collector_support import RECORDED, recorded_lists, recorded_plan
from tests.support import capture, envelopes

#: Frames the collector adds to what the recordings sent: Deribit's heartbeat request (Deribit requires answers).
EXTRA_TOKENS = {"public/set_heartbeat", "30"}


def _sent(path_capture: str) -> dict[str, tuple[str | None, list[str]]]:
    """Recorded connection -> (URL, frames the recording client sent), read off the capture."""
    _, events = read_capture(capture(path_capture))
    out: dict[str, tuple[str | None, list[str]]] = {}
    for event in events:
        if event.kind == "connect" and event.conn:
            out[event.conn] = (event.url, [])
        elif event.kind == "send" and event.conn and event.data:
            out[event.conn][1].append(event.data)
    return out


@pytest.mark.parametrize("venue", sorted(RECORDED))
def test_planned_connections_subscribe_what_the_recorded_client_subscribed(venue: str) -> None:
    plan = recorded_plan(venue)
    recording = load_recording(RECORDED[venue].path)
    ours = {}
    for conn in plan.connections:
        tokens = query_tokens(conn.url)
        for frame in plan.spec.subscribe_frames(conn.subscriptions):
            tokens |= frame_tokens(frame)
        ours[conn.conn_id] = (urlsplit(conn.url).path.rstrip("/"), tokens)
    assert len(ours) == len(recording.connections)
    for recorded in recording.connections:
        same = [cid for cid, (path, tokens) in ours.items() if path == recorded.path and tokens >= recorded.tokens]
        assert len(same) == 1, f"{recorded.conn}: {same}"
        assert ours[same[0]][1] - recorded.tokens <= EXTRA_TOKENS


@pytest.mark.parametrize("venue", ["coinbase", "kraken", "bitfinex", "gemini"])
def test_subscribe_frames_are_the_recorded_frames_byte_for_byte(venue: str) -> None:
    plan = recorded_plan(venue)
    recorded = sorted(frames for _, frames in _sent(RECORDED[venue].capture).values())
    ours = sorted(plan.spec.subscribe_frames(conn.subscriptions) for conn in plan.connections)
    assert ours == recorded


@pytest.mark.parametrize("venue", ["binance", "binance_futures"])
def test_binance_streams_travel_in_the_recorded_url(venue: str) -> None:
    (conn,) = recorded_plan(venue).connections
    ((url, frames),) = _sent(RECORDED[venue].capture).values()
    assert url is not None and urlsplit(conn.url)[2:] == urlsplit(url)[2:] and frames == []


def test_connections_follow_the_venue_rules() -> None:
    bybit = {c.conn_id: c for c in recorded_plan("bybit").connections}
    assert bybit["bybit.spot.0"].url.endswith("/v5/public/spot")
    assert bybit["bybit.linear.0"].url.endswith("/v5/public/linear")
    assert not [s for s in bybit["bybit.spot.0"].subscriptions if s.channel == "allLiquidation"]
    assert [c.conn_id for c in recorded_plan("kraken").connections] == [
        "kraken.book-1000.0",
        "kraken.trade.0",
        "kraken.ticker.0",
    ]
    okx = live_specs()["okx"]
    candle = Subscription("candle1m", "BTC-USDT", "BTC.USDT")
    assert okx.connection_url(okx.connection_key(candle), [candle]).endswith("/ws/v5/business")
    assert not okx.applies("funding-rate", candle) and okx.applies(
        "funding-rate", Subscription("x", "y", "BTC.USDT-PERP")
    )


def test_connections_are_split_at_the_venue_limit() -> None:
    venue = "bitfinex"
    spec = live_specs()[venue]
    pairs = ("BTC.USD", "ETH.USD", "LTC.USD", "XRP.USD", "EOS.USD", "BTC.EUR", "ETH.BTC", "IOT.USD", "NEO.USD")
    selection = VenueSelection(venue, spec, pairs, ("ticker", "trades", "book-P0-F0-25"))
    plan = plan_venue(selection, recorded_lists(RECORDED[venue].path), [])
    assert [(c.conn_id, len(c.subscriptions)) for c in plan.connections] == [
        ("bitfinex.ws.0", 25),
        ("bitfinex.ws.1", 2),
    ]
    for conn in plan.connections:  # every connection asks for the sequence numbers the framer checks
        assert spec.subscribe_frames(conn.subscriptions)[0] == '{"event":"conf","flags":65536}'


@pytest.mark.parametrize("venue", sorted(RECORDED))
def test_default_instruments_are_in_the_recorded_instrument_lists(venue: str) -> None:
    spec = live_specs()[venue]
    selection = VenueSelection(venue, spec, spec.default_instruments, spec.default_channels)
    plan = plan_venue(selection, recorded_lists(RECORDED[venue].path), [])
    resolved = {(s.symbol, s.venue_symbol) for c in plan.connections for s in c.subscriptions}
    for name in spec.default_instruments:  # normalized names resolve; venue symbols (PF_XBTUSD) are taken as given
        assert [name for symbol, venue_symbol in resolved if name in (symbol, venue_symbol)] == [name], resolved


def test_names_that_cannot_be_resolved_are_clear_errors() -> None:
    spec = live_specs()["bybit"]
    lists = recorded_lists(RECORDED["bybit"].path)
    selection = VenueSelection("bybit", spec, ("BTCUSDT", "NOPE.USDT", "BTC.USDT"), ("tickers",))
    with pytest.raises(CollectorConfigError) as err:
        plan_venue(selection, lists, [])
    assert "bybit: instrument 'BTCUSDT' is ambiguous: BTCUSDT (BTC.USDT), BTCUSDT (BTC.USDT-PERP)" in str(err.value)
    assert "bybit: instrument 'NOPE.USDT' is not in the venue's instrument list" in str(err.value)
    without_lists = VenueSelection("bybit", spec, ("BTC.USDT",), ("tickers",))
    with pytest.raises(CollectorConfigError, match=r"cannot resolve 'BTC.USDT' without .*\(HTTP 503\); give the venue"):
        plan_venue(without_lists, [], ["HTTP 503"])
    venue_symbols = plan_venue(VenueSelection("bybit", spec, ("ETHUSDT",), ("tickers",)), [], ["HTTP 503"])
    assert [c.url for c in venue_symbols.connections] == ["wss://stream.bybit.com/v5/public/linear"]
    unlisted = plan_venue(VenueSelection("bybit", spec, ("BTC-27DEC24-100000-C",), ("tickers",)), lists, [])
    assert [c.url for c in unlisted.connections] == ["wss://stream.bybit.com/v5/public/option"]


def test_health_rules_each_venue_requires() -> None:
    specs = live_specs()
    deribit = specs["deribit"]
    test_request = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
    assert orjson.loads(deribit.reply(test_request) or "null")["method"] == "public/test"
    assert deribit.reply('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}') is None
    assert specs["bitfinex"].asks_reconnect('{"event":"info","code":20051,"msg":"Stopping. Please try to reconnect"}')
    assert not specs["bitfinex"].asks_reconnect('{"event":"info","version":2,"platform":{"status":1}}')
    assert (specs["bybit"].ping_frame(), specs["bybit"].ping_interval_s) == ('{"op":"ping"}', 20.0)
    assert specs["okx"].ping_frame() == "ping" and (specs["okx"].ping_interval_s or 30) < 30
    for venue in ("binance", "binance_us", "binance_futures", "binance_delivery"):
        assert (specs[venue].rotate_after_s or 0) < 24 * 3600 and specs[venue].max_subscriptions <= 1024


def test_binance_snapshots_follow_diff_books_and_must_bridge() -> None:
    spec = live_specs()["binance"]
    envs = envelopes(RECORDED["binance"].path)
    first_diff = next(e for e in envs if e.channel == "depth@100ms" and e.venue_symbol == "NKNUSDT")
    snapshot = next(e for e in envs if e.kind == "rest" and e.venue_symbol == "NKNUSDT")
    assert spec.snapshot_url(first_diff) == "https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000"
    assert spec.snapshot_url(next(e for e in envs if e.channel == "bookTicker")) is None
    assert not spec.snapshot_outdated(first_diff, snapshot.frame)
    first_u = orjson.loads(first_diff.frame)["data"]["U"]
    stale = orjson.dumps({**orjson.loads(snapshot.frame), "lastUpdateId": first_u - 1}).decode()
    assert spec.snapshot_outdated(first_diff, stale)
    futures = live_specs()["binance_futures"]
    diff = next(e for e in envelopes(RECORDED["binance_futures"].path) if e.channel == "depth@100ms")
    assert futures.snapshot_url(diff) == f"https://fapi.binance.com/fapi/v1/depth?symbol={diff.venue_symbol}&limit=1000"


def test_backoff_grows_exponentially_within_its_bounds_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(7))
    delays = []
    for _ in range(200):  # 200 outages of 8 failed attempts each
        delays.append([backoff.next_delay() for _ in range(8)])
        assert backoff.attempt == 8
        backoff.reset()
    assert all(0.5 <= d <= 8.0 for row in delays for d in row)
    for n in range(8):
        ceiling = min(8.0, 0.5 * 2 ** (n + 1))
        column = [row[n] for row in delays]
        assert max(column) <= ceiling and max(column) > 0.9 * ceiling  # jitter spans the whole window
    with pytest.raises(ValueError, match="backoff needs 0 < min"):
        Backoff(2.0, 1.0)
