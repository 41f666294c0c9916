"""Venue time formats to UTC microseconds (integers), fast enough for the per-frame path."""

from __future__ import annotations

import calendar
from functools import lru_cache

__all__ = ["iso_to_us", "ms_to_us", "ns_to_us", "seconds_to_us"]


def ms_to_us(ms: int | str | float) -> int:
    return int(ms) * 1000


def ns_to_us(ns: int | str) -> int:
    return int(ns) // 1000


def seconds_to_us(seconds: float | str) -> int:
    """Float or decimal-string seconds; decimal strings are converted exactly (Kraken ``1618678142.557535``)."""
    if isinstance(seconds, str):
        whole, _, frac = seconds.partition(".")
        return int(whole) * 1_000_000 + int((frac + "000000")[:6])
    return round(seconds * 1_000_000)


@lru_cache(maxsize=4096)
def _whole_seconds(prefix: str) -> int:
    date, _, clock = prefix.partition("T") if "T" in prefix else prefix.partition(" ")
    year, month, day = date.split("-")
    hour, minute, second = clock.split(":")
    return calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0))


def iso_to_us(text: str) -> int:
    """``2026-08-09T21:05:48.228568804Z`` (any fraction length, Z or +00:00) -> microseconds."""
    stamp = text.rstrip("Z")
    if stamp.endswith("+00:00"):
        stamp = stamp[:-6]
    prefix, _, frac = stamp.partition(".")
    return _whole_seconds(prefix) * 1_000_000 + (int((frac + "000000")[:6]) if frac else 0)
