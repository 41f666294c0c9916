"""Kraken Futures websocket v1 (``wss://futures.kraken.com/ws/v1``).

Feeds, each frame naming its instrument in ``product_id`` (upper case, while subscriptions and the REST
instrument list use lower case):

* ``book_snapshot`` + ``book``: one delta per frame ``{side, seq, price, qty, timestamp}``, ``side`` ``buy`` =
  bid and ``sell`` = ask, ``qty`` 0 deletes the level. ``seq`` counts the product's book messages and the first
  delta follows the snapshot's ``seq``: every delta must carry the previous ``seq`` + 1 (checked on the
  recordings: contiguous per product). A delta with a lower or equal ``seq`` is a repeat and ignored; a higher
  one is a gap: resync, then nothing until the next ``book_snapshot``. The feed carries no checksum.
* ``trade_snapshot`` (recent trades, newest first: emitted once, oldest first) and ``trade``. ``side`` is the
  taker side, as Kraken documents it (checked on the recordings: buys execute at the best ask). Trades of
  ``type`` ``liquidation`` also yield a ``liquidations`` record whose side is the trade's side: the liquidation
  order is taken to be the taker (Kraken does not say which side was liquidated).
* ``ticker_lite``: best bid and ask and 24 h volume; no venue time, so ``event_timestamp`` is the receipt time.
* ``ticker`` (from the documentation, not recorded): a ``ticker`` record; for perpetuals a ``funding`` record
  whose ``rate`` is ``relative_funding_rate`` (a fraction, comparable across venues; ``funding_rate`` is an
  absolute amount per contract) and ``predicted_rate`` ``relative_funding_rate_prediction``; Kraken omits
  these fields when they are zero. ``next_funding_rate_time`` is documented as "time until next funding" but
  Kraken's own examples carry an epoch time in ms: values below 10^12 are read as a duration from ``time``.
  ``open_interest`` is emitted when ``openInterest`` changes.

Connection-level frames (``info``, ``subscribed``, ``alert``, ``error``, heartbeats) are dropped by the framer.

Live (`KrakenFuturesLive`): one ``{"event":"subscribe","feed":..,"product_ids":[..]}`` frame per feed; Kraken
asks for a ping at least every 60 s, which the websocket-protocol pings (every 20 s) are. ``BTC.USD-PERP`` names
both ``PI_XBTUSD`` and ``PF_XBTUSD``, so configurations name such products by product id.

Symbols: ``PI_``/``PF_``/``PV_`` perpetuals -> ``BTC.USD-PERP``, ``FI_``/``FF_``/``FV_`` with a ``_YYMMDD``
suffix -> ``BTC.USD-20210730``. Inverse and linear contracts of one pair (``PI_XBTUSD`` and ``PF_XBTUSD``) thus
share a normalized symbol; a normalizer serves the venue symbol it was created for and dead-letters frames of
the other, so two books never mix under one key.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from operators.book import ASK, BID
from operators.records import Output
from operators.symbols import Instrument, future, perp, split_concatenated, yymmdd_to_date
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, RecentTrades, Venue
from operators.venues.live import LiveSpec, Subscription, compact_json
from schemas.raw import RawEnvelope

__all__ = [
    "VENUES",
    "KrakenFuturesFramer",
    "KrakenFuturesLive",
    "KrakenFuturesNormalizer",
    "symbol_from_info",
    "symbol_from_name",
]

_FRAME_HEAD = re.compile(r'^\{"feed":"([a-z_]+)","product_id":"([^"]+)"')
_PRODUCT = re.compile(r"^([PF][A-Z])_([A-Z0-9]+?)(?:_(\d{6}))?$")
_BOOK_SIDES = {"buy": BID, "sell": ASK}
_TAKER_SIDES = {"buy": "buy", "sell": "sell"}
_BOOK_FEEDS = frozenset(("book", "book_snapshot"))
#: ``next_funding_rate_time`` below this (ms) is a duration, above it an epoch time.
_EPOCH_MS = 10**12
#: Kraken Futures quote currencies (the shared list holds TUSD, which would split XBTUSD as XB/TUSD).
_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP")


def _pair(product_id: str) -> tuple[str, str, str | None]:
    """(prefix, pair, YYMMDD or None) of ``PI_XBTUSD`` / ``FI_XBTUSD_210730``; ValueError otherwise."""
    match = _PRODUCT.match(product_id.upper())
    if match is None:
        raise ValueError(f"not a Kraken Futures product id: {product_id!r}")
    prefix, pair, expiry = match.groups()
    return prefix, pair, expiry


def symbol_from_name(product_id: str) -> str:
    prefix, pair, expiry = _pair(product_id)
    base, quote = split_concatenated(pair, _QUOTES)
    if expiry is not None:
        return future(base, quote, yymmdd_to_date(expiry))
    if prefix[0] == "P":
        return perp(base, quote)
    raise ValueError(f"Kraken Futures product {product_id!r} is neither perpetual nor dated")


def symbol_from_info(info: dict[str, Any]) -> str:
    """The symbol of one entry of ``/derivatives/api/v3/instruments``."""
    prefix, pair, _ = _pair(info["symbol"])
    base, quote = info.get("base"), info.get("quote")
    if not (base and quote):
        base, quote = split_concatenated(pair, _QUOTES)
    last_trading = info.get("lastTradingTime")
    if last_trading:
        return future(base, quote, last_trading[:10].replace("-", ""))
    if prefix[0] == "P":
        return perp(base, quote)
    raise ValueError(f"Kraken Futures instrument {info['symbol']!r} has no expiry and is not perpetual")


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


class KrakenFuturesFramer(Framer):
    """Attributes frames to instruments by ``product_id``; drops connection-level frames."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    def instrument(self, product_id: str) -> Instrument:
        inst = self.table.get(product_id)
        if inst is None:
            try:
                symbol = symbol_from_name(product_id)
            except ValueError:
                symbol = product_id  # index or unknown product: keep the venue symbol rather than guess
            inst = self.table[product_id] = Instrument(self.exchange, symbol, product_id)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, instruments: dict[str, Any]) -> None:
        for info in instruments.get("instruments", []):
            if not info.get("tradeable"):
                continue
            try:
                symbol = symbol_from_info(info)
            except (KeyError, ValueError):
                continue
            product_id = info["symbol"].upper()
            self.table[product_id] = Instrument(self.exchange, symbol, product_id)

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _FRAME_HEAD.match(text)
        if match is not None:
            feed, product_id = match.groups()
        else:
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                return []
            if not isinstance(msg, dict) or "event" in msg or not isinstance(msg.get("product_id"), str):
                return []  # info, subscribed, alert, error, heartbeat
            feed, product_id = str(msg.get("feed")), msg["product_id"]
        return [self.envelope(self.instrument(product_id.upper()), feed, conn, text, ts)]

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and url.rstrip("/").endswith("/instruments"):
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                self.learn(orjson.loads(text))
        return []


