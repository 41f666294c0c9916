"""Bitfinex's book checksum: a CRC32 over numbers printed as JavaScript prints them."""

from __future__ import annotations

import zlib
from decimal import Decimal

from operators.book import ASK, BID, LocalBook

__all__ = ["book_checksum", "js_number"]

#: (prices fixed, amounts fixed): JavaScript printing first, then the fixed-notation readings of tiny numbers.
_CHECKSUM_STYLES = ((False, False), (True, False), (True, True))


def js_number(value: float, fixed: bool = False) -> str:
    """``String(value)`` as JavaScript prints it; ``fixed`` prints numbers below 1e-6 without an exponent."""
    if value == 0:
        return "0"
    text = repr(value)  # the shortest round-trip digits, as JavaScript chooses them
    if (abs(value) < 1e-6 and not fixed) or abs(value) >= 1e21:
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}e{int(exponent):+d}"
    return format(Decimal(text), "f") if "e" in text else text.removesuffix(".0")


def book_checksum(book: LocalBook, fixed_prices: bool = False, fixed_amounts: bool = False) -> int:
    """Bitfinex's signed CRC32 over the top 25 levels: ``bid:amount:ask:-amount:...`` interleaved."""
    bids, asks = book.top(BID, 25), book.top(ASK, 25)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += (js_number(bids[i][0], fixed_prices), js_number(bids[i][1], fixed_amounts))
        if i < len(asks):
            parts += (js_number(asks[i][0], fixed_prices), js_number(-asks[i][1], fixed_amounts))
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc & 0x80000000 else crc


def _checksum_matches(book: LocalBook, expected: int) -> bool:
    return any(book_checksum(book, *style) == expected for style in _CHECKSUM_STYLES)
