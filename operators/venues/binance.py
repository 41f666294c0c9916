"""Binance spot websocket streams (also Binance.US, same protocol).

Channels: ``<s>@depth`` / ``@depth@100ms`` diff books bridged to the REST ``/api/v3/depth`` snapshot's
``lastUpdateId`` (drop ``u <= L``, the first applied diff has ``U <= L+1 <= u``, then ``U == previous u + 1``),
partial books ``@depthN``, ``@aggTrade``, ``@trade``, ``@bookTicker``, ``@kline_<i>``. Combined-stream frames
(``{"stream":..,"data":..}``) and raw-stream frames are both understood.

Diffs that arrive before the snapshot (the collector fetches it after the first diff, as Binance prescribes)
are buffered and replayed against it.

Live (`BinanceLive`): subscriptions travel in the URL (``/stream?streams=<symbol>@<channel>/...``), so no
subscribe frame is sent; the server pings (every 20 s on spot, 3 min on futures) and the websocket client
answers; Binance cuts every connection after 24 h, so the collector rotates it after 23 h. A diff book needs the
REST depth snapshot, fetched after the first diff of each connection and fetched again while its
``lastUpdateId`` is older than that diff's ``U``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

from operators.book import ASK, BID
from operators.records import Output
from operators.symbols import Instrument, split_concatenated, spot
from operators.timeparse import ms_to_us
from operators.venues import binance_frames
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, Venue
from operators.venues.binance_frames import DIFF_DEPTH
from operators.venues.live import LiveSpec, Subscription
from schemas.raw import REST, RawEnvelope

__all__ = ["BINANCE_KLINES", "VENUES", "BinanceFramer", "BinanceLive", "BinanceNormalizer"]

_COMBINED = re.compile(r'^\{"stream":"([^"@]+)@([^"]+)"')
_PARTIAL_DEPTH = re.compile(r"^depth(5|10|20)(@|$)")
#: Kline stream names (all Binance markets).
BINANCE_KLINES = r"kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)"


class BinanceFramer(Framer):
    """Attributes Binance frames to instruments by stream name (or the ``s`` field of raw streams)."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    # -- symbols ---------------------------------------------------------------------------------------------
    def symbol_from_info(self, info: dict[str, Any]) -> str:
        return spot(info["baseAsset"], info["quoteAsset"])

    def symbol_from_name(self, venue_symbol: str) -> str:
        """Without exchangeInfo: split by known quote; an unknown quote keeps the venue symbol."""
        try:
            base, quote = split_concatenated(venue_symbol)
        except ValueError:
            return venue_symbol
        return spot(base, quote)

    def instrument(self, venue_symbol: str) -> Instrument:
        inst = self.table.get(venue_symbol)
        if inst is None:
            inst = Instrument(self.exchange, self.symbol_from_name(venue_symbol), venue_symbol)
            self.table[venue_symbol] = inst
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, exchange_info: dict[str, Any]) -> None:
        for info in exchange_info.get("symbols", []):
            try:
                symbol = self.symbol_from_info(info)
            except (KeyError, ValueError):
                continue
            self.table[info["symbol"]] = Instrument(self.exchange, symbol, info["symbol"])

    # -- events ----------------------------------------------------------------------------------------------
    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _COMBINED.match(text)
        if match is not None:
            if match.group(1).startswith("!"):
                return []  # all-market streams (!miniTicker@arr, ...) name no single instrument
            venue_symbol, channel = match.group(1).upper(), match.group(2)
        else:
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                return []
            if not isinstance(msg, dict):
                return []
            if "stream" in msg and "@" in msg["stream"]:
                name, _, channel = msg["stream"].partition("@")
                venue_symbol = name.upper()
            elif "s" in msg:
                venue_symbol = msg["s"]
                channel = msg.get("e", "bookTicker")
            else:
                return []  # subscription acks and other connection-level replies
        return [self.envelope(self.instrument(venue_symbol), channel, conn, text, ts)]

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        path = urlparse(url).path if url else ""
        if path.endswith("exchangeInfo"):
            with contextlib.suppress(orjson.JSONDecodeError):
                self.learn(orjson.loads(text))
            return []
        if path.endswith("/depth") or (url is None and text.startswith('{"lastUpdateId"')):
            inst = self._rest_instrument(url)
            return [self.envelope(inst, "depth_snapshot", None, text, ts, kind=REST, url=url)]
        if path.endswith("openInterest"):
            inst = self._rest_instrument(url)
            return [self.envelope(inst, "open_interest", None, text, ts, kind=REST, url=url)]
        return []

    def _rest_instrument(self, url: str | None) -> Instrument:
        if url:
            symbols = parse_qs(urlparse(url).query).get("symbol")
            if symbols:
                return self.instrument(symbols[0].upper())
        seen = {inst.venue_symbol: inst for conn in self.conn_urls for inst in self.instruments_on(conn)}
        if len(seen) == 1:
            return next(iter(seen.values()))
        raise ValueError(f"cannot tell which instrument a REST response without a symbol belongs to: {url}")


