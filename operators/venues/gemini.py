"""Gemini market data: v2 (``wss://api.gemini.com/v2/marketdata``), and the v1 per-symbol feed.

v2, one connection for many symbols, frames named by ``type`` and ``symbol``:

* ``l2_updates``: ``changes`` of ``[side, price, quantity]`` with side ``buy`` (bid) or ``sell`` (ask) and
  quantity the new level size (``0`` removes the level). The initial response to a subscription, the one that
  also carries ``trades`` (and ``auction_events``), is the whole book: it is published as a snapshot; later
  frames are deltas. v2 has no sequence numbers and no checksums, so the only gap Gemini lets us see is the
  collector's reconnect control envelope, after which the book waits for the next subscription snapshot.
* ``trade``: ``side`` is the taker side (Gemini documents it so); ``trade_id`` is ``tid``, the trade id.
  ``event_id`` identifies the matching event, which several trades can share (cryptofeed uses it as the trade
  id, which merges such trades; the documentation names ``tid`` the trade id, so ``tid`` it is). The recent
  trades in the initial ``l2_updates`` are emitted once, oldest first (`RecentTrades`), so a resubscription
  does not repeat them.
* ``candles_<interval>_updates``: ``changes`` of ``[time ms, open, high, low, close, volume]`` -> candles, oldest
  first; Gemini does not say when a candle is final, so ``closed`` is null.
* ``mark_price_updates`` (perpetuals): ``mark_price`` and ``spot_index`` at ``timestamp`` (ns) -> ticker.
  ``funding_amount_updates`` carry a funding amount, not a rate, so they are dead-lettered rather than
  published as a funding rate. Auction frames (``auction_open``, ``auction_indicative``, ``auction_result``)
  produce no record.
* heartbeats and other frames without a ``symbol`` are connection-level and not forwarded.

v1 (``/v1/marketdata/<symbol>``, the symbol in the URL): ``update`` frames with ``change`` events (side
``bid``/``ask``, ``remaining`` the new level size; ``reason`` ``initial`` marks the snapshot) and ``trade``
events (``makerSide`` ``bid`` means the taker sold; auction fills have no taker and are skipped). The first
frame of a connection (``socket_sequence`` 0) is the snapshot.
``socket_sequence`` counts every frame of the connection, heartbeats included, so the framer checks it and a
skip becomes a ``sequence_gap`` control envelope. Full-depth subscriptions are assumed (``top_of_book=true``
would not describe a whole book).

Live (`GeminiLive`): v2 only, one ``{"type":"subscribe","subscriptions":[{"name":..,"symbols":[..]},..]}`` frame;
Gemini sends heartbeats, so websocket pings suffice. ``/v1/symbols`` lists the venue symbols.

Symbols come from the ``/v1/symbols/details/<symbol>`` responses in the capture (``product_type`` ``swap`` is a
perpetual); without them ``...PERP`` names are perpetuals and the rest splits by known quote currency. A name
ending in no quote currency of ``operators.symbols.KNOWN_QUOTES`` keeps the venue symbol, upper-cased, as its
symbol, so a new Gemini market is still collected and normalized.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any
from urllib.parse import urlparse

import orjson

from operators.book import ASK, BID
from operators.records import Output
from operators.symbols import Instrument, perp, split_concatenated, spot
from operators.timeparse import ms_to_us, ns_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, RecentTrades, Venue
from operators.venues.live import LiveSpec, Subscription, compact_json
from schemas.raw import RawEnvelope

__all__ = ["VENUES", "GeminiFramer", "GeminiLive", "GeminiNormalizer"]

_V1_PATH = "/v1/marketdata/"
_SOCKET_SEQUENCE = re.compile(r'"socket_sequence":(\d+)')
_V2_SIDES = {"buy": BID, "sell": ASK}
_V1_SIDES = {"bid": BID, "ask": ASK}
_V1_TAKER = {"bid": "sell", "ask": "buy"}
_TAKER = frozenset(("buy", "sell"))
_AUCTION = frozenset(("auction_open", "auction_indicative", "auction_result"))
_MINUTE_US = 60_000_000
_CANDLE_US = {
    "1m": _MINUTE_US,
    "5m": 5 * _MINUTE_US,
    "15m": 15 * _MINUTE_US,
    "30m": 30 * _MINUTE_US,
    "1h": 60 * _MINUTE_US,
    "6h": 360 * _MINUTE_US,
    "1d": 1440 * _MINUTE_US,
}
_TIME_AND_ID = itemgetter("timestamp", "tid")
_TIME = itemgetter(0)


def _string_after(text: str, marker: str, start: int) -> str:
    start += len(marker)
    return text[start : text.find('"', start)]


def _channel(text: str) -> str:
    """The frame's top-level ``type``; l2 snapshots nest typed trades, so they are recognised by those."""
    if '"trades":[' in text:
        return "l2_updates"
    at = text.rfind('"type":"')
    return _string_after(text, '"type":"', at) if at >= 0 else "unknown"


