"""The one normalized symbol form shared by every venue.

* spot: ``BTC.USDT``
* perpetual swap: ``BTC.USDT-PERP``
* dated future: ``BTC.USD-20251226``
* option: ``BTC.USD-20251226-100000-C``

Venue currency codes are mapped to common ones (Kraken ``XBT`` -> ``BTC``); codes whose meaning depends on the
venue (Bitfinex ``UST`` is USDT, elsewhere UST was TerraUSD) are mapped in the venue's module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "KNOWN_QUOTES",
    "Instrument",
    "future",
    "market_of",
    "option",
    "perp",
    "split_concatenated",
    "spot",
    "yymmdd_to_date",
]

#: Common quote currencies, longest first so ``BTCFDUSD`` splits as BTC/FDUSD, not BTCFD/USD.
KNOWN_QUOTES = tuple(
    sorted(
        (
            "USDT",
            "USDC",
            "FDUSD",
            "BUSD",
            "TUSD",
            "USDP",
            "DAI",
            "USD",
            "EUR",
            "GBP",
            "TRY",
            "BRL",
            "AUD",
            "JPY",
            "RUB",
            "UAH",
            "ZAR",
            "IDRT",
            "BIDR",
            "NGN",
            "PLN",
            "RON",
            "ARS",
            "MXN",
            "COP",
            "CZK",
            "CHF",
            "CAD",
            "BTC",
            "ETH",
            "BNB",
            "XRP",
            "TRX",
            "DOGE",
            "DOT",
            "SOL",
            "PAX",
            "UST",
            "VAI",
            "USDS",
            "GUSD",
            "RLUSD",
            "USDE",
            "USD1",
            "MNT",
            "BRZ",
        ),
        key=len,
        reverse=True,
    )
)

_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}

_MONTHS = {
    m: i
    for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)
}


@dataclass(frozen=True, slots=True)
class Instrument:
    """An instrument as the collector and replay attribute frames to it."""

    exchange: str
    symbol: str
    venue_symbol: str

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    @property
    def market(self) -> str:
        """spot, perp, future or option, read off the normalized symbol."""
        return market_of(self.symbol)


def market_of(symbol: str) -> str:
    parts = symbol.split("-")
    if len(parts) == 1:
        return "spot"
    if parts[1] == "PERP":
        return "perp"
    return "option" if len(parts) >= 4 else "future"


def _code(currency: str) -> str:
    upper = currency.upper()
    return _ALIASES.get(upper, upper)


def spot(base: str, quote: str) -> str:
    return f"{_code(base)}.{_code(quote)}"


def perp(base: str, quote: str) -> str:
    return f"{spot(base, quote)}-PERP"


def future(base: str, quote: str, yyyymmdd: str) -> str:
    return f"{spot(base, quote)}-{yyyymmdd}"


def option(base: str, quote: str, yyyymmdd: str, strike: str, kind: str) -> str:
    return f"{spot(base, quote)}-{yyyymmdd}-{strike}-{kind[0].upper()}"


def split_concatenated(venue_symbol: str, quotes: tuple[str, ...] = KNOWN_QUOTES) -> tuple[str, str]:
    """Split ``BTCUSDT`` into (``BTC``, ``USDT``) by known quote suffix; raises ValueError when none fits."""
    upper = venue_symbol.upper()
    for quote in quotes:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    raise ValueError(f"cannot tell base from quote in {venue_symbol!r}")


_YYMMDD = re.compile(r"^\d{6}$")
_DMY = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")


def yymmdd_to_date(text: str) -> str:
    """``240927`` or ``27SEP24`` (Deribit, Bybit) -> ``20240927``."""
    if _YYMMDD.match(text):
        return f"20{text}"
    match = _DMY.match(text.upper())
    if match and match.group(2) in _MONTHS:
        day, month, year = match.groups()
        return f"20{year}{_MONTHS[month]:02d}{int(day):02d}"
    raise ValueError(f"not a contract date: {text!r}")