class KrakenFuturesNormalizer(InstrumentNormalizer):
    """One Kraken Futures product: book, trades (with liquidations), ticker_lite, ticker (funding, OI)."""

    book_channels = ("book",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        self.recent = RecentTrades()
        self.perpetual = instrument.market == "perp"
        self.open_interest: float | None = None

    def books(self) -> list[Any]:
        return [self.book]

    # -- dispatch --------------------------------------------------------------------------------------------
    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        if env.venue_symbol != self.instrument.venue_symbol:
            raise BadFrame(
                f"{env.venue_symbol} shares the symbol {self.instrument.symbol} with {self.instrument.venue_symbol}",
                "symbol_collision",
                book_intact=True,
            )
        feed = msg["feed"]
        if feed == "book":
            return self.on_delta(env, msg)
        if feed == "ticker_lite":
            return [self.ticker_lite(env, msg)]
        if feed == "trade":
            return self.on_trade(env, msg)
        if feed == "ticker":
            return self.on_ticker(env, msg)
        if feed == "book_snapshot":
            return self.on_snapshot(env, msg)
        if feed == "trade_snapshot":
            return self.on_trade_snapshot(env, msg)
        raise BadFrame(f"unknown Kraken Futures feed {feed!r}")

    # -- book ------------------------------------------------------------------------------------------------
    def on_snapshot(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        self.book.load_snapshot(
            ((float(level["price"]), float(level["qty"]), None, None) for level in msg["bids"]),
            ((float(level["price"]), float(level["qty"]), None, None) for level in msg["asks"]),
        )
        return self.book.publish_snapshot(ms_to_us(msg["timestamp"]), env.receipt_ts, msg["seq"])

    def on_delta(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        book = self.book
        if not book.valid:
            return []  # no snapshot yet, or resynced: wait for the next book_snapshot
        seq: int = msg["seq"]
        last = book.sequence
        event_ts = ms_to_us(msg["timestamp"])
        if last is not None and seq != last + 1:
            if seq <= last:
                return []
            return book.resync(event_ts, env.receipt_ts, f"gap: expected seq {last + 1}, got {seq}")
        side = _BOOK_SIDES.get(msg["side"])
        if side is None:
            raise BadFrame(f"unknown Kraken Futures book side {msg['side']!r}")
        book.change(side, float(msg["price"]), float(msg["qty"]))
        return book.commit(event_ts, env.receipt_ts, seq)

    # -- trades ----------------------------------------------------------------------------------------------
    def on_trade_snapshot(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        out: list[Output] = []
        for trade in reversed(msg["trades"]):
            event_ts = ms_to_us(trade["time"])
            if self.recent.is_new(event_ts, trade["uid"]):
                out.extend(self.trade(env, trade, event_ts))
        return out

    def on_trade(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        event_ts = ms_to_us(msg["time"])
        self.recent.see(event_ts, msg["uid"])
        return self.trade(env, msg, event_ts)

    def trade(self, env: RawEnvelope, trade: dict[str, Any], event_ts: int) -> list[Output]:
        side = _TAKER_SIDES.get(trade["side"])
        if side is None:
            raise BadFrame(f"unknown Kraken Futures trade side {trade['side']!r}")
        price, size = float(trade["price"]), float(trade["qty"])
        out = [self.out.trade(event_ts, env.receipt_ts, trade["uid"], price, size, side, trade.get("seq"))]
        if trade.get("type") == "liquidation":
            out.append(self.out.liquidation(event_ts, env.receipt_ts, side=side, price=price, size=size))
        return out

    # -- tickers ---------------------------------------------------------------------------------------------
    def ticker_lite(self, env: RawEnvelope, msg: dict[str, Any]) -> Output:
        return self.out.ticker(
            env.receipt_ts,
            env.receipt_ts,
            bid_price=_num(msg["bid"]),
            ask_price=_num(msg["ask"]),
            volume_24h=_num(msg.get("volume")),
        )

    def on_ticker(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        event_ts = ms_to_us(msg["time"])
        mark, index = _num(msg.get("markPrice")), _num(msg.get("index"))
        out = [
            self.out.ticker(
                event_ts,
                env.receipt_ts,
                bid_price=_num(msg["bid"]),
                bid_size=_num(msg.get("bid_size")),
                ask_price=_num(msg["ask"]),
                ask_size=_num(msg.get("ask_size")),
                last_price=_num(msg.get("last")),
                volume_24h=_num(msg.get("volume")),
                mark_price=mark,
                index_price=index,
            )
        ]
        if self.perpetual:
            out.append(self.funding(env, msg, event_ts, mark, index))
        open_interest = _num(msg.get("openInterest"))
        if open_interest is not None and open_interest != self.open_interest:
            self.open_interest = open_interest
            out.append(self.out.open_interest(event_ts, env.receipt_ts, open_interest=open_interest))
        return out

    def funding(
        self, env: RawEnvelope, msg: dict[str, Any], event_ts: int, mark: float | None, index: float | None
    ) -> Output:
        next_time = msg.get("next_funding_rate_time")
        next_ts = None
        if next_time is not None:
            next_ts = ms_to_us(next_time) if next_time >= _EPOCH_MS else event_ts + ms_to_us(next_time)
        return self.out.funding(
            event_ts,
            env.receipt_ts,
            rate=float(msg.get("relative_funding_rate", 0.0)),
            predicted_rate=float(msg.get("relative_funding_rate_prediction", 0.0)),
            next_funding_ts=next_ts,
            mark_price=mark,
            index_price=index,
        )


@dataclass(frozen=True)
class KrakenFuturesLive(LiveSpec):
    """Kraken Futures v1 subscriptions (see the module docstring)."""

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        return [
            compact_json(
                {"event": "subscribe", "feed": feed, "product_ids": [s.venue_symbol for s in subs if s.channel == feed]}
            )
            for feed in dict.fromkeys(sub.channel for sub in subs)
        ]


VENUES = [
    Venue(
        "kraken_futures",
        ("KRAKEN_FUTURES",),
        KrakenFuturesFramer,
        KrakenFuturesNormalizer,
        "Kraken Futures websocket v1",
        channels=("book_snapshot", "book", "trade_snapshot", "trade", "ticker_lite", "ticker"),
        live=KrakenFuturesLive(
            ws_url="wss://futures.kraken.com/ws/v1",
            rest_url="https://futures.kraken.com",
            channels=("book", "trade", "ticker", "ticker_lite"),
            default_channels=("book", "trade", "ticker"),
            default_instruments=("PF_XBTUSD", "PF_ETHUSD"),
            instrument_lists=("/derivatives/api/v3/instruments",),
            max_subscriptions=100,
        ),
    )
]