class GeminiFramer(Framer):
    """Attributes v2 frames by their ``symbol`` and v1 frames by their connection's URL."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}
        #: v1 connection id -> the venue symbol in its URL.
        self.v1_symbols: dict[str, str] = {}
        #: v1 connection id -> last socket_sequence seen.
        self.socket_sequences: dict[str, int] = {}

    # -- symbols ---------------------------------------------------------------------------------------------
    def instrument(self, venue_symbol: str) -> Instrument:
        inst = self.table.get(venue_symbol)
        if inst is None:
            if not venue_symbol.isalnum():  # Gemini symbols are letters and digits; anything else is corrupt
                raise ValueError(f"{venue_symbol!r} is not a Gemini symbol")
            try:
                symbol = self.symbol_from_name(venue_symbol)
            except ValueError:  # no known quote currency: keep the venue's own name rather than fail
                symbol = venue_symbol.upper()
            inst = Instrument(self.exchange, symbol, venue_symbol)
            self.table[venue_symbol] = inst
        return inst

    @staticmethod
    def symbol_from_name(venue_symbol: str) -> str:
        upper = venue_symbol.upper()
        if upper.endswith("PERP"):
            return perp(*split_concatenated(upper[:-4]))
        return spot(*split_concatenated(upper))

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, details: dict[str, Any]) -> None:
        base, quote = details["base_currency"], details["quote_currency"]
        symbol = perp(base, quote) if details.get("product_type") == "swap" else spot(base, quote)
        self.table[details["symbol"]] = Instrument(self.exchange, symbol, details["symbol"])

    # -- events ----------------------------------------------------------------------------------------------
    def on_connect(self, conn: str, url: str, ts: int) -> list[RawEnvelope]:
        out = super().on_connect(conn, url, ts)
        path = urlparse(url).path.rstrip("/")
        if _V1_PATH in path:
            self.v1_symbols[conn] = path.rsplit("/", 1)[-1].upper()
        else:
            self.v1_symbols.pop(conn, None)
        self.socket_sequences.pop(conn, None)
        return out

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        v1_symbol = self.v1_symbols.get(conn)
        if v1_symbol is not None:
            return self._v1(conn, v1_symbol, text, ts)
        at = text.find('"symbol":"')
        if at < 0:
            return []  # heartbeats, acks, errors
        venue_symbol = _string_after(text, '"symbol":"', at)
        return [self.envelope(self.instrument(venue_symbol), _channel(text), conn, text, ts)]

    def _v1(self, conn: str, venue_symbol: str, text: str, ts: int) -> list[RawEnvelope]:
        out: list[RawEnvelope] = []
        match = _SOCKET_SEQUENCE.search(text)
        if match is not None:
            sequence = int(match.group(1))
            last = self.socket_sequences.get(conn)
            self.socket_sequences[conn] = sequence
            if last is not None and sequence != last + 1:
                details = {"expected": last + 1, "got": sequence}
                out.extend(self.control(conn, "sequence_gap", ts, details))
        if text.find('"type":"update"') < 0:
            return out  # heartbeats
        out.append(self.envelope(self.instrument(venue_symbol), "update", conn, text, ts))
        return out

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and urlparse(url).path.rstrip("/").endswith("/v1/symbols"):
            with contextlib.suppress(orjson.JSONDecodeError):
                for name in orjson.loads(text):  # names only: details, where seen, say more
                    with contextlib.suppress(ValueError, AttributeError):
                        self.instrument(name.upper())
            return []
        if url and "/v1/symbols/details/" in url:
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):  # error responses teach nothing
                self.learn(orjson.loads(text))
        return []


class GeminiNormalizer(InstrumentNormalizer):
    """One Gemini instrument: l2 book, trades (recent-trade snapshot included), candles, mark price."""

    book_channels = ("l2_updates", "update")

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        self.recent = RecentTrades()

    def books(self) -> list[Any]:
        return [self.book]

    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        kind = msg["type"]
        if kind == "l2_updates":
            return self.on_l2(env, msg)
        if kind == "trade":
            return [self.live_trade(env, msg)]
        if kind == "update":
            return self.on_v1(env, msg)
        if kind == "mark_price_updates":
            return self.on_mark_price(env, msg)
        if kind.startswith("candles_") and kind.endswith("_updates"):
            return self.on_candles(env, msg, kind[8:-8])
        if kind in _AUCTION:
            return []
        raise BadFrame(f"unknown Gemini message type {kind!r} on channel {env.channel}")

    # -- v2 book ---------------------------------------------------------------------------------------------
    def on_l2(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        changes = msg["changes"]
        receipt_ts = env.receipt_ts
        book = self.book
        if "trades" in msg:
            book.load_snapshot(
                ((float(price), float(size), None, None) for side, price, size in changes if side == "buy"),
                ((float(price), float(size), None, None) for side, price, size in changes if side == "sell"),
            )
            out = book.publish_snapshot(receipt_ts, receipt_ts, None)
            out.extend(self.recent_trades(env, msg["trades"]))
            return out
        if not book.valid:
            return []  # after a reconnect: nothing until the next subscription snapshot
        for side, price, size in changes:
            book.change(_V2_SIDES[side], float(price), float(size))
        return book.commit(receipt_ts, receipt_ts, None)

    # -- v2 trades -------------------------------------------------------------------------------------------
    def recent_trades(self, env: RawEnvelope, trades: list[dict[str, Any]]) -> list[Output]:
        out: list[Output] = []
        for trade in sorted(trades, key=_TIME_AND_ID):
            event_ts = ms_to_us(trade["timestamp"])
            trade_id = str(trade["tid"])
            if self.recent.is_new(event_ts, trade_id):
                out.append(self.trade(env, trade, event_ts, trade_id))
        return out

    def live_trade(self, env: RawEnvelope, msg: dict[str, Any]) -> Output:
        event_ts = ms_to_us(msg["timestamp"])
        trade_id = str(msg["tid"])
        self.recent.see(event_ts, trade_id)
        return self.trade(env, msg, event_ts, trade_id)

    def trade(self, env: RawEnvelope, trade: dict[str, Any], event_ts: int, trade_id: str) -> Output:
        side = trade["side"]
        if side not in _TAKER:
            raise BadFrame(f"Gemini trade {trade_id} with unknown side {side!r}")
        return self.out.trade(event_ts, env.receipt_ts, trade_id, float(trade["price"]), float(trade["quantity"]), side)

    # -- v2 candles and mark price ---------------------------------------------------------------------------
    def on_candles(self, env: RawEnvelope, msg: dict[str, Any], interval: str) -> list[Output]:
        step = _CANDLE_US.get(interval)
        if step is None:
            raise BadFrame(f"unknown Gemini candle interval {interval!r}")
        out: list[Output] = []
        for start, open_, high, low, close, volume in sorted(msg["changes"], key=_TIME):
            start_ts = ms_to_us(start)
            out.append(
                self.out.candle(
                    env.receipt_ts,
                    env.receipt_ts,
                    interval=interval,
                    start_ts=start_ts,
                    end_ts=start_ts + step,
                    open_=float(open_),
                    high=float(high),
                    low=float(low),
                    close=float(close),
                    volume=float(volume),
                )
            )
        return out

    def on_mark_price(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        return [
            self.out.ticker(
                ns_to_us(change["timestamp"]),
                env.receipt_ts,
                mark_price=float(change["mark_price"]),
                index_price=float(change["spot_index"]) if change.get("spot_index") else None,
            )
            for change in msg["changes"]
        ]

    # -- v1 --------------------------------------------------------------------------------------------------
    def on_v1(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        events = msg["events"]
        event_ts = ms_to_us(msg["timestampms"]) if "timestampms" in msg else env.receipt_ts
        sequence = msg.get("eventId")
        book = self.book
        if msg.get("socket_sequence") == 0 or (events and events[0].get("reason") == "initial"):
            book.load_snapshot(
                ((float(e["price"]), float(e["remaining"]), None, None) for e in events if e["side"] == "bid"),
                ((float(e["price"]), float(e["remaining"]), None, None) for e in events if e["side"] == "ask"),
            )
            return book.publish_snapshot(event_ts, env.receipt_ts, sequence)
        out: list[Output] = []
        changed = False
        for event in events:
            kind = event["type"]
            if kind == "change" and book.valid:
                book.change(_V1_SIDES[event["side"]], float(event["price"]), float(event["remaining"]))
                changed = True
            elif kind == "trade" and event.get("makerSide") in _V1_TAKER:
                side = _V1_TAKER[event["makerSide"]]
                price, size = float(event["price"]), float(event["amount"])
                out.append(self.out.trade(event_ts, env.receipt_ts, str(event["tid"]), price, size, side))
        if changed:
            out.extend(book.commit(event_ts, env.receipt_ts, sequence))
        return out


@dataclass(frozen=True)
class GeminiLive(LiveSpec):
    """Gemini v2 market-data subscriptions (see the module docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return channel != "mark_price" or sub.market == "perp"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        subscriptions = [
            {"name": channel, "symbols": [sub.venue_symbol for sub in subs if sub.channel == channel]}
            for channel in dict.fromkeys(sub.channel for sub in subs)
        ]
        return [compact_json({"type": "subscribe", "subscriptions": subscriptions})]


VENUES = [
    Venue(
        "gemini",
        ("GEMINI",),
        GeminiFramer,
        GeminiNormalizer,
        "Gemini market data v2 (and v1 per-symbol feeds)",
        ("trades", "lob", "ticker", "candles"),
        live=GeminiLive(
            ws_url="wss://api.gemini.com/v2/marketdata",
            rest_url="https://api.gemini.com",
            channels=("l2", r"candles_(1m|5m|15m|30m|1h|6h|1d)", "mark_price"),
            default_channels=("l2",),
            default_instruments=("BTC.USD", "ETH.USD"),
            instrument_lists=("/v1/symbols",),
            max_subscriptions=100,
        ),
    )
]
