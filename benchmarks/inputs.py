"""Benchmark inputs derived from the real Binance spot recording: the same frames under other instruments.

The hftbacktest capture holds one instrument (BTCUSDT). Figures that need many instruments (scaling over
partitions and processes, memory across 50 books) use its frames rewritten to other real Binance spot symbols:
stream names (``btcusdt@...``) and ``"s"`` fields renamed, everything else (prices, sizes, sequence numbers,
receipt times, the REST depth snapshot) as recorded. Each instrument replays the recording from its start, so
every book is bridged to its snapshot and its diffs chain, exactly as for the original.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import msgspec

from benchmarks.common import HFTBACKTEST
from connectors.capture import capture_envelopes
from schemas.raw import RawEnvelope

__all__ = ["BASES", "base_envelopes", "envelopes_for", "interleaved", "write_capture"]

#: Base assets of real Binance spot USDT pairs (the original BTC first).
# fmt: off
BASES = (
    "BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "TRX", "AVAX", "LINK",
    "DOT", "MATIC", "LTC", "BCH", "SHIB", "UNI", "ATOM", "XLM", "ETC", "FIL",
    "APT", "ARB", "OP", "NEAR", "ICP", "HBAR", "VET", "AAVE", "GRT", "ALGO",
    "EGLD", "SAND", "MANA", "AXS", "THETA", "FTM", "EOS", "XTZ", "FLOW", "CHZ",
    "KAVA", "RUNE", "SNX", "CRV", "LDO", "INJ", "SUI", "SEI", "TIA", "PEPE",
)
# fmt: on


@cache
def base_envelopes() -> tuple[RawEnvelope, ...]:
    """The recording's raw envelopes (41,249: 28,040 bookTicker, 9,757 trade, 3,451 depth diffs, 1 snapshot)."""
    return tuple(capture_envelopes(HFTBACKTEST, "binance"))


def _renamer(base: str) -> tuple[str, str, str]:
    return f"{base.lower()}usdt", f"{base}USDT", f"{base}.USDT"


def envelopes_for(base: str, limit: int | None = None) -> list[RawEnvelope]:
    """The recording's envelopes as instrument ``<base>USDT`` (the first ``limit`` of them)."""
    lower, venue_symbol, symbol = _renamer(base)
    source = base_envelopes()[:limit]
    if base == "BTC":
        return list(source)
    return [
        msgspec.structs.replace(
            env,
            symbol=symbol,
            venue_symbol=venue_symbol,
            frame=env.frame.replace("btcusdt@", f"{lower}@").replace('"s":"BTCUSDT"', f'"s":"{venue_symbol}"'),
        )
        for env in source
    ]


def interleaved(bases: list[str], per_instrument: int, chunk: int = 100) -> Iterator[RawEnvelope]:
    """``per_instrument`` envelopes of each instrument, ``chunk`` at a time in turn (all books live at once).

    Built lazily, one chunk per instrument at a time, so the input itself holds no memory that grows.
    """
    source = base_envelopes()
    renames = {base: _renamer(base) for base in bases}
    for start in range(0, min(per_instrument, len(source)), chunk):
        block = source[start : min(start + chunk, per_instrument)]
        for base in bases:
            lower, venue_symbol, symbol = renames[base]
            for env in block:
                frame = env.frame.replace("btcusdt@", f"{lower}@").replace('"s":"BTCUSDT"', f'"s":"{venue_symbol}"')
                yield msgspec.structs.replace(env, symbol=symbol, venue_symbol=venue_symbol, frame=frame)


def write_capture(path: Path, base: str, limit: int | None = None) -> int:
    """Write the recording as instrument ``<base>USDT`` in hftbacktest format (for ``flows.replay``); lines written."""
    lower, venue_symbol, _ = _renamer(base)
    written = 0
    with gzip.open(HFTBACKTEST, "rt") as source, gzip.open(path, "wt", compresslevel=1) as out:
        for line in source:
            if limit is not None and written >= limit:
                break
            if not line.strip():
                continue
            if base != "BTC":
                line = line.replace("btcusdt@", f"{lower}@").replace('"s":"BTCUSDT"', f'"s":"{venue_symbol}"')
            out.write(line)
            written += 1
    return written
