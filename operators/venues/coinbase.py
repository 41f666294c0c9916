"""Coinbase Advanced Trade market-data websocket (``wss://advanced-trade-ws.coinbase.com``).

Every frame is ``{"channel", "timestamp", "sequence_num", "events": [...]}``; one frame may carry events for
several products, so the framer sends it to each product it names and each normalizer keeps only its own
product's events.

Channels:

* ``l2_data`` (subscribed as ``level2``; both names are accepted): ``snapshot`` / ``update`` events of
  ``{side: bid|offer, price_level, new_quantity, event_time}`` levels, quantity 0 removing the level.
* ``market_trades``: ``snapshot`` (recent history, repeated on every subscribe) and ``update`` events.
* ``ticker`` and ``ticker_batch`` (same schema): best bid/ask with sizes, last price, 24 h volume.
* ``candles``: 5-minute candles (``start`` in epoch seconds), a snapshot of history then updates.
* ``heartbeats``, ``subscriptions`` and ``status`` are connection-level: consumed by the framer (they still
  count in the sequence check). Private channels (``user``, ``futures_balance_summary``) are out of scope.

Sequence rules (Coinbase sends no book checksum):

* ``sequence_num`` counts every frame of a connection, all channels and products, heartbeats and acks
  included. The framer keeps the last one per connection; any other value than last + 1 (a jump or going
  backwards) yields a ``sequence_gap`` control envelope for every instrument of that connection, before the
  frame's own envelopes. A new connection (reconnect) starts counting afresh.
* The normalizer also requires the ``sequence_num`` of its instrument's book frames to increase (this catches
  reordering after keying); otherwise the book resyncs with a ``gap`` reason. After any resync no update is
  published until the next ``l2_data`` snapshot event. Coinbase sends one only when ``level2`` is subscribed,
  and nothing feeds a resync back to the collector, so live the book stays out of sync until its connection is
  replaced and the new session subscribes again: after a lost or closed connection, or at a planned rotation,
  which happens only when ``COLLECTOR_ROTATION_INTERVAL_S`` is set (`CoinbaseLive` declares no
  ``rotate_after_s``).

Venue semantics decided here:

* ``side`` of ``market_trades`` is the MAKER side; records carry the taker side, its opposite. Evidence: on
  the recorded BTC-USD/ETH-USD capture, 49 of 51 live ``SELL`` trades print at the best ask of the preceding
  ticker and 26 of 28 ``BUY`` trades at the best bid (a taker buy lifts the ask; the rebuilt l2 book gives
  the same picture). Coinbase Exchange documents its ``match`` ``side`` as the maker order's side, and
  NautilusTrader's Advanced Trade adapter inverts ``side`` to get the aggressor. cryptofeed passes ``side``
  through unchanged as if it were the taker side; this module follows the venue's semantics instead.
* Trades of an event (snapshot and update alike) arrive newest first; they are emitted oldest first, and the
  subscribe snapshot's trades only when not already seen (`RecentTrades`).
* Book event time is the levels' ``event_time`` (one per event); tickers and candles use the frame
  ``timestamp``. A candle is ``closed`` once its window (``start`` + 300 s) has ended at the frame time.
* Live (`CoinbaseLive`): one ``{"type":"subscribe","product_ids":[..],"channel":..}`` frame per channel. Coinbase
  closes subscriptions that see no update for a while, so ``heartbeats`` is always subscribed (one frame a second
  per connection); the products list is ``/api/v3/brokerage/market/products``. No snapshot is fetched: level2
  starts with one, and a reconnect resubscribes.
* Symbols come from the products REST response (SPOT -> ``BASE.QUOTE``; FUTURE with a PERPETUAL contract ->
  ``BASE.QUOTE-PERP``; expiring FUTURE -> ``BASE.QUOTE-YYYYMMDD``). Without it, ``BTC-USD`` -> ``BTC.USD``,
  ``BTC-PERP-INTX`` -> ``BTC.USDC-PERP`` (INTX perpetuals are USDC-margined), ``BIT-27SEP24-CDE`` ->
  ``BIT.USD-20240927``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from operators.book import ASK, BID, BookPublisher
from operators.records import Output
from operators.symbols import Instrument, future, perp, spot, yymmdd_to_date
from operators.timeparse import iso_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, RecentTrades, Venue
from operators.venues.live import LiveSpec, Subscription, compact_json
from schemas.raw import RawEnvelope

__all__ = [
    "VENUES",
    "CoinbaseFramer",
    "CoinbaseLive",
    "CoinbaseNormalizer",
    "symbol_from_product",
    "symbol_from_product_id",
]

_CHANNEL = re.compile(r'"channel"\s*:\s*"([^"]*)"')
_SEQUENCE = re.compile(r'"sequence_num"\s*:\s*(\d+)')
_PRODUCT = re.compile(r'"product_id"\s*:\s*"([^"]+)"')

#: Channels that concern the connection, not an instrument.
_CONNECTION_CHANNELS = frozenset(("heartbeats", "subscriptions", "status"))
_BOOK_CHANNELS = frozenset(("l2_data", "level2"))
_TICKER_CHANNELS = frozenset(("ticker", "ticker_batch"))

_BOOK_SIDES = {"bid": BID, "offer": ASK, "ask": ASK}
#: Trade ``side`` is the maker's; the taker traded the other way.
_TAKER_SIDE = {"BUY": "sell", "SELL": "buy"}

CANDLE_INTERVAL = "5m"
CANDLE_SECONDS = 300


# -- symbols -------------------------------------------------------------------------------------------------
def symbol_from_product(product: dict[str, Any]) -> str:
    """The normalized symbol of one entry of the products REST response."""
    if product.get("product_type") != "FUTURE":
        return spot(product["base_currency_id"], product["quote_currency_id"])
    details = product.get("future_product_details") or {}
    base = product.get("base_currency_id") or details.get("contract_root_unit") or product["base_display_symbol"]
    quote = product.get("quote_currency_id") or product.get("quote_display_symbol") or "USD"
    if not base:
        raise ValueError(f"no base currency for {product.get('product_id')}")
    if details.get("contract_expiry_type") == "PERPETUAL":
        return perp(base, quote)
    expiry: str = details["contract_expiry"]
    return future(base, quote, expiry[:10].replace("-", ""))


def symbol_from_product_id(product_id: str) -> str:
    """Best guess from the product id alone (no products response seen)."""
    parts = product_id.upper().split("-")
    if len(parts) == 2:
        return spot(parts[0], parts[1])
    if len(parts) == 3 and parts[1] == "PERP":
        return perp(parts[0], "USDC")
    if len(parts) == 3:
        try:
            return future(parts[0], "USD", yymmdd_to_date(parts[1]))
        except ValueError:
            pass
    return product_id.upper()


# -- framer --------------------------------------------------------------------------------------------------
class CoinbaseFramer(Framer):
    """Attributes frames to products by their ``product_id`` fields and checks the connection's sequence."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}
        self.last_sequence: dict[str, int] = {}

    def instrument(self, product_id: str) -> Instrument:
        inst = self.table.get(product_id)
        if inst is None:
            inst = Instrument(self.exchange, symbol_from_product_id(product_id), product_id)
            self.table[product_id] = inst
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, response: dict[str, Any]) -> None:
        products = response.get("products")
        for product in products if isinstance(products, list) else [response]:
            try:
                symbol = symbol_from_product(product)
                product_id = product["product_id"]
            except (KeyError, ValueError, TypeError, AttributeError):
                continue
            self.table[product_id] = Instrument(self.exchange, symbol, product_id)

    def on_connect(self, conn: str, url: str, ts: int) -> list[RawEnvelope]:
        self.last_sequence.pop(conn, None)  # a new connection numbers its frames from 0 again
        return super().on_connect(conn, url, ts)

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and "/products" in url:
            try:
                response = orjson.loads(text)
            except orjson.JSONDecodeError:
                return []
            if isinstance(response, dict):
                self.learn(response)
        return []

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _CHANNEL.search(text)
        if match is None:
            return []  # error replies and anything else outside the channel protocol
        channel = match.group(1)
        out = self.check_sequence(conn, channel, text, ts)
        if channel in _CONNECTION_CHANNELS:
            return out
        for product_id in dict.fromkeys(_PRODUCT.findall(text)):
            out.append(self.envelope(self.instrument(product_id), channel, conn, text, ts))
        return out

    def check_sequence(self, conn: str, channel: str, text: str, ts: int) -> list[RawEnvelope]:
        """Control envelopes when the frame's ``sequence_num`` does not follow the connection's last one."""
        match = _SEQUENCE.search(text)
        if match is None:
            return []
        sequence = int(match.group(1))
        last = self.last_sequence.get(conn)
        self.last_sequence[conn] = sequence
        if last is None or sequence == last + 1:
            return []
        details = {"expected": last + 1, "received": sequence, "channel": channel}
        return self.control(conn, "sequence_gap", ts, details)


