"""Bitfinex framing and symbols: channel ids, connection flags and the SEQ_ALL check (see the package docstring)."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import orjson

from operators.symbols import Instrument, perp, split_concatenated, spot
from operators.venues.base import Framer
from schemas.raw import RawEnvelope

__all__ = [
    "CS_FLAG",
    "OB_CHECKSUM",
    "SEQ_ALL",
    "SEQ_FLAG",
    "TIMESTAMP",
    "TS_FLAG",
    "BitfinexFramer",
    "symbol_from_venue",
]

TIMESTAMP = 32768
SEQ_ALL = 65536
OB_CHECKSUM = 131072
TS_FLAG = "+ts"
SEQ_FLAG = "+seq"
CS_FLAG = "+cs"

_ALIASES = {"UST": "USDT"}


def _code(currency: str) -> str:
    return _ALIASES.get(currency, currency)


def symbol_from_venue(venue_symbol: str) -> str:
    """The normalized symbol of a Bitfinex trading symbol (see the package docstring)."""
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
