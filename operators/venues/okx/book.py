"""OKX book rules: which channels carry books, and the checksum over the venue's own strings."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from operators.book import ASK, BID, LocalBook

__all__ = ["book_checksum"]

_DIFF_BOOKS = frozenset(("books", "books-l2-tbt", "books50-l2-tbt"))
_TOP_BOOKS = frozenset(("books5", "bbo-tbt"))
_CHECKSUM_DEPTH = 25


def book_checksum(book: LocalBook) -> int:
    """OKX's CRC32 of the top 25 levels, interleaved bid/ask, as a signed 32-bit integer."""
    bids = book.top(BID, _CHECKSUM_DEPTH)
    asks = book.top(ASK, _CHECKSUM_DEPTH)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(f"{bids[i][2]}:{bids[i][3]}")
        if i < len(asks):
            parts.append(f"{asks[i][2]}:{asks[i][3]}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


def _checksum_matches(expected: int, book: LocalBook) -> bool:
    return book_checksum(book) == expected


def _expected_checksum(data: dict[str, Any]) -> int | None:
    """The checksum to verify; None when absent or deprecated (always 0 beside a seqId since 2026)."""
    checksum = data.get("checksum")
    if checksum is None or (checksum == 0 and "seqId" in data):
        return None
    return int(checksum)


def _levels(levels: Iterable[list[str]]) -> Iterator[tuple[float, float, str, str]]:
    for level in levels:
        price, size = level[0], level[1]
        yield float(price), float(size), price, size
