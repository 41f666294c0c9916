"""A local order book per instrument, and the rules for publishing it to the ``lob`` topic.

`LocalBook` holds price levels (sorted on demand, or kept sorted when the venue needs the top of the book on
every update) and, for venues whose checksums are computed over the venue's own text (OKX, Kraken), the
original price and size strings.

`BookPublisher` owns one `LocalBook` and turns venue events into ``lob`` records:

* ``snapshot``: the whole book (venue snapshot, or a periodic re-publication every ``snapshot_interval_us`` of
  event time so a reader can start anywhere without replaying from the first venue snapshot);
* ``update``: the levels that changed, in the order applied, size 0 meaning removed (levels dropped by depth
  truncation are included, so a replay reproduces the same book);
* ``resync``: the book is known bad (gap, checksum mismatch, reconnect); nothing more is published until the
  next venue snapshot.

A change whose checksum does not match is never published: the book is invalidated and a ``resync`` goes out
instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from operator import neg
from typing import Any

from sortedcontainers import SortedDict

from operators.records import Output, RecordFactory

__all__ = ["ASK", "BID", "BookPublisher", "LocalBook"]

BID = 0
ASK = 1

#: (price, size, price_text, size_text) with texts None unless the book keeps text.
Level = tuple[float, float, str | None, str | None]


class LocalBook:
    """Price levels of one instrument.

    Levels live in plain dicts, the fastest structure for the per-level changes that dominate a feed. A book
    whose venue needs the best levels on every update (checksums over the top N, depth truncation) is
    ``ordered``: its keys are also kept sorted (``SortedDict``). Otherwise order is produced only when asked
    for (snapshot records, rare top-N queries).
    """

    __slots__ = ("_sides", "_text", "depth", "ordered")

    def __init__(self, keep_text: bool = False, depth: int | None = None, ordered: bool | None = None) -> None:
        self.ordered = bool(keep_text or depth is not None) if ordered is None else ordered
        self._sides: tuple[dict[float, float], dict[float, float]] = self._new_sides(())
        self._text: tuple[dict[float, tuple[str, str]], dict[float, tuple[str, str]]] | None = (
            ({}, {}) if keep_text else None
        )
        self.depth = depth

    def _new_sides(self, items: tuple[Any, ...]) -> tuple[dict[float, float], dict[float, float]]:
        bids, asks = items or ((), ())
        if self.ordered:
            return SortedDict(neg, bids), SortedDict(asks)
        return dict(bids), dict(asks)

    def clear(self) -> None:
        for side in self._sides:
            side.clear()
        if self._text is not None:
            for text in self._text:
                text.clear()

    def set(
        self,
        side: int,
        price: float,
        size: float,
        price_text: str | None = None,
        size_text: str | None = None,
    ) -> None:
        """Set a level; size 0 removes it."""
        levels = self._sides[side]
        if size == 0.0:
            levels.pop(price, None)
            if self._text is not None:
                self._text[side].pop(price, None)
        else:
            levels[price] = size
            if self._text is not None:
                self._text[side][price] = (price_text or repr(price), size_text or repr(size))

    def load(self, side: int, levels: Iterable[tuple[float, float]]) -> None:
        """Bulk-insert (price, size) levels into a side of a book that keeps no text (fast path)."""
        self._sides[side].update((price, size) for price, size in levels if size)

    def keeps_text(self) -> bool:
        return self._text is not None

    def truncate(self) -> list[tuple[int, float]]:
        """Drop levels beyond ``depth`` on each side; returns the (side, price) pairs dropped."""
        dropped: list[tuple[int, float]] = []
        if self.depth is None:
            return dropped
        for side, levels in enumerate(self._sides):
            while len(levels) > self.depth:
                price, _ = levels.popitem(-1)  # type: ignore[call-arg]  # SortedDict: depth implies ordered
                if self._text is not None:
                    self._text[side].pop(price, None)
                dropped.append((side, price))
        return dropped

    def size(self, side: int, price: float) -> float:
        return self._sides[side].get(price, 0.0)

    def __len__(self) -> int:
        return len(self._sides[0]) + len(self._sides[1])

    def count(self, side: int) -> int:
        return len(self._sides[side])

    def prices(self, side: int, n: int | None = None) -> list[float]:
        """Prices of a side best first (all, or the best ``n``)."""
        levels = self._sides[side]
        if self.ordered:
            return list(levels.islice(0, n)) if n is not None else list(levels)  # type: ignore[attr-defined]
        if n is None:
            return sorted(levels, reverse=side == BID)
        return heapq.nlargest(n, levels) if side == BID else heapq.nsmallest(n, levels)

    def best(self, side: int) -> tuple[float, float] | None:
        prices = self.prices(side, 1)
        return (prices[0], self._sides[side][prices[0]]) if prices else None

    def top(self, side: int, n: int) -> list[Level]:
        """The best ``n`` levels of a side with their venue texts (None when not kept)."""
        levels = self._sides[side]
        text = self._text[side] if self._text is not None else None
        if text is None:
            return [(price, levels[price], None, None) for price in self.prices(side, n)]
        return [(price, levels[price], *text[price]) for price in self.prices(side, n)]

    def arrays(self, side: int) -> tuple[list[float], list[float]]:
        """All levels of a side as parallel price and size lists, best first."""
        levels = self._sides[side]
        prices = self.prices(side)
        return prices, [levels[price] for price in prices]

    def __getstate__(self) -> tuple[Any, ...]:
        return (list(self._sides[0].items()), list(self._sides[1].items()), self._text, self.depth, self.ordered)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        bids, asks, text, depth, ordered = state
        self.ordered = ordered
        self._sides = self._new_sides((bids, asks))
        self._text = text
        self.depth = depth


class BookPublisher:
    """Applies venue book events to a `LocalBook` and emits ``lob`` records under the resync discipline."""

    __slots__ = (
        "_asks_changed",
        "_bids_changed",
        "_dirty",
        "_last_snapshot_ts",
        "book",
        "factory",
        "sequence",
        "snapshot_interval_us",
        "valid",
    )

    def __init__(
        self,
        factory: RecordFactory,
        snapshot_interval_us: int,
        keep_text: bool = False,
        depth: int | None = None,
    ) -> None:
        self.factory = factory
        self.book = LocalBook(keep_text=keep_text, depth=depth)
        self.valid = False
        self.sequence: int | None = None
        self.snapshot_interval_us = snapshot_interval_us
        self._last_snapshot_ts = 0
        self._dirty = False
        self._bids_changed: tuple[list[float], list[float]] = ([], [])
        self._asks_changed: tuple[list[float], list[float]] = ([], [])

    @property
    def dirty(self) -> bool:
        """True between a change to the book and its publication: a failure now leaves the book unknown."""
        return self._dirty

    @property
    def has_changes(self) -> bool:
        """True when an update is being built (levels changed since the last commit)."""
        return bool(self._bids_changed[0] or self._asks_changed[0])

    # -- snapshots -------------------------------------------------------------------------------------------
    def load_snapshot(
        self,
        bids: Iterable[tuple[float, float, str | None, str | None]],
        asks: Iterable[tuple[float, float, str | None, str | None]],
    ) -> None:
        """Replace the book's content (call `publish_snapshot` afterwards, possibly after a checksum check)."""
        book = self.book
        self._dirty = True
        book.clear()
        if book.keeps_text():
            for price, size, ptxt, stxt in bids:
                if size:
                    book.set(BID, price, size, ptxt, stxt)
            for price, size, ptxt, stxt in asks:
                if size:
                    book.set(ASK, price, size, ptxt, stxt)
        else:
            book.load(BID, (level[:2] for level in bids))
            book.load(ASK, (level[:2] for level in asks))
        book.truncate()
        self._reset_changes()

    def publish_snapshot(
        self,
        event_ts: int,
        receipt_ts: int,
        sequence: int | None,
        checksum: int | None = None,
        reason: str = "venue",
    ) -> list[Output]:
        self.valid = True
        self._dirty = False
        self.sequence = sequence
        self._last_snapshot_ts = event_ts
        return [self._snapshot_record(event_ts, receipt_ts, checksum, reason)]

    def _snapshot_record(self, event_ts: int, receipt_ts: int, checksum: int | None, reason: str) -> Output:
        bid_price, bid_size = self.book.arrays(BID)
        ask_price, ask_size = self.book.arrays(ASK)
        return self.factory.book(
            "snapshot",
            event_ts,
            receipt_ts,
            self.sequence,
            bid_price,
            bid_size,
            ask_price,
            ask_size,
            checksum,
            reason,
        )

    # -- updates ---------------------------------------------------------------------------------------------
    def _reset_changes(self) -> None:
        self._bids_changed = ([], [])
        self._asks_changed = ([], [])

    def change(
        self,
        side: int,
        price: float,
        size: float,
        price_text: str | None = None,
        size_text: str | None = None,
    ) -> None:
        """Apply one level change of the update being built."""
        self._dirty = True
        self.book.set(side, price, size, price_text, size_text)
        prices, sizes = self._bids_changed if side == BID else self._asks_changed
        prices.append(price)
        sizes.append(size)

    def apply(self, side: int, levels: Iterable[Any]) -> None:
        """Apply a venue's ``[[price, size, ...], ...]`` level list (strings or numbers) in one pass.

        The bulk form of `change` for books that keep no text: the per-level work of a busy feed.
        """
        if self.book.keeps_text():
            for level in levels:
                self.change(side, float(level[0]), float(level[1]), str(level[0]), str(level[1]))
            return
        self._dirty = True
        book_side = self.book._sides[side]
        remove = book_side.pop
        prices, sizes = self._bids_changed if side == BID else self._asks_changed
        add_price, add_size = prices.append, sizes.append
        for level in levels:
            price = float(level[0])
            size = float(level[1])
            if size:
                book_side[price] = size
            else:
                remove(price, None)
            add_price(price)
            add_size(size)

    def commit(
        self,
        event_ts: int,
        receipt_ts: int,
        sequence: int | None,
        checksum: int | None = None,
        verify: Callable[[LocalBook], bool] | None = None,
    ) -> list[Output]:
        """Finish the update: truncate to depth, verify, and emit it (or a resync when verification fails).

        An invalid book publishes nothing: the changes are dropped until the next venue snapshot.
        """
        if not self.valid:
            self._reset_changes()
            self.book.clear()
            self._dirty = False
            return []
        for side, price in self.book.truncate():
            prices, sizes = self._bids_changed if side == BID else self._asks_changed
            prices.append(price)
            sizes.append(0.0)
        if verify is not None and not verify(self.book):
            self._reset_changes()
            return self.resync(
                event_ts,
                receipt_ts,
                f"checksum mismatch after sequence {sequence}" if sequence is not None else "checksum mismatch",
            )
        self.sequence = sequence
        self._dirty = False
        bids, asks = self._bids_changed, self._asks_changed
        self._reset_changes()
        out = [
            self.factory.book(
                "update", event_ts, receipt_ts, sequence, bids[0], bids[1], asks[0], asks[1], checksum, None
            )
        ]
        if self.snapshot_interval_us and event_ts - self._last_snapshot_ts >= self.snapshot_interval_us:
            self._last_snapshot_ts = event_ts
            out.append(self._snapshot_record(event_ts, receipt_ts, checksum, "periodic"))
        return out

    # -- resync ----------------------------------------------------------------------------------------------
    def resync(self, event_ts: int, receipt_ts: int, reason: str) -> list[Output]:
        """Invalidate the book; emits one resync record unless the book is already invalid."""
        self._reset_changes()
        self._dirty = False
        self.book.clear()
        if not self.valid:
            return []
        self.valid = False
        self.sequence = None
        return [self.factory.book("resync", event_ts, receipt_ts, None, [], [], [], [], None, reason)]
