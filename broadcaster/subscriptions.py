"""Who receives what: the subscription index and its per-instrument route cache.

A record is routed by ``(channel, key)`` with key ``"<exchange>:<symbol>"``. The targets of a route are the
union of the subscribers of four patterns (exact, all symbols of the venue, all venues of the symbol, all of
the channel), so a connection whose subscriptions overlap still gets each record once. Routes are cached and
the cache is cleared on every subscription change: fan-out costs one dict lookup per record.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from broadcaster.protocol import WILDCARD, Pattern

__all__ = ["SubscriptionIndex", "matches", "split_key"]

Subscriber = TypeVar("Subscriber", bound=Hashable)


def split_key(key: str) -> tuple[str, str]:
    """``"<exchange>:<symbol>"`` -> (exchange, symbol); a key without ':' is all exchange."""
    exchange, _, symbol = key.partition(":")
    return exchange, symbol


class SubscriptionIndex(Generic[Subscriber]):
    """Patterns -> subscribers, with cached routes (channel, key) -> subscribers."""

    def __init__(self) -> None:
        self._by_pattern: dict[Pattern, dict[Subscriber, None]] = {}
        self._routes: dict[tuple[str, str], tuple[Subscriber, ...]] = {}

    def __len__(self) -> int:
        """Number of (pattern, subscriber) subscriptions."""
        return sum(len(subscribers) for subscribers in self._by_pattern.values())

    def add(self, pattern: Pattern, subscriber: Subscriber) -> None:
        self._by_pattern.setdefault(pattern, {})[subscriber] = None
        self._routes.clear()

    def remove(self, pattern: Pattern, subscriber: Subscriber) -> None:
        subscribers = self._by_pattern.get(pattern)
        if subscribers is not None and subscriber in subscribers:
            del subscribers[subscriber]
            if not subscribers:
                del self._by_pattern[pattern]
            self._routes.clear()

    def targets(self, channel: str, key: str) -> tuple[Subscriber, ...]:
        """Every subscriber of a record of ``channel`` keyed ``key``, each once."""
        route = self._routes.get((channel, key))
        if route is None:
            route = self._routes[(channel, key)] = self._resolve(channel, key)
        return route

    def _resolve(self, channel: str, key: str) -> tuple[Subscriber, ...]:
        exchange, symbol = split_key(key)
        found: dict[Subscriber, None] = {}
        for pattern in (
            Pattern(channel, exchange, symbol),
            Pattern(channel, exchange, WILDCARD),
            Pattern(channel, WILDCARD, symbol),
            Pattern(channel, WILDCARD, WILDCARD),
        ):
            found.update(self._by_pattern.get(pattern, {}))
        return tuple(found)


def matches(pattern: Pattern, channel: str, key: str) -> bool:
    """Whether a record of ``channel`` keyed ``key`` falls under ``pattern``."""
    exchange, symbol = split_key(key)
    return (
        pattern.channel == channel and pattern.exchange in (WILDCARD, exchange) and pattern.symbol in (WILDCARD, symbol)
    )
