"""Access rules checked when a websocket opens (API key, browser origin) and per request (rate limit)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

__all__ = ["RequestRateLimiter", "api_key_valid", "offered_api_key", "origin_allowed"]


def offered_api_key(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The key a client presents: ``?api_key=``, ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    if query.get("api_key"):
        return query["api_key"]
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def api_key_valid(offered: str | None, keys: frozenset[str]) -> bool:
    """True when no keys are configured, or ``offered`` equals one of them (constant-time comparison)."""
    if not keys:
        return True
    if offered is None:
        return False
    candidate = offered.encode()
    # Compare against every key so the time taken does not tell which one nearly matched.
    return sum(hmac.compare_digest(candidate, key.encode()) for key in keys) > 0


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """Browsers send ``Origin``: it must be the page's own host or a configured origin (``*`` = any).

    A connection without ``Origin`` is not from a browser page, and origin checks cannot protect against
    other clients anyway (they may send any header): API keys do that.
    """
    if origin is None or "*" in allowed:
        return True
    origin = origin.rstrip("/")
    if origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class RequestRateLimiter:
    """Token bucket: ``rate`` requests per second on average, bursts of up to ``rate`` (at least 1)."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
