"""Kraken spot websockets v1 (``wss://ws.kraken.com``).

Data frames are JSON arrays ``[channelID, payload(, payload2), channelName, pair]``; the framer attributes them
by the pair and channel name at the end of the frame (a suffix match, no JSON parse), so channel ids need no
mapping. Event objects (``systemStatus``, ``subscriptionStatus``, ``heartbeat``, ``pong``, ``error``) are
consumed by the framer. Pairs come from the REST ``AssetPairs`` response (``wsname``, e.g. ``XBT/CHF`` ->
``BTC.CHF``) when the session fetched it, else from splitting the pair at ``/``; dots inside Kraken currency
codes are dropped (``ETH2.S/ETH`` -> ``ETH2S.ETH``) so a symbol has exactly one dot.

Channels:

* ``book-<depth>`` (10, 25, 100, 500, 1000): snapshot ``{"as": [...], "bs": [...]}``, then updates ``{"a": ...}``
  and/or ``{"b": ...}`` (one or two payload dicts; the last one carries the checksum ``"c"``). Levels are
  ``[price, volume, timestamp(, "r")]``; volume 0 deletes; ``"r"`` (republish: a level re-entering the
  subscribed depth) is applied like any other level. After each update each side is truncated to the
  subscribed depth (Kraken sends no deletes for levels pushed out of scope). There is no sequence number: the
  checksum is the only gap detector. It is Kraken's documented CRC32 over the top 10 asks (ascending) then the
  top 10 bids (descending), each level as its price and volume strings with the ``.`` removed and leading zeros
  stripped. It is computed from the venue's original strings, never from floats: the book (``keep_text``)
  stores each level's strings already in that checksum form, so a checksum only joins 20 stored strings. A
  mismatch publishes a ``resync`` ("checksum mismatch") and nothing more until the next snapshot. Kraken sends
  one only when the pair is subscribed, and nothing feeds a resync back to the collector, so live the book stays
  out of sync until its connection is replaced and the new session subscribes again: after a lost or closed
  connection, or at a planned rotation, which happens only when ``COLLECTOR_ROTATION_INTERVAL_S`` is set
  (`KrakenLive` declares no ``rotate_after_s``). Event time is the latest level timestamp of the snapshot or
  update (compared as strings: with 10-digit epoch seconds lexicographic order is numeric order).
* ``trade``: ``[price, volume, time, side b|s, orderType m|l, misc]``; ``side`` is the taker side. v1 trades have
  no id: ``trade_id`` is ``"<time>-<n>"`` with ``time`` the venue's time string and ``n`` the 0-based ordinal of
  the trade among this pair's trades carrying that same time (counted across frames), so ids are unique and
  deterministic for in-order replays.
* ``ticker``: bid/ask price and lot volume, last price and lot volume, ``volume_24h`` = ``v[1]`` (last 24 hours);
  v1 tickers carry no time, so event time = receipt time.
* ``spread``: ``[bid, ask, timestamp, bidVolume, askVolume]`` -> ticker (bid/ask only), event time = timestamp.
* ``ohlc-<minutes>``: ``[time, etime, open, high, low, close, vwap, volume, count]`` -> candle. Per Kraken's
  documentation ``time`` is the candle's last update time and ``etime`` the interval end, so
  ``start = etime - interval``, event time = ``time``, ``closed`` is null (v1 does not say) and
  ``quote_volume`` is null (only a vwap is sent).

Where this differs from cryptofeed's Kraken feed (following Kraken's documentation): cryptofeed reads the
checksum only from the first payload dict, so it never verifies two-payload updates, while the documentation
puts ``"c"`` in the last dict; cryptofeed does not truncate depth-1000 books, the documentation says to
truncate every book to its subscribed depth.

Live (`KrakenLive`): one connection per channel (a 1000-deep book alone is a heavy stream), each subscribed with
one ``{"event":"subscribe","pair":[..],"subscription":{"name":..}}`` frame; the server sends a heartbeat every
second when idle, so websocket pings suffice. Pairs are ``wsname``s (``XBT/USD``) from ``AssetPairs``.

Assumptions: one book subscription (one depth) per pair in a session; the book's connection is remembered so a
reconnect of the trade or ticker connection does not invalidate a book that Kraken keeps updating.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from operators.book import ASK, BID, BookPublisher, LocalBook
from operators.records import Output
from operators.symbols import Instrument, spot
from operators.timeparse import seconds_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, Venue
from operators.venues.live import LiveSpec, Subscription, compact_json
from schemas.raw import RawEnvelope

__all__ = ["VENUES", "KrakenFramer", "KrakenLive", "KrakenNormalizer", "book_checksum"]

#: Update payload keys and the book sides they change, in the order Kraken's frames list them.
_UPDATE_SIDES = (("a", ASK), ("b", BID))
_TAKER_SIDES = {"b": "buy", "s": "sell"}
_INTERVALS = {1: "1m", 5: "5m", 15: "15m", 30: "30m", 60: "1h", 240: "4h", 1440: "1d", 10080: "1w", 21600: "15d"}
_CHECKSUM_LEVELS = 10


def _digits(text: str) -> str:
    """A price or volume string as it enters the checksum: ``.`` removed, leading zeros stripped."""
    return text.replace(".", "").lstrip("0")


def book_checksum(book: LocalBook) -> int:
    """Kraken's v1 book checksum (unsigned CRC32) of a book whose level texts are already `_digits` forms."""
    top = book.top(ASK, _CHECKSUM_LEVELS) + book.top(BID, _CHECKSUM_LEVELS)
    return zlib.crc32("".join([f"{price}{size}" for _, _, price, size in top]).encode())