class BinanceNormalizer(InstrumentNormalizer):
    """One Binance spot instrument: trades, diff book, partial book, best bid/offer, candles."""

    book_channels = ("depth",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        #: lastUpdateId / u of the book state; None until a snapshot arrives (and after a gap).
        self.last_update_id: int | None = None
        self.bridged = False
        self.pending: list[tuple[int, dict[str, Any]]] = []

    def books(self) -> list[Any]:
        return [self.book]

    typed_decoder = staticmethod(binance_frames.typed_decoder)

    # -- sequence rules (USD-M and COIN-M futures override) --------------------------------------------------
    def is_stale(self, delta: dict[str, Any], last: int) -> bool:
        u: int = delta["u"]
        return u <= last

    def bridges(self, delta: dict[str, Any], last: int) -> bool:
        U: int = delta["U"]
        u: int = delta["u"]
        return U <= last + 1 <= u

    def continues(self, delta: dict[str, Any], last: int) -> bool:
        U: int = delta["U"]
        return last + 1 == U

    def describe_gap(self, delta: dict[str, Any], last: int) -> str:
        return f"gap: expected U={last + 1}, got U={delta['U']} u={delta['u']}"

    # -- dispatch --------------------------------------------------------------------------------------------
    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        data = msg["data"] if "stream" in msg else msg
        event = data.get("e")
        if env.channel.startswith("depth") and _PARTIAL_DEPTH.match(env.channel):
            return self.on_partial_depth(env, data)
        if event is None:  # spot best bid/offer frames name no event
            if "b" in data and "a" in data and "u" in data:
                return [self.ticker(env, data)]
            return self.on_other(env, data, event)
        if event == "depthUpdate":
            return self.on_depth(env, data)
        if event == "aggTrade":
            return [self.trade(env, data, str(data["a"]), data["a"])]
        if event == "trade":
            return [self.trade(env, data, str(data["t"]), data["t"])]
        if event == "kline":
            return [self.candle(env, data)]
        if event == "bookTicker":
            return [self.ticker(env, data)]
        return self.on_other(env, data, event)

    def on_other(self, env: RawEnvelope, data: dict[str, Any], event: Any) -> list[Output]:
        raise BadFrame(f"unknown Binance event {event!r} on channel {env.channel}")

    def on_rest(self, env: RawEnvelope, msg: Any) -> list[Output]:
        if isinstance(msg, dict) and "lastUpdateId" in msg:
            return self.on_snapshot(env, msg)
        if isinstance(msg, dict) and "openInterest" in msg:
            event_ts = ms_to_us(msg["time"]) if "time" in msg else env.receipt_ts
            return [self.out.open_interest(event_ts, env.receipt_ts, open_interest=float(msg["openInterest"]))]
        if isinstance(msg, dict) and "code" in msg and "msg" in msg:
            raise BadFrame(f"Binance REST error {msg['code']}: {msg['msg']}", "venue_error")
        return super().on_rest(env, msg)

    # -- channels --------------------------------------------------------------------------------------------
    def trade(self, env: RawEnvelope, data: dict[str, Any], trade_id: str, sequence: int) -> Output:
        return self.out.trade(
            ms_to_us(data["T"]),
            env.receipt_ts,
            trade_id,
            float(data["p"]),
            float(data["q"]),
            "sell" if data["m"] else "buy",
            sequence,
        )

    def ticker(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        return self.out.quote(
            ms_to_us(data["E"]) if "E" in data else env.receipt_ts,
            env.receipt_ts,
            float(data["b"]),
            float(data["B"]),
            float(data["a"]),
            float(data["A"]),
            data.get("u"),
        )

    def candle(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        k = data["k"]
        return self.out.candle(
            ms_to_us(data["E"]),
            env.receipt_ts,
            interval=k["i"],
            start_ts=ms_to_us(k["t"]),
            end_ts=ms_to_us(k["T"] + 1),
            open_=float(k["o"]),
            high=float(k["h"]),
            low=float(k["l"]),
            close=float(k["c"]),
            volume=float(k["v"]),
            quote_volume=float(k["q"]),
            trades=int(k["n"]),
            closed=bool(k["x"]),
        )

    # -- book ------------------------------------------------------------------------------------------------
    def on_snapshot(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        last = int(msg["lastUpdateId"])
        event_ts = ms_to_us(msg["E"]) if "E" in msg else env.receipt_ts
        self.book.load_snapshot(
            ((float(p), float(q), None, None) for p, q, *_ in msg["bids"]),
            ((float(p), float(q), None, None) for p, q, *_ in msg["asks"]),
        )
        out = self.book.publish_snapshot(event_ts, env.receipt_ts, last)
        self.last_update_id = last
        self.bridged = False
        pending, self.pending = self.pending, []
        for receipt_ts, delta in pending:
            out.extend(self.apply_delta(receipt_ts, delta))
        return out

    def on_depth(self, env: RawEnvelope, delta: dict[str, Any]) -> list[Output]:
        if self.last_update_id is None or not self.book.valid:
            # No usable book (none yet, or resynced): hold diffs for the next REST snapshot to bridge.
            self.last_update_id = None
            self.pending.append((env.receipt_ts, delta))
            if len(self.pending) > self.settings.max_buffered_deltas:
                del self.pending[0]
            return []
        return self.apply_delta(env.receipt_ts, delta)

    def apply_delta(self, receipt_ts: int, delta: dict[str, Any]) -> list[Output]:
        last = self.last_update_id
        if last is None:
            self.pending.append((receipt_ts, delta))
            return []
        event_ts = ms_to_us(delta["E"])
        if not self.bridged:
            if self.is_stale(delta, last):
                return []
            if not self.bridges(delta, last):
                return self.gap(
                    event_ts,
                    receipt_ts,
                    f"gap: snapshot lastUpdateId={last} does not bridge to U={delta['U']} u={delta['u']}",
                )
            self.bridged = True
        elif not self.continues(delta, last):
            return self.gap(event_ts, receipt_ts, self.describe_gap(delta, last))
        book = self.book
        book.apply(BID, delta["b"])
        book.apply(ASK, delta["a"])
        self.last_update_id = delta["u"]
        return book.commit(event_ts, receipt_ts, delta["u"])

    def gap(self, event_ts: int, receipt_ts: int, reason: str) -> list[Output]:
        """Invalidate the book and wait for the next REST snapshot."""
        self.last_update_id = None
        self.bridged = False
        return self.book.resync(event_ts, receipt_ts, reason)

    def on_partial_depth(self, env: RawEnvelope, data: dict[str, Any]) -> list[Output]:
        bids = data.get("bids", data.get("b"))
        asks = data.get("asks", data.get("a"))
        if bids is None or asks is None:
            raise BadFrame(f"partial depth frame without bids/asks on {env.channel}")
        event_ts = ms_to_us(data["E"]) if "E" in data else env.receipt_ts
        sequence = data.get("lastUpdateId", data.get("u"))
        self.book.load_snapshot(
            ((float(p), float(q), None, None) for p, q, *_ in bids),
            ((float(p), float(q), None, None) for p, q, *_ in asks),
        )
        return self.book.publish_snapshot(event_ts, env.receipt_ts, sequence)


@dataclass(frozen=True)
class BinanceLive(LiveSpec):
    """Binance spot and futures streams (see the module docstring)."""

    #: REST path of the depth snapshot (``/fapi/v1/depth`` on USD-M, ``/dapi/v1/depth`` on COIN-M).
    snapshot_path: str = "/api/v3/depth"

    def connection_url(self, key: str, subs: Sequence[Subscription]) -> str:
        streams = "/".join(f"{sub.venue_symbol.lower()}@{sub.channel}" for sub in subs)
        return f"{self.ws_url}?streams={streams}"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        return []

    def snapshot_url(self, env: RawEnvelope) -> str | None:
        if DIFF_DEPTH.fullmatch(env.channel) is None:
            return None
        return f"{self.rest_url}{self.snapshot_path}?symbol={env.venue_symbol}&limit=1000"

    def snapshot_outdated(self, first: RawEnvelope, snapshot: str) -> bool:
        try:
            msg = orjson.loads(first.frame)
            diff = msg.get("data", msg)
            return int(orjson.loads(snapshot)["lastUpdateId"]) < int(diff["U"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return False  # not a snapshot or not a diff: the normalizer decides what it is worth


_SPOT_CHANNELS = (r"depth(5|10|20)?(@(100|1000)ms)?", "aggTrade", "trade", "bookTicker", BINANCE_KLINES)
_SPOT_DEFAULTS = ("depth@100ms", "aggTrade", "bookTicker", "kline_1m")
#: 1024 streams are allowed per connection; 200 keeps the URL short.
_STREAMS_PER_CONNECTION = 200
_ROTATE_AFTER_S = 23 * 3600.0

VENUES = [
    Venue(
        "binance",
        ("BINANCE",),
        BinanceFramer,
        BinanceNormalizer,
        "Binance spot",
        live=BinanceLive(
            ws_url="wss://stream.binance.com:9443/stream",
            rest_url="https://api.binance.com",
            channels=_SPOT_CHANNELS,
            default_channels=_SPOT_DEFAULTS,
            default_instruments=("BTC.USDT", "ETH.USDT"),
            instrument_lists=("/api/v3/exchangeInfo",),
            max_subscriptions=_STREAMS_PER_CONNECTION,
            rotate_after_s=_ROTATE_AFTER_S,
        ),
    ),
    Venue(
        "binance_us",
        ("BINANCE_US",),
        BinanceFramer,
        BinanceNormalizer,
        "Binance.US spot",
        live=BinanceLive(
            ws_url="wss://stream.binance.us:9443/stream",
            rest_url="https://api.binance.us",
            channels=_SPOT_CHANNELS,
            default_channels=_SPOT_DEFAULTS,
            default_instruments=("BTC.USD", "ETH.USD"),
            instrument_lists=("/api/v3/exchangeInfo",),
            max_subscriptions=_STREAMS_PER_CONNECTION,
            rotate_after_s=_ROTATE_AFTER_S,
        ),
    ),
]