# -- normalizer ----------------------------------------------------------------------------------------------
class CoinbaseNormalizer(InstrumentNormalizer):
    """One Coinbase product: trades, level-2 book, ticker and 5-minute candles."""

    book_channels = ("l2_data", "level2")

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        #: sequence_num of the last book frame of this product (None after a control event).
        self.book_sequence: int | None = None
        self.recent = RecentTrades()

    def books(self) -> list[BookPublisher]:
        return [self.book]

    def on_control(self, env: RawEnvelope) -> list[Output]:
        self.book_sequence = None  # after a reconnect sequence_num restarts
        return super().on_control(env)

    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        channel = msg["channel"]
        if channel in _BOOK_CHANNELS:
            return self.on_book(env, msg)
        if channel == "market_trades":
            return self.on_trades(env, msg)
        if channel in _TICKER_CHANNELS:
            return self.on_ticker(env, msg)
        if channel == "candles":
            return self.on_candles(env, msg)
        raise BadFrame(f"unknown Coinbase channel {channel!r}")

    def own(self, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The entries of a multi-product list that belong to this instrument."""
        product_id = self.instrument.venue_symbol
        return (item for item in items if item["product_id"] == product_id)

    @staticmethod
    def event_type(event: dict[str, Any], channel: str) -> str:
        kind: str = event["type"]
        if kind != "snapshot" and kind != "update":
            raise BadFrame(f"unknown Coinbase {channel} event type {kind!r}")
        return kind

    # -- trades ----------------------------------------------------------------------------------------------
    def on_trades(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        out: list[Output] = []
        for event in msg["events"]:
            snapshot = self.event_type(event, "market_trades") == "snapshot"
            for trade in reversed([*self.own(event["trades"])]):
                event_ts = iso_to_us(trade["time"])
                trade_id = str(trade["trade_id"])
                if snapshot and not self.recent.is_new(event_ts, trade_id):
                    continue
                if not snapshot:
                    self.recent.see(event_ts, trade_id)
                out.append(self.trade(env, trade, event_ts, trade_id))
        return out

    def trade(self, env: RawEnvelope, trade: dict[str, Any], event_ts: int, trade_id: str) -> Output:
        side = _TAKER_SIDE.get(trade["side"])
        if side is None:
            raise BadFrame(f"unknown Coinbase trade side {trade['side']!r}")
        return self.out.trade(
            event_ts,
            env.receipt_ts,
            trade_id,
            float(trade["price"]),
            float(trade["size"]),
            side,
            int(trade_id) if trade_id.isdigit() else None,
        )

    # -- ticker ----------------------------------------------------------------------------------------------
    def on_ticker(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        event_ts = iso_to_us(msg["timestamp"])
        sequence: int = msg["sequence_num"]
        out: list[Output] = []
        for event in msg["events"]:
            for ticker in self.own(event["tickers"]):
                out.append(
                    self.out.ticker(
                        event_ts,
                        env.receipt_ts,
                        bid_price=_number(ticker.get("best_bid")),
                        bid_size=_number(ticker.get("best_bid_quantity")),
                        ask_price=_number(ticker.get("best_ask")),
                        ask_size=_number(ticker.get("best_ask_quantity")),
                        last_price=_number(ticker.get("price")),
                        volume_24h=_number(ticker.get("volume_24_h")),
                        sequence=sequence,
                    )
                )
        return out

    # -- candles ---------------------------------------------------------------------------------------------
    def on_candles(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        event_ts = iso_to_us(msg["timestamp"])
        out: list[Output] = []
        for event in msg["events"]:
            for candle in self.own(event["candles"]):
                start_ts = int(candle["start"]) * 1_000_000
                end_ts = start_ts + CANDLE_SECONDS * 1_000_000
                out.append(
                    self.out.candle(
                        event_ts,
                        env.receipt_ts,
                        interval=CANDLE_INTERVAL,
                        start_ts=start_ts,
                        end_ts=end_ts,
                        open_=float(candle["open"]),
                        high=float(candle["high"]),
                        low=float(candle["low"]),
                        close=float(candle["close"]),
                        volume=float(candle["volume"]),
                        closed=end_ts <= event_ts,
                    )
                )
        return out

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        sequence: int = msg["sequence_num"]
        last = self.book_sequence
        if last is not None and sequence <= last:
            reason = f"gap: book frame sequence_num {sequence} arrived after {last} (reordered or repeated)"
            return self.book.resync(iso_to_us(msg["timestamp"]), env.receipt_ts, reason)
        self.book_sequence = sequence
        out: list[Output] = []
        for event in self.own(msg["events"]):
            updates: list[dict[str, Any]] = event["updates"]
            event_ts = iso_to_us(updates[0]["event_time"] if updates else msg["timestamp"])
            if self.event_type(event, "l2_data") == "snapshot":
                out.extend(self.load_snapshot(updates, event_ts, env.receipt_ts, sequence))
            elif self.book.valid:
                out.extend(self.apply_update(updates, event_ts, env.receipt_ts, sequence))
        return out

    def load_snapshot(
        self, updates: list[dict[str, Any]], event_ts: int, receipt_ts: int, sequence: int
    ) -> list[Output]:
        bids: list[tuple[float, float, None, None]] = []
        asks: list[tuple[float, float, None, None]] = []
        sides = (bids, asks)
        for level in updates:
            sides[_BOOK_SIDES[level["side"]]].append(
                (float(level["price_level"]), float(level["new_quantity"]), None, None)
            )
        self.book.load_snapshot(bids, asks)
        return self.book.publish_snapshot(event_ts, receipt_ts, sequence)

    def apply_update(
        self, updates: list[dict[str, Any]], event_ts: int, receipt_ts: int, sequence: int
    ) -> list[Output]:
        change = self.book.change
        for level in updates:
            change(_BOOK_SIDES[level["side"]], float(level["price_level"]), float(level["new_quantity"]))
        return self.book.commit(event_ts, receipt_ts, sequence)


def _number(text: str | None) -> float | None:
    """A venue decimal string, None when absent or empty."""
    return float(text) if text else None


@dataclass(frozen=True)
class CoinbaseLive(LiveSpec):
    """Coinbase Advanced Trade subscriptions (see the module docstring)."""

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        products = list(dict.fromkeys(sub.venue_symbol for sub in subs))
        channels = list(dict.fromkeys(sub.channel for sub in subs))
        if "heartbeats" not in channels:
            channels.append("heartbeats")
        frames = []
        for channel in channels:
            ids = [sub.venue_symbol for sub in subs if sub.channel == channel] or products
            frames.append(compact_json({"type": "subscribe", "product_ids": ids, "channel": channel}))
        return frames


_LIVE_CHANNELS = ("level2", "market_trades", "ticker", "ticker_batch", "candles", "heartbeats")

VENUES = [
    Venue(
        "coinbase",
        ("COINBASE",),
        CoinbaseFramer,
        CoinbaseNormalizer,
        "Coinbase Advanced Trade",
        _LIVE_CHANNELS,
        live=CoinbaseLive(
            ws_url="wss://advanced-trade-ws.coinbase.com",
            rest_url="https://api.coinbase.com",
            channels=_LIVE_CHANNELS,
            default_channels=("level2", "market_trades", "ticker", "candles"),
            default_instruments=("BTC.USD", "ETH.USD"),
            instrument_lists=("/api/v3/brokerage/market/products",),
            max_subscriptions=100,
        ),
    )
]