def _checksum_matches(expected: int, book: LocalBook) -> bool:
    return book_checksum(book) == expected


def _symbol(base: str, quote: str) -> str:
    """``BASE.QUOTE``; dots inside Kraken codes (``ETH2.S``) are dropped so the symbol keeps one dot."""
    return spot(base.replace(".", ""), quote.replace(".", ""))


def _frame_names(text: str) -> tuple[str, str] | None:
    """(channelName, pair) from the end of a data frame, or None for frames that name no pair."""
    if text.endswith('"]'):
        head, sep, pair = text[:-2].rpartition('","')
        _, sep2, channel = head.rpartition(',"')
        if sep and sep2 and '"' not in channel:
            return channel, pair
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(msg, list) and len(msg) >= 3 and isinstance(msg[-1], str) and isinstance(msg[-2], str):
        return msg[-2], msg[-1]
    return None  # private channels end with a sequence object, not a pair


class KrakenFramer(Framer):
    """Attributes Kraken v1 data frames to pairs; drops event objects."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    def instrument(self, pair: str) -> Instrument:
        inst = self.table.get(pair)
        if inst is None:
            base, slash, quote = pair.partition("/")
            if not (slash and base and quote):
                raise ValueError(f"{pair!r} is not a Kraken v1 BASE/QUOTE pair")
            inst = self.table[pair] = Instrument(self.exchange, _symbol(base, quote), pair)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, asset_pairs: dict[str, Any]) -> None:
        """Pairs from ``/0/public/AssetPairs``: ``wsname`` is the websocket pair name, ``BASE/QUOTE``."""
        for info in (asset_pairs.get("result") or {}).values():
            wsname = info.get("wsname") if isinstance(info, dict) else None
            if isinstance(wsname, str) and wsname.count("/") == 1:
                base, quote = wsname.split("/")
                self.table[wsname] = Instrument(self.exchange, _symbol(base, quote), wsname)

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        if not text.startswith("["):
            return []  # heartbeat, systemStatus, subscriptionStatus, pong, error
        names = _frame_names(text)
        if names is None:
            return []
        channel, pair = names
        try:
            inst = self.instrument(pair)
        except ValueError:
            return []
        return [self.envelope(inst, channel, conn, text, ts)]

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and url.rstrip("/").endswith("/AssetPairs"):
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                return []
            if isinstance(msg, dict):
                self.learn(msg)
        return []


class KrakenNormalizer(InstrumentNormalizer):
    """One Kraken pair: book with checksums, trades, ticker, spread, candles."""

    book_channels = ("book-",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        #: Level texts are the checksum forms (`_digits`) of the venue's price and volume strings.
        self.book = self.new_book(keep_text=True)
        #: Connection the book arrives on (its reconnects, and only those, invalidate the book).
        self.book_conn: str | None = None
        self.trade_time = ""
        self.trade_count = 0

    def books(self) -> list[BookPublisher]:
        return [self.book]

    def on_control(self, env: RawEnvelope) -> list[Output]:
        if env.conn is not None and self.book_conn is not None and env.conn != self.book_conn:
            return []  # the trade or ticker connection reconnected: the book's stream is intact
        return super().on_control(env)

    # -- dispatch --------------------------------------------------------------------------------------------
    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        if not isinstance(msg, list) or len(msg) < 4:
            raise BadFrame(f"Kraken {env.channel} frame is not [channelID, payload, channelName, pair]")
        channel = msg[-2]
        if channel.startswith("book-"):
            return self.on_book(env, channel, msg[1:-2])
        if channel == "trade":
            return self.on_trades(env, msg[1])
        if channel == "ticker":
            return [self.ticker(env, msg[1])]
        if channel == "spread":
            return [self.spread(env, msg[1])]
        if channel.startswith("ohlc-"):
            return [self.candle(env, channel, msg[1])]
        raise BadFrame(f"unknown Kraken channel {channel!r}")

    # -- trades, tickers, candles ----------------------------------------------------------------------------
    def on_trades(self, env: RawEnvelope, trades: list[list[str]]) -> list[Output]:
        out: list[Output] = []
        for trade in trades:
            price, size, time, side = trade[0], trade[1], trade[2], trade[3]
            taker = _TAKER_SIDES.get(side)
            if taker is None:
                raise BadFrame(f"Kraken trade side {side!r} is neither b nor s")
            event_ts = seconds_to_us(time)
            out.append(self.out.trade(event_ts, env.receipt_ts, self.trade_id(time), float(price), float(size), taker))
        return out

    def trade_id(self, time: str) -> str:
        if time == self.trade_time:
            self.trade_count += 1
        else:
            self.trade_time, self.trade_count = time, 0
        return f"{time}-{self.trade_count}"

    def ticker(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        ask, bid, last = data["a"], data["b"], data["c"]
        return self.out.ticker(
            env.receipt_ts,
            env.receipt_ts,
            bid_price=float(bid[0]),
            bid_size=float(bid[2]),
            ask_price=float(ask[0]),
            ask_size=float(ask[2]),
            last_price=float(last[0]),
            last_size=float(last[1]),
            volume_24h=float(data["v"][1]),
        )

    def spread(self, env: RawEnvelope, data: list[str]) -> Output:
        bid, ask, time, bid_size, ask_size = data[:5]
        return self.out.quote(
            seconds_to_us(time), env.receipt_ts, float(bid), float(bid_size), float(ask), float(ask_size)
        )

    def candle(self, env: RawEnvelope, channel: str, data: list[Any]) -> Output:
        minutes = int(channel[5:])
        end_ts = seconds_to_us(data[1])
        return self.out.candle(
            seconds_to_us(data[0]),
            env.receipt_ts,
            interval=_INTERVALS.get(minutes, f"{minutes}m"),
            start_ts=end_ts - minutes * 60_000_000,
            end_ts=end_ts,
            open_=float(data[2]),
            high=float(data[3]),
            low=float(data[4]),
            close=float(data[5]),
            volume=float(data[7]),
            trades=int(data[8]),
        )

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, channel: str, payloads: list[Any]) -> list[Output]:
        if not payloads or not all(isinstance(p, dict) for p in payloads):
            raise BadFrame(f"Kraken {channel} frame without payload objects")
        first = payloads[0]
        if "as" in first or "bs" in first:
            return self.snapshot(env, channel, first)
        if not all("a" in p or "b" in p for p in payloads):
            raise BadFrame(f"Kraken {channel} update without a or b levels")
        if not self.book.valid:
            return []  # after a resync: wait for the next snapshot
        return self.update(env, payloads)

    def snapshot(self, env: RawEnvelope, channel: str, payload: dict[str, Any]) -> list[Output]:
        asks: list[list[str]] = payload.get("as", [])
        bids: list[list[str]] = payload.get("bs", [])
        depth = int(channel[5:])
        latest = max(max((lv[2] for lv in asks), default=""), max((lv[2] for lv in bids), default=""))
        book = self.book
        book.book.depth = depth
        book.load_snapshot(
            ((float(lv[0]), float(lv[1]), _digits(lv[0]), _digits(lv[1])) for lv in bids),
            ((float(lv[0]), float(lv[1]), _digits(lv[0]), _digits(lv[1])) for lv in asks),
        )
        self.book_conn = env.conn
        return book.publish_snapshot(seconds_to_us(latest) if latest else env.receipt_ts, env.receipt_ts, None)

    def update(self, env: RawEnvelope, payloads: list[dict[str, Any]]) -> list[Output]:
        text = payloads[-1].get("c")
        expected = int(text) if text is not None else None
        book = self.book
        latest = ""
        for payload in payloads:
            for key, side in _UPDATE_SIDES:
                for level in payload.get(key, ()):
                    price, size, stamp = level[0], level[1], level[2]
                    book.change(side, float(price), float(size), _digits(price), _digits(size))
                    if stamp > latest:
                        latest = stamp
        event_ts = seconds_to_us(latest) if latest else env.receipt_ts
        verify = partial(_checksum_matches, expected) if expected is not None else None
        out = book.commit(event_ts, env.receipt_ts, None, checksum=expected, verify=verify)
        return out


@dataclass(frozen=True)
class KrakenLive(LiveSpec):
    """Kraken v1 subscriptions (see the module docstring)."""

    def connection_key(self, sub: Subscription) -> str:
        return sub.channel

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        frames = []
        for channel in dict.fromkeys(sub.channel for sub in subs):
            name, _, argument = channel.partition("-")
            subscription: dict[str, Any] = {"name": name}
            if argument:
                subscription["depth" if name == "book" else "interval"] = int(argument)
            pairs = [sub.venue_symbol for sub in subs if sub.channel == channel]
            frames.append(compact_json({"event": "subscribe", "pair": pairs, "subscription": subscription}))
        return frames


VENUES = [
    Venue(
        "kraken",
        ("KRAKEN",),
        KrakenFramer,
        KrakenNormalizer,
        "Kraken spot websockets v1",
        ("book", "trade", "ticker", "spread", "ohlc"),
        live=KrakenLive(
            ws_url="wss://ws.kraken.com",
            rest_url="https://api.kraken.com",
            channels=(
                "trade",
                "ticker",
                "spread",
                r"book-(10|25|100|500|1000)",
                r"ohlc-(1|5|15|30|60|240|1440|10080|21600)",
            ),
            default_channels=("book-100", "trade", "ticker"),
            default_instruments=("BTC.USD", "ETH.USD"),
            instrument_lists=("/0/public/AssetPairs",),
            max_subscriptions=50,
        ),
    )
]
