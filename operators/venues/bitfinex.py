"""Bitfinex websocket v2 (``wss://api.bitfinex.com/ws/2``, ``wss://api-pub.bitfinex.com/ws/2``).

Data frames are arrays ``[chanId, payload, ...]``. The framer maps ``chanId`` to a subscription from each
connection's ``subscribed`` events and names envelope channels after it (``trades``, ``ticker``,
``book-<prec>-<freq>-<len>``, ``candles-<interval>``, ``status-deriv``), adding ``+ts``, ``+seq`` and ``+cs``
when the connection's ``conf`` flags (sent, then confirmed by the server) make the server append a TIMESTAMP
(32768) and a SEQ_ALL sequence (65536), in that order, or send OB_CHECKSUM (131072) frames.

Channels (recorded: trades, book P0, ticker, with SEQ_ALL; the others from Bitfinex's documentation):
``trades`` (the on-subscribe history, newest first, is emitted oldest first and once with `RecentTrades`;
``te`` always, its ``tu`` repeat only when not seen); ``ticker``; ``book`` P0..P4 ``[PRICE, COUNT, AMOUNT]``
(COUNT 0 removes the level); ``candles`` (key ``trade:<interval>:<symbol>``, rows ``[MTS, OPEN, CLOSE, HIGH,
LOW, VOLUME]``; in a snapshot all but the newest candle are ``closed``); ``status`` ``deriv:<symbol>`` ->
funding (``CURRENT_FUNDING`` rate, ``NEXT_FUNDING_ACCRUED`` predicted, 8 h interval) and open interest.
The framer consumes heartbeats and events. Not supported: R0 raw books (dead-lettered: P0 carries the same
price levels), the ``liq:global`` feed, funding currencies (``fUSD``), bulk book updates (flag 536870912).
One book per instrument: frames of a second book subscription are dead-lettered.

Sequence and checksum rules:

* SEQ_ALL numbers every data frame of a connection (heartbeats and checksum frames too, even for a ``chanId``
  not announced yet; events carry none). The framer expects last + 1; a jump or a repeat yields a
  ``sequence_gap`` control envelope for every instrument of the connection, before the frame's own envelope.
  A book update whose sequence is not above the book's last one is a ``gap`` too (reordering after keying).
* With OB_CHECKSUM, book updates are committed when the following ``[chanId, "cs", CHECKSUM]`` frame matches
  the signed CRC32 of the top 25 bids and asks interleaved as ``price:amount`` (ask amounts negative), numbers
  printed as JavaScript's ``String(number)`` (the docs' reference code); as clients disagree on how numbers
  below 1e-6 print, a match with those in fixed notation is accepted too. A mismatch -> "checksum" resync.
* After any resync nothing is published until the next venue snapshot (live, the collector resubscribes).

Live (`BitfinexLive`): the ``conf`` frame asking for SEQ_ALL, then one subscribe frame per channel, at most 25
channels per connection (Bitfinex's limit); server heartbeats keep the connection alive; info events 20051
(server restart) and 20061 (maintenance over) ask clients to reconnect. The pair lists
(``/v2/conf/pub:list:pair:exchange`` and ``:future``) teach the framer the listed pairs. Checksum frames are not
requested: SEQ_ALL already exposes any lost frame of the connection.

Semantics: AMOUNT > 0 is a taker buy or a bid; sizes are absolute. Books, tickers and candles carry no event
time: the TIMESTAMP flag's value, else receipt time. Symbols: ``tBTCUSD`` -> ``BTC.USD`` (3+3 letters),
``tTESTBTC:TESTUSD`` -> ``TESTBTC.TESTUSD``, ``tBTCF0:USTF0`` -> ``BTC.USDT-PERP``; ``UST`` is USDT.
"""

from __future__ import annotations

import calendar
import contextlib
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from operators.book import ASK, BID, LocalBook
from operators.records import Output
from operators.symbols import Instrument, perp, split_concatenated, spot
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, RecentTrades, Venue
from operators.venues.live import LiveSpec, Subscription, compact_json
from schemas.raw import RawEnvelope

__all__ = [
    "VENUES",
    "BitfinexFramer",
    "BitfinexLive",
    "BitfinexNormalizer",
    "book_checksum",
    "js_number",
    "symbol_from_venue",
]

TIMESTAMP = 32768
SEQ_ALL = 65536
OB_CHECKSUM = 131072
TS_FLAG = "+ts"
SEQ_FLAG = "+seq"
CS_FLAG = "+cs"

