"""Deribit framing and symbols: notifications attributed by channel name (see the package docstring)."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from operators.symbols import Instrument, future, option, perp, spot, yymmdd_to_date
from operators.venues.base import Framer
from schemas.raw import RawEnvelope

__all__ = ["DeribitFramer", "symbol_from_info", "symbol_from_name"]

_FRAME_HEAD = re.compile(r'^\{"jsonrpc":"2\.0","method":"subscription","params":\{"channel":"([^"]+)"')
_DERIVATIVE = re.compile(r"^([A-Z0-9]+)(?:_([A-Z0-9]+))?-(PERPETUAL|\d{1,2}[A-Z]{3}\d{2})(?:-(\d+(?:d\d+)?)-([CP]))?$")
_SPOT = re.compile(r"^([A-Z0-9]+)_([A-Z0-9]+)$")
#: Position of the instrument name in the dot-separated channel, per channel kind.
_INSTRUMENT_AT = {"book": 1, "ticker": 1, "trades": 1, "quote": 1, "perpetual": 1, "incremental_ticker": 1, "chart": 2}


def symbol_from_name(name: str) -> str:
    match = _DERIVATIVE.match(name)
    if match is not None:
        base, quote, expiry, strike, kind = match.groups()
        quote = quote or "USD"
        if expiry == "PERPETUAL":
            return perp(base, quote)
        date = yymmdd_to_date(expiry)
        if strike is None:
            return future(base, quote, date)
        return option(base, quote, date, strike.replace("d", "."), kind)
    match = _SPOT.match(name)
    if match is not None:
        return spot(*match.groups())
    raise ValueError(f"not a Deribit instrument name: {name!r}")


def _strike_text(strike: float) -> str:
    strike = float(strike)
    return str(int(strike)) if strike.is_integer() else repr(strike)


def symbol_from_info(info: dict[str, Any]) -> str:
    """The symbol of one ``public/get_instruments`` entry; ValueError for combos."""
    kind = info["kind"]
    base = info["base_currency"]
    quote = info.get("counter_currency") or info["quote_currency"]
    if quote == base:
        quote = "USD"  # inverse instruments quoted in their base currency are priced against USD
    if kind == "spot":
        return spot(base, quote)
    if kind == "future" and info.get("settlement_period") == "perpetual":
        return perp(base, quote)
    date = datetime.fromtimestamp(info["expiration_timestamp"] / 1000, tz=UTC).strftime("%Y%m%d")
    if kind == "future":
        return future(base, quote, date)
    if kind == "option":
        return option(base, quote, date, _strike_text(info["strike"]), info["option_type"])
    raise ValueError(f"no symbol form for Deribit {kind} {info.get('instrument_name')!r}")


class DeribitFramer(Framer):
    """Attributes subscription notifications to instruments by channel name."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    def instrument(self, name: str) -> Instrument:
        inst = self.table.get(name)
        if inst is None:
            try:
                symbol = symbol_from_name(name)
            except ValueError:
                symbol = name  # combos: keep the venue symbol rather than guess
            inst = self.table[name] = Instrument(self.exchange, symbol, name)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, response: dict[str, Any]) -> None:
        for info in response.get("result") or []:
            try:
                symbol = symbol_from_info(info)
            except (KeyError, ValueError, TypeError):
                continue
            name = info["instrument_name"]
            self.table[name] = Instrument(self.exchange, symbol, name)

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _FRAME_HEAD.match(text)
        channel = match.group(1) if match is not None else self._channel(text)
        if channel is None:
            return []
        return [self.envelope(self.instrument(name), channel, conn, text, ts) for name in self._names(channel, text)]

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and "get_instruments" in url:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                self.learn(orjson.loads(text))
        return []

    @staticmethod
    def _channel(text: str) -> str | None:
        """The channel of a notification whose keys come in another order; None for anything else."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(msg, dict) or msg.get("method") != "subscription":
            return None  # RPC responses, errors, heartbeats and test_request
        params = msg.get("params")
        channel = params.get("channel") if isinstance(params, dict) else None
        return channel if isinstance(channel, str) else None

    @staticmethod
    def _names(channel: str, text: str) -> list[str]:
        parts = channel.split(".")
        if parts[0] == "trades" and len(parts) == 4:
            return DeribitFramer._trade_instruments(text)
        at = _INSTRUMENT_AT.get(parts[0])
        if at is None or len(parts) <= at or (parts[0] == "chart" and parts[1] != "trades"):
            return []
        return [parts[at]]

    @staticmethod
    def _trade_instruments(text: str) -> list[str]:
        """The instruments of a ``trades.<kind>.<currency>.<interval>`` notification, in order of appearance."""
        try:
            trades = orjson.loads(text)["params"]["data"]
            return list(dict.fromkeys(trade["instrument_name"] for trade in trades))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return []
