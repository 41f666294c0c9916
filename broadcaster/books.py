"""The broadcaster's own order books: one per ``lob`` key, rebuilt from ``lob`` records by the README's rule.

A ``snapshot`` replaces the book, an ``update`` sets each level it lists (size 0 removes it), a ``resync``
invalidates the book until the next snapshot. An update for a book that is not valid (never saw a snapshot,
or resynced) is not applied. A new subscriber gets `BookKeeper.snapshot` (the book as a ``snapshot`` record,
or a ``resync`` record while the book is not valid), then the records after it: replaying both by the same
rule gives the book of a client that saw every record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BOOK_SNAPSHOT_REASON", "NO_SNAPSHOT_REASON", "BookKeeper", "BookState"]

#: ``reason`` of the snapshot records the broadcaster makes from its own books.
BOOK_SNAPSHOT_REASON = "broadcaster"
#: ``reason`` of the resync record sent for a book the broadcaster has no valid snapshot for.
NO_SNAPSHOT_REASON = "no venue snapshot seen by the broadcaster yet"

_HEADER_FIELDS = ("exchange", "symbol", "venue_symbol", "event_timestamp", "receipt_timestamp", "sequence")


@dataclass(slots=True)
class BookState:
    """One instrument's book and the coordinates of the last lob record applied to it."""

    partition: int
    offset: int
    header: dict[str, Any]
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    valid: bool = False
    checksum: int | None = None
    reason: str | None = NO_SNAPSHOT_REASON


class BookKeeper:
    """Books per key, fed every lob record in partition order."""

    def __init__(self) -> None:
        self._books: dict[str, BookState] = {}

    def __len__(self) -> int:
        return len(self._books)

    def instruments(self) -> list[str]:
        """Keys of every book seen."""
        return list(self._books)

    def apply(self, key: str, record: dict[str, Any], partition: int, offset: int) -> None:
        book = self._books.get(key)
        if book is None:
            book = self._books[key] = BookState(partition, offset, {})
        book.partition, book.offset = partition, offset
        book.header = {name: record.get(name) for name in _HEADER_FIELDS}
        action = record["action"]
        if action == "snapshot":
            book.bids = dict(zip(record["bid_price"], record["bid_size"], strict=True))
            book.asks = dict(zip(record["ask_price"], record["ask_size"], strict=True))
            book.valid, book.checksum, book.reason = True, record.get("checksum"), None
        elif action == "resync":
            book.bids, book.asks = {}, {}
            book.valid, book.checksum, book.reason = False, None, record.get("reason") or "resync"
        elif book.valid:
            for side, prices, sizes in (
                (book.bids, record["bid_price"], record["bid_size"]),
                (book.asks, record["ask_price"], record["ask_size"]),
            ):
                for price, size in zip(prices, sizes, strict=True):
                    if size:
                        side[price] = size
                    else:
                        side.pop(price, None)
            book.checksum = record.get("checksum")

    def snapshot(self, key: str) -> tuple[BookState, dict[str, Any]] | None:
        """The book of ``key`` as a lob record (``snapshot`` if valid, else ``resync``); None if never seen."""
        book = self._books.get(key)
        if book is None:
            return None
        if not book.valid:
            record = {
                **book.header,
                "action": "resync",
                "bid_price": [],
                "bid_size": [],
                "ask_price": [],
                "ask_size": [],
                "checksum": None,
                "reason": book.reason,
            }
            return book, record
        bids = sorted(book.bids.items(), reverse=True)
        asks = sorted(book.asks.items())
        record = {
            **book.header,
            "action": "snapshot",
            "bid_price": [price for price, _ in bids],
            "bid_size": [size for _, size in bids],
            "ask_price": [price for price, _ in asks],
            "ask_size": [size for _, size in asks],
            "checksum": book.checksum,
            "reason": BOOK_SNAPSHOT_REASON,
        }
        return book, record