_ALIASES = {"UST": "USDT"}
_CANDLE_UNIT_SECONDS = {"m": 60, "h": 3600, "D": 86400, "W": 604800}  # 1M (a calendar month) apart
_FUNDING_HOURS = 8.0
#: (prices fixed, amounts fixed): JavaScript printing first, then the fixed-notation readings of tiny numbers.
_CHECKSUM_STYLES = ((False, False), (True, False), (True, True))


# -- symbols and checksums -----------------------------------------------------------------------------------
def _code(currency: str) -> str:
    return _ALIASES.get(currency, currency)


def symbol_from_venue(venue_symbol: str) -> str:
    """The normalized symbol of a Bitfinex trading symbol (see the module docstring)."""
    pair = venue_symbol[1:] if venue_symbol.startswith("t") else venue_symbol
    if ":" in pair:
        base, quote = pair.split(":", 1)
        if base.endswith("F0") and quote.endswith("F0"):
            return perp(_code(base[:-2]), _code(quote[:-2]))
    elif len(pair) == 6:
        base, quote = pair[:3], pair[3:]
    else:
        base, quote = split_concatenated(pair)
    return spot(_code(base), _code(quote))


def js_number(value: float, fixed: bool = False) -> str:
    """``String(value)`` as JavaScript prints it; ``fixed`` prints numbers below 1e-6 without an exponent."""
    if value == 0:
        return "0"
    text = repr(value)  # the shortest round-trip digits, as JavaScript chooses them
    if (abs(value) < 1e-6 and not fixed) or abs(value) >= 1e21:
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}e{int(exponent):+d}"
    return format(Decimal(text), "f") if "e" in text else text.removesuffix(".0")


def book_checksum(book: LocalBook, fixed_prices: bool = False, fixed_amounts: bool = False) -> int:
    """Bitfinex's signed CRC32 over the top 25 levels: ``bid:amount:ask:-amount:...`` interleaved."""
    bids, asks = book.top(BID, 25), book.top(ASK, 25)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += (js_number(bids[i][0], fixed_prices), js_number(bids[i][1], fixed_amounts))
        if i < len(asks):
            parts += (js_number(asks[i][0], fixed_prices), js_number(-asks[i][1], fixed_amounts))
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc & 0x80000000 else crc


def _checksum_matches(book: LocalBook, expected: int) -> bool:
    return any(book_checksum(book, *style) == expected for style in _CHECKSUM_STYLES)


# -- framer --------------------------------------------------------------------------------------------------
class _Connection:
    """One websocket's flags, last sequence number and channel ids."""

    __slots__ = ("book_suffix", "channels", "flags", "sequence", "suffix")

    def __init__(self) -> None:
        self.sequence: int | None = None
        #: chanId -> (instrument, channel name, is a book)
        self.channels: dict[int, tuple[Instrument, str, bool]] = {}
        self.set_flags(0)

    def set_flags(self, flags: int) -> None:
        self.flags = flags
        self.suffix = (TS_FLAG if flags & TIMESTAMP else "") + (SEQ_FLAG if flags & SEQ_ALL else "")
        self.book_suffix = self.suffix + (CS_FLAG if flags & OB_CHECKSUM else "")


