"""Bybit framing and symbols: frames attributed by topic, the market taken from the connection URL."""

from __future__ import annotations

import calendar
import contextlib
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

from operators.symbols import Instrument, future, option, perp, split_concatenated, spot, yymmdd_to_date
from operators.venues.base import Framer
from schemas.raw import RawEnvelope

__all__ = ["BybitFramer"]

_CATEGORIES = frozenset(("spot", "linear", "inverse", "option"))
_TOPIC = '"topic":"'
_WITH_ARGUMENT = frozenset(("orderbook", "kline"))
_INVERSE = re.compile(r"^([A-Z0-9]+)USD(?:([FGHJKMNQUVXZ])(\d{2}))?$")
_MONTH_CODES = "FGHJKMNQUVXZ"


def _ms_date(ms: str | int) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y%m%d")


def _last_friday(year: int, month: int) -> str:
    last = calendar.monthrange(year, month)[1]
    day = last - (calendar.weekday(year, month, last) - calendar.FRIDAY) % 7
    return f"{year:04d}{month:02d}{day:02d}"


def _category_of(url: str) -> str | None:
    name = urlparse(url).path.rstrip("/").rpartition("/")[2]
    return name if name in _CATEGORIES else None


def _guess_category(venue_symbol: str) -> str:
    if venue_symbol.count("-") >= 3:
        return "option"
    return "inverse" if _INVERSE.match(venue_symbol) else "linear"


def _symbol_from_info(category: str, info: dict[str, Any]) -> str:
    """The normalized symbol of one ``instruments-info`` entry."""
    base, quote = info["baseCoin"], info["quoteCoin"]
    if category == "spot":
        return spot(base, quote)
    if category == "option":
        parts = info["symbol"].split("-")
        return option(base, quote, _ms_date(info["deliveryTime"]), parts[2], parts[3])
    if info["contractType"].endswith("Futures"):
        return future(base, quote, _ms_date(info["deliveryTime"]))
    return perp(base, quote)


def _symbol_from_name(category: str, venue_symbol: str) -> str:
    """The normalized symbol parsed from the venue symbol alone; raises ValueError when it cannot be."""
    if category == "spot":
        return spot(*split_concatenated(venue_symbol))
    if category == "option":
        base, date, strike, kind, *rest = venue_symbol.split("-")
        if kind not in ("C", "P"):
            raise ValueError(f"not an option symbol: {venue_symbol!r}")
        return option(base, rest[0] if rest else "USD", yymmdd_to_date(date), strike, kind)
    if category == "inverse":
        match = _INVERSE.match(venue_symbol)
        if match is None:
            raise ValueError(f"not an inverse symbol: {venue_symbol!r}")
        base, month, year = match.groups()
        if month is None:
            return perp(base, "USD")
        return future(base, "USD", _last_friday(2000 + int(year), _MONTH_CODES.index(month) + 1))
    if "-" in venue_symbol:
        left, _, date = venue_symbol.rpartition("-")
        try:
            base, quote = split_concatenated(left)
        except ValueError:
            base, quote = left, "USDC"  # USDC futures: BTC-27DEC24
        return future(base, quote, yymmdd_to_date(date))
    if venue_symbol.endswith("PERP"):
        return perp(venue_symbol[:-4], "USDC")
    return perp(*split_concatenated(venue_symbol))


class BybitFramer(Framer):
    """Attributes Bybit frames to instruments by topic, with the market taken from the connection URL."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[tuple[str, str], Instrument] = {}
        self._categories: dict[str, str | None] = {}

    def instrument(self, category: str | None, venue_symbol: str) -> Instrument:
        market = category or _guess_category(venue_symbol)
        inst = self.table.get((market, venue_symbol))
        if inst is None:
            try:
                symbol = _symbol_from_name(market, venue_symbol)
            except ValueError:
                symbol = venue_symbol if market == "spot" else f"{venue_symbol}-PERP"
            inst = self.table[(market, venue_symbol)] = Instrument(self.exchange, symbol, venue_symbol)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, category: str, response: dict[str, Any]) -> None:
        result = response.get("result") or {}
        category = result.get("category") or category
        for info in result.get("list") or []:
            try:
                symbol = _symbol_from_info(category, info)
            except (KeyError, ValueError, IndexError):
                continue
            self.table[(category, info["symbol"])] = Instrument(self.exchange, symbol, info["symbol"])

    # -- events ----------------------------------------------------------------------------------------------
    def on_connect(self, conn: str, url: str, ts: int) -> list[RawEnvelope]:
        self._categories[conn] = _category_of(url)
        return super().on_connect(conn, url, ts)

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        topic = self.topic(text)
        if not topic:
            return []  # subscription acks, pongs, error replies
        name, _, rest = topic.partition(".")
        if name in _WITH_ARGUMENT:
            argument, _, venue_symbol = rest.partition(".")
            channel = f"{name}.{argument}"
        else:
            channel, venue_symbol = name, rest
        if not venue_symbol:
            return []
        inst = self.instrument(self._categories.get(conn), venue_symbol)
        return [self.envelope(inst, channel, conn, text, ts)]

    @staticmethod
    def topic(text: str) -> str | None:
        """The frame's topic: a cheap scan of Bybit's compact JSON, a full parse for anything else."""
        start = text.find(_TOPIC)
        if start >= 0:
            start += len(_TOPIC)
            return text[start : text.find('"', start)]
        if '"topic"' not in text:
            return None
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        topic = msg.get("topic") if isinstance(msg, dict) else None
        return topic if isinstance(topic, str) else None

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and urlparse(url).path.endswith("instruments-info"):
            category = (parse_qs(urlparse(url).query).get("category") or [""])[0]
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                self.learn(category, orjson.loads(text))
        return []
