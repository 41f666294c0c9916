"""Registry of venue protocols. Adding a venue means adding one module (or package) here and listing it below.

Each name is imported as ``operators.venues.<name>`` and must provide ``VENUES``; see ``README.md`` for the layout.
"""

from __future__ import annotations

from importlib import import_module

from operators.venues.base import Venue

__all__ = ["VENUES", "Venue", "venue", "venue_for_capture"]

_MODULES = (
    "binance",
    "binance_futures",
    "coinbase",
    "bybit",
    "okx",
    "kraken",
    "kraken_futures",
    "bitfinex",
    "deribit",
    "gemini",
)


def _load() -> dict[str, Venue]:
    venues: dict[str, Venue] = {}
    for name in _MODULES:
        try:
            module = import_module(f"operators.venues.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"operators.venues.{name}":
                continue
            raise
        for spec in module.VENUES:
            venues[spec.name] = spec
    return venues


#: Venue id -> protocol.
VENUES: dict[str, Venue] = _load()


def venue(name: str) -> Venue:
    """The venue with this exchange id; KeyError names the known ones."""
    try:
        return VENUES[name]
    except KeyError:
        raise KeyError(f"unknown venue {name!r}; known: {', '.join(sorted(VENUES))}") from None


def venue_for_capture(name: str) -> Venue:
    """A venue by exchange id (``binance_us``) or cryptofeed header name (``BINANCE_US``)."""
    if name in VENUES:
        return VENUES[name]
    for spec in VENUES.values():
        if name in spec.capture_names or name.lower() == spec.name:
            return spec
    raise KeyError(f"unknown venue {name!r}; known: {', '.join(sorted(VENUES))}")