class BitfinexFramer(Framer):
    """Attributes frames by ``chanId`` and checks the connection-wide SEQ_ALL sequence."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}
        self.conns: defaultdict[str, _Connection] = defaultdict(_Connection)

    def instrument(self, venue_symbol: str) -> Instrument:
        inst = self.table.get(venue_symbol)
        if inst is None:
            inst = Instrument(self.exchange, symbol_from_venue(venue_symbol), venue_symbol)
            self.table[venue_symbol] = inst
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    # -- events ----------------------------------------------------------------------------------------------
    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        """Pair lists (``[["BTCUSD", "AAVE:USD", ..]]``) name the listed trading pairs."""
        lists = _loads(text) if url and "/conf/pub:list:pair:" in url else None
        if isinstance(lists, list) and lists and isinstance(lists[0], list):
            for pair in lists[0]:
                with contextlib.suppress(ValueError, TypeError):
                    self.instrument(f"t{pair}")
        return []

    def on_connect(self, conn: str, url: str, ts: int) -> list[RawEnvelope]:
        self.conns[conn] = _Connection()  # channel ids, flags and sequence numbers are per connection
        return super().on_connect(conn, url, ts)

    def on_send(self, conn: str, text: str, ts: int) -> None:
        msg = _loads(text)
        if isinstance(msg, dict) and msg.get("event") == "conf" and isinstance(msg.get("flags"), int):
            self.conns[conn].set_flags(msg["flags"])

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        state = self.conns[conn]
        if not text.startswith("["):
            self.on_event(state, _loads(text))
            return []
        comma = text.find(",")
        try:
            chan_id = int(text[1:comma])
        except ValueError:
            return []
        out = self.check_sequence(conn, state, text, ts) if state.flags & SEQ_ALL else []
        channel = None if text.find('"hb"', comma + 1, comma + 6) > 0 else state.channels.get(chan_id)
        if channel is None:
            return out  # heartbeats, funding symbols and unannounced channel ids
        inst, name, is_book = channel
        out.append(self.envelope(inst, name + (state.book_suffix if is_book else state.suffix), conn, text, ts))
        return out

    def check_sequence(self, conn: str, state: _Connection, text: str, ts: int) -> list[RawEnvelope]:
        """Control envelopes when the frame's sequence (its last element) does not follow the last one."""
        try:
            sequence = int(text[text.rindex(",") + 1 : -1])
        except ValueError:
            return []
        last = state.sequence
        state.sequence = sequence
        if last is None or sequence == last + 1:
            return []
        return self.control(conn, "sequence_gap", ts, {"expected": last + 1, "received": sequence})

    def on_event(self, state: _Connection, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        event = msg.get("event")
        if event == "subscribed":
            self.subscribed(state, msg)
        elif event == "unsubscribed" and isinstance(msg.get("chanId"), int):
            state.channels.pop(msg["chanId"], None)
        elif event == "conf":  # the server's word on the flags: a refused conf leaves the defaults
            flags = msg.get("flags")
            state.set_flags(flags if msg.get("status") == "OK" and isinstance(flags, int) else 0)

    def subscribed(self, state: _Connection, msg: dict[str, Any]) -> None:
        try:
            chan_id, channel = int(msg["chanId"]), msg["channel"]
            if channel == "candles":
                _, interval, symbol = msg["key"].split(":", 2)
                name = f"candles-{interval}"
            elif channel == "status":
                kind, _, symbol = msg["key"].partition(":")  # deriv:<symbol>; liq:global is not followed
                name = f"status-{kind}"
            else:
                symbol = msg["symbol"]
                name = channel
                if channel == "book":
                    name = f"book-{msg.get('prec', 'P0')}-{msg.get('freq', 'F0')}-{msg.get('len', '25')}"
            if symbol.startswith("t"):
                state.channels[chan_id] = (self.instrument(symbol), name, channel == "book")
        except (KeyError, ValueError, TypeError, AttributeError):
            return  # not a market-data subscription this module understands: its frames are dropped


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


# -- normalizer ----------------------------------------------------------------------------------------------
class BitfinexNormalizer(InstrumentNormalizer):
    """One Bitfinex trading pair: trades, book, ticker, candles, funding and open interest."""

    book_channels = ("book",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        self.book_channel: str | None = None  # the subscription (without flags) the book follows
        self.book_sequence: int | None = None
        self.unverified = False  # changes applied but not yet committed (waiting for a checksum)
        self.recent = RecentTrades()

    def books(self) -> list[Any]:
        return [self.book]

    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        channel = env.channel
        if channel.startswith("book"):
            return self.on_book(env, msg)
        if channel.startswith("trades"):
            return self.on_trades(env, msg)
        if channel.startswith("ticker"):
            return [self.ticker(env, msg)]
        if channel.startswith("candles"):
            return self.on_candles(env, msg)
        if channel.startswith("status-deriv"):
            return self.on_status(env, msg[1])
        raise BadFrame(f"unknown Bitfinex channel {channel}")

    def event_time(self, env: RawEnvelope, msg: list[Any]) -> tuple[int, int | None]:
        """(event time, connection sequence) of a frame: the TIMESTAMP flag's value, else receipt time."""
        sequence = msg[-1] if SEQ_FLAG in env.channel else None
        if TS_FLAG not in env.channel:
            return env.receipt_ts, sequence
        return ms_to_us(msg[-2] if sequence is not None else msg[-1]), sequence

    # -- trades, ticker ---------------------------------------------------------------------------------------
    def on_trades(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        kind = msg[1]
        if isinstance(kind, list):  # on-subscribe history, newest first
            out = []
            for row in sorted(kind, key=lambda row: (row[1], row[0])):
                event_ts, trade_id = ms_to_us(row[1]), str(row[0])
                if self.recent.is_new(event_ts, trade_id):
                    out.append(self.trade(env, row, event_ts, trade_id))
            return out
        if kind not in ("te", "tu"):
            raise BadFrame(f"unknown Bitfinex trades message {kind!r}")
        row = msg[2]
        event_ts, trade_id = ms_to_us(row[1]), str(row[0])
        if kind == "te":
            self.recent.see(event_ts, trade_id)
        elif not self.recent.is_new(event_ts, trade_id):
            return []  # the "tu" repeat of a trade already emitted
        return [self.trade(env, row, event_ts, trade_id)]

    def trade(self, env: RawEnvelope, row: list[Any], event_ts: int, trade_id: str) -> Output:
        amount = float(row[2])
        side = "buy" if amount > 0 else "sell"
        return self.out.trade(event_ts, env.receipt_ts, trade_id, float(row[3]), abs(amount), side, int(row[0]))

    def ticker(self, env: RawEnvelope, msg: list[Any]) -> Output:
        data = msg[1]
        if not isinstance(data, list) or len(data) < 10:
            raise BadFrame(f"unexpected Bitfinex ticker payload {data!r}")
        event_ts, sequence = self.event_time(env, msg)
        return self.out.ticker(
            event_ts,
            env.receipt_ts,
            bid_price=float(data[0]),
            bid_size=float(data[1]),
            ask_price=float(data[2]),
            ask_size=float(data[3]),
            last_price=float(data[6]),
            volume_24h=float(data[7]),
            sequence=sequence,
        )

    # -- candles, derivatives status ------------------------------------------------------------------------
    def on_candles(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        data = msg[1]
        interval = env.channel.partition("+")[0].removeprefix("candles-")
        event_ts, _ = self.event_time(env, msg)
        if not data:
            return []
        if not isinstance(data[0], list):
            return [self.candle(env, event_ts, data, interval, None)]
        rows = sorted(data, key=lambda row: row[0])  # snapshot: newest first
        newest = len(rows) - 1
        return [self.candle(env, event_ts, row, interval, True if i < newest else None) for i, row in enumerate(rows)]

    def candle(self, env: RawEnvelope, event_ts: int, row: list[Any], interval: str, closed: bool | None) -> Output:
        start = ms_to_us(row[0])
        return self.out.candle(
            event_ts,
            env.receipt_ts,
            interval=interval if interval[-1] in "mhM" else interval.lower(),
            start_ts=start,
            end_ts=_candle_end(start, interval),
            open_=float(row[1]),
            close=float(row[2]),
            high=float(row[3]),
            low=float(row[4]),
            volume=float(row[5]),
            closed=closed,
        )

    def on_status(self, env: RawEnvelope, data: list[Any]) -> list[Output]:
        if not isinstance(data, list) or len(data) < 18:
            raise BadFrame(f"unexpected Bitfinex derivatives status {data!r}")
        event_ts = ms_to_us(data[0])
        out = []
        if data[11] is not None:
            out.append(
                self.out.funding(
                    event_ts,
                    env.receipt_ts,
                    rate=float(data[11]),
                    predicted_rate=_optional(data[8]),
                    next_funding_ts=ms_to_us(data[7]) if data[7] is not None else None,
                    interval_hours=_FUNDING_HOURS,
                    mark_price=_optional(data[14]),
                )
            )
        if data[17] is not None:
            out.append(self.out.open_interest(event_ts, env.receipt_ts, open_interest=float(data[17])))
        return out

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        data = msg[1]
        base = env.channel.partition("+")[0]
        if base.startswith("book-R0"):
            raise BadFrame(
                "Bitfinex R0 raw books are not supported: subscribe P0 for the price-level book", book_intact=True
            )
        if isinstance(data, list) and (not data or isinstance(data[0], list)):
            return self.on_snapshot(env, msg, base)
        if base != self.book_channel:
            raise BadFrame(f"Bitfinex {base} frame but the book follows {self.book_channel}", book_intact=True)
        if not self.book.valid:
            return []
        if data == "cs":
            return self.on_checksum(env, msg)
        event_ts, sequence = self.event_time(env, msg)
        if sequence is not None:
            if self.book_sequence is not None and sequence <= self.book_sequence:
                return self.book.resync(
                    event_ts, env.receipt_ts, f"gap: sequence {sequence} after {self.book_sequence}"
                )
            self.book_sequence = sequence
        amount = float(data[2])
        if amount == 0:
            raise BadFrame(f"Bitfinex book level without a side: {data!r}")
        self.book.change(BID if amount > 0 else ASK, float(data[0]), abs(amount) if data[1] else 0.0)
        if CS_FLAG in env.channel:
            self.unverified = True  # committed when the checksum frame confirms it
            return []
        return self.book.commit(event_ts, env.receipt_ts, sequence)

    def on_snapshot(self, env: RawEnvelope, msg: list[Any], base: str) -> list[Output]:
        if self.book.valid and base != self.book_channel:
            raise BadFrame(
                f"second Bitfinex book subscription {base}: the book follows {self.book_channel}", book_intact=True
            )
        event_ts, sequence = self.event_time(env, msg)
        rows = msg[1]
        self.book.load_snapshot(
            [(float(row[0]), float(row[2]), None, None) for row in rows if row[2] > 0],
            [(float(row[0]), -float(row[2]), None, None) for row in rows if row[2] < 0],
        )
        self.book_channel, self.book_sequence, self.unverified = base, sequence, False
        return self.book.publish_snapshot(event_ts, env.receipt_ts, sequence)

    def on_checksum(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        expected = int(msg[2])
        event_ts, sequence = self.event_time(env, msg)
        if self.unverified:
            self.unverified = False
            return self.book.commit(
                event_ts,
                env.receipt_ts,
                self.book_sequence,
                checksum=expected,
                verify=lambda book: _checksum_matches(book, expected),
            )
        if _checksum_matches(self.book.book, expected):
            return []
        return self.book.resync(event_ts, env.receipt_ts, f"checksum mismatch at sequence {sequence}")


def _optional(value: Any) -> float | None:
    return float(value) if value is not None else None


def _candle_end(start_us: int, interval: str) -> int:
    if interval == "1M":
        year, month = time.gmtime(start_us // 1_000_000)[:2]
        return start_us + calendar.monthrange(year, month)[1] * 86_400_000_000
    unit = _CANDLE_UNIT_SECONDS.get(interval[-1])
    if unit is None or not interval[:-1].isdigit():
        raise BadFrame(f"unknown Bitfinex candle interval {interval!r}")
    return start_us + int(interval[:-1]) * unit * 1_000_000


#: Info event codes asking clients to reconnect: server restart, end of maintenance.
_RECONNECT_CODES = ('"code":20051', '"code":20061')


@dataclass(frozen=True)
class BitfinexLive(LiveSpec):
    """Bitfinex v2 subscriptions (see the module docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return channel != "status-deriv" or sub.market == "perp"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        frames = [compact_json({"event": "conf", "flags": SEQ_ALL})]
        for sub in subs:
            name, _, argument = sub.channel.partition("-")
            request: dict[str, Any] = {"event": "subscribe", "channel": name}
            if name == "book":
                prec, freq, length = argument.split("-")
                request.update(symbol=sub.venue_symbol, prec=prec, freq=freq, len=length)
            elif name == "candles":
                request["key"] = f"trade:{argument}:{sub.venue_symbol}"
            elif name == "status":
                request["key"] = f"deriv:{sub.venue_symbol}"
            else:
                request["symbol"] = sub.venue_symbol
            frames.append(compact_json(request))
        return frames

    def asks_reconnect(self, text: str) -> bool:
        return text.startswith('{"event":"info"') and any(code in text for code in _RECONNECT_CODES)


VENUES = [
    Venue(
        "bitfinex",
        ("BITFINEX",),
        BitfinexFramer,
        BitfinexNormalizer,
        "Bitfinex websocket v2",
        live=BitfinexLive(
            ws_url="wss://api-pub.bitfinex.com/ws/2",
            rest_url="https://api-pub.bitfinex.com",
            channels=(
                "trades",
                "ticker",
                r"book-P[0-4]-F[01]-(1|25|100|250)",
                r"candles-(1m|5m|15m|30m|1h|3h|6h|12h|1D|1W|14D|1M)",
                "status-deriv",
            ),
            default_channels=("book-P0-F0-100", "trades", "ticker"),
            default_instruments=("BTC.USD", "ETH.USD"),
            instrument_lists=("/v2/conf/pub:list:pair:exchange", "/v2/conf/pub:list:pair:future"),
            max_subscriptions=25,
        ),
    )
]
