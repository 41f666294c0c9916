"""The OKX instrument normalizer: channel handlers and the book's checksum and seqId checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache, partial
from typing import Any

from operators.book import ASK, BID, BookPublisher
from operators.records import Output
from operators.symbols import Instrument
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, InstrumentNormalizer, NormalizerSettings, RecentTrades
from operators.venues.okx.book import (
    _DIFF_BOOKS,
    _TOP_BOOKS,
    _checksum_matches,
    _expected_checksum,
    _levels,
    book_checksum,
)
from schemas.raw import RawEnvelope

__all__ = ["OkxNormalizer"]

_SIDES = frozenset(("buy", "sell"))
#: bar unit -> (normalized unit, seconds; 0 for calendar months)
_BAR_UNITS = {"s": ("s", 1), "m": ("m", 60), "H": ("h", 3600), "D": ("d", 86400), "W": ("w", 604800), "M": ("M", 0)}
_HONG_KONG = timezone(timedelta(hours=8))


def _num(text: str | None) -> float | None:
    """OKX sends "" for a missing number."""
    return float(text) if text else None


def _ms(text: str | None) -> int | None:
    return ms_to_us(text) if text else None


@lru_cache(maxsize=64)
def _candle_bar(channel: str) -> tuple[str, int, int, bool]:
    """``candle1H`` -> (``1h``, seconds, months, UTC-aligned); calendar-month bars have 0 seconds."""
    bar = channel.removeprefix("candle")
    utc = bar.endswith("utc")
    bar = bar.removesuffix("utc")
    count, unit = bar[:-1], bar[-1:]
    if not count.isdigit() or unit not in _BAR_UNITS:
        raise BadFrame(f"unknown OKX candle channel {channel!r}", "unsupported")
    name, seconds = _BAR_UNITS[unit]
    n = int(count)
    return f"{n}{name}", n * seconds, 0 if seconds else n, utc


def _add_months(start_us: int, months: int, utc: bool) -> int:
    start = datetime.fromtimestamp(start_us // 1_000_000, tz=UTC if utc else _HONG_KONG)
    years, month = divmod(start.month - 1 + months, 12)
    end = start.replace(year=start.year + years, month=month + 1)
    return int(end.timestamp()) * 1_000_000 + start_us % 1_000_000


class OkxNormalizer(InstrumentNormalizer):
    """One OKX instrument: book (checksum and seqId checked), trades, tickers, candles, funding, OI, liquidations."""

    book_channels = ("books", "bbo-tbt")

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book(keep_text=True)
        #: The channel this instrument's lob stream follows (first book channel seen).
        self.book_channel: str | None = None
        #: Last seqId applied; None without one.
        self.seq_id: int | None = None
        self.recent = RecentTrades()

    def books(self) -> list[BookPublisher]:
        return [self.book]

    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        channel = env.channel
        handler = _HANDLERS.get(channel)
        if handler is not None:
            return handler(self, env, msg)
        if channel.startswith("candle"):
            return self.on_candles(env, msg)
        raise BadFrame(f"unknown OKX channel {channel!r}", "unsupported")

    def on_trades(self, env: RawEnvelope, msg: Any) -> list[Output]:
        data = msg["data"]
        if len(data) > 1 and int(data[0]["ts"]) > int(data[-1]["ts"]):
            data = data[::-1]  # oldest first, as RecentTrades expects
        out: list[Output] = []
        for trade in data:
            event_ts = ms_to_us(trade["ts"])
            side = trade["side"]
            if side not in _SIDES:
                raise BadFrame(f"OKX trade with side {side!r}")
            if self.recent.is_new(event_ts, trade["tradeId"]):
                price, size = float(trade["px"]), float(trade["sz"])
                out.append(self.out.trade(event_ts, env.receipt_ts, trade["tradeId"], price, size, side))
        return out

    def on_tickers(self, env: RawEnvelope, msg: Any) -> list[Output]:
        return [
            self.out.ticker(
                ms_to_us(d["ts"]),
                env.receipt_ts,
                bid_price=_num(d["bidPx"]),
                bid_size=_num(d["bidSz"]),
                ask_price=_num(d["askPx"]),
                ask_size=_num(d["askSz"]),
                last_price=_num(d["last"]),
                last_size=_num(d["lastSz"]),
                volume_24h=_num(d["vol24h"]),
            )
            for d in msg["data"]
        ]

    def on_mark_price(self, env: RawEnvelope, msg: Any) -> list[Output]:
        return [self.out.ticker(ms_to_us(d["ts"]), env.receipt_ts, mark_price=float(d["markPx"])) for d in msg["data"]]

    def on_index_tickers(self, env: RawEnvelope, msg: Any) -> list[Output]:
        return [self.out.ticker(ms_to_us(d["ts"]), env.receipt_ts, index_price=float(d["idxPx"])) for d in msg["data"]]

    def on_candles(self, env: RawEnvelope, msg: Any) -> list[Output]:
        interval, seconds, months, utc = _candle_bar(env.channel)
        spot_market = self.instrument.market == "spot"
        out: list[Output] = []
        for row in msg["data"]:
            start = ms_to_us(row[0])
            end = start + seconds * 1_000_000 if seconds else _add_months(start, months, utc)
            quote = row[7] if len(row) > 7 else (row[6] if spot_market else None)
            out.append(
                self.out.candle(
                    env.receipt_ts,
                    env.receipt_ts,
                    interval=interval,
                    start_ts=start,
                    end_ts=end,
                    open_=float(row[1]),
                    high=float(row[2]),
                    low=float(row[3]),
                    close=float(row[4]),
                    volume=float(row[5]),
                    quote_volume=_num(quote),
                    closed=row[8] == "1" if len(row) > 8 else None,
                )
            )
        return out

    def on_funding(self, env: RawEnvelope, msg: Any) -> list[Output]:
        out: list[Output] = []
        for d in msg["data"]:
            funding_ts = _ms(d["fundingTime"])
            next_ts = _ms(d.get("nextFundingTime"))
            interval = (next_ts - funding_ts) / 3_600_000_000 if funding_ts and next_ts else None
            out.append(
                self.out.funding(
                    _ms(d.get("ts")) or env.receipt_ts,
                    env.receipt_ts,
                    rate=float(d["fundingRate"]),
                    predicted_rate=_num(d.get("nextFundingRate")),
                    next_funding_ts=funding_ts,
                    interval_hours=interval,
                )
            )
        return out

    def on_open_interest(self, env: RawEnvelope, msg: Any) -> list[Output]:
        return [
            self.out.open_interest(
                ms_to_us(d["ts"]),
                env.receipt_ts,
                open_interest=float(d["oi"]),
                open_interest_value=_num(d.get("oiUsd")),
            )
            for d in msg["data"]
        ]

    def on_liquidations(self, env: RawEnvelope, msg: Any) -> list[Output]:
        venue_symbol = self.instrument.venue_symbol
        out: list[Output] = []
        for item in msg["data"]:
            if item.get("instId", venue_symbol) != venue_symbol:
                continue  # another instrument's liquidations in the same instType push
            for d in item["details"]:
                side = d["side"]
                if side not in _SIDES:
                    raise BadFrame(f"OKX liquidation with side {side!r}")
                price, size = float(d["bkPx"]), float(d["sz"])
                out.append(self.out.liquidation(ms_to_us(d["ts"]), env.receipt_ts, side=side, price=price, size=size))
        return out

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, msg: Any) -> list[Output]:
        channel = env.channel
        if channel != self.book_channel:
            if self.book_channel is not None:
                raise BadFrame(
                    f"{channel} frame not used: this instrument's book follows {self.book_channel}", book_intact=True
                )
            self.book_channel = channel
        action = msg.get("action")
        if channel in _TOP_BOOKS or action == "snapshot":
            handler = self.snapshot
        elif action == "update":
            handler = self.update
        else:
            raise BadFrame(f"OKX {channel} frame with action {action!r}")
        out: list[Output] = []
        for data in msg["data"]:
            out.extend(handler(env, data))
        return out

    def snapshot(self, env: RawEnvelope, data: dict[str, Any]) -> list[Output]:
        event_ts = ms_to_us(data["ts"])
        seq_id = data.get("seqId")
        book = self.book
        book.load_snapshot(_levels(data["bids"]), _levels(data["asks"]))
        expected = _expected_checksum(data)
        if expected is not None and book_checksum(book.book) != expected:
            return self.invalidate(event_ts, env.receipt_ts, f"checksum mismatch on snapshot (seqId {seq_id})")
        self.seq_id = seq_id
        sequence = seq_id if seq_id is not None else int(data["ts"])
        return book.publish_snapshot(event_ts, env.receipt_ts, sequence, expected)

    def update(self, env: RawEnvelope, data: dict[str, Any]) -> list[Output]:
        book = self.book
        if not book.valid:
            return []  # waiting for the next snapshot
        event_ts = ms_to_us(data["ts"])
        seq_id = data.get("seqId")
        if seq_id is not None:
            last, prev = self.seq_id, data["prevSeqId"]
            if last is not None and prev != last:
                reason = f"gap: prevSeqId {prev} does not follow seqId {last} (seqId {seq_id})"
                return self.invalidate(event_ts, env.receipt_ts, reason)
            self.seq_id = seq_id
        bids, asks = data["bids"], data["asks"]
        expected = _expected_checksum(data)
        if not bids and not asks:
            return self.heartbeat(event_ts, env.receipt_ts, expected)
        for level in bids:
            book.change(BID, float(level[0]), float(level[1]), level[0], level[1])
        for level in asks:
            book.change(ASK, float(level[0]), float(level[1]), level[0], level[1])
        verify = partial(_checksum_matches, expected) if expected is not None else None
        sequence = seq_id if seq_id is not None else int(data["ts"])
        return book.commit(event_ts, env.receipt_ts, sequence, checksum=expected, verify=verify)

    def heartbeat(self, event_ts: int, receipt_ts: int, expected: int | None) -> list[Output]:
        """An update without levels: nothing to publish, but its checksum must still hold."""
        if expected is not None and book_checksum(self.book.book) != expected:
            return self.invalidate(event_ts, receipt_ts, f"checksum mismatch on unchanged book (seqId {self.seq_id})")
        return []

    def invalidate(self, event_ts: int, receipt_ts: int, reason: str) -> list[Output]:
        """Resync the book and wait for the next venue snapshot."""
        self.seq_id = None
        return self.book.resync(event_ts, receipt_ts, reason)


_HANDLERS: dict[str, Callable[[OkxNormalizer, RawEnvelope, Any], list[Output]]] = {
    "trades": OkxNormalizer.on_trades,
    "trades-all": OkxNormalizer.on_trades,
    "tickers": OkxNormalizer.on_tickers,
    "mark-price": OkxNormalizer.on_mark_price,
    "index-tickers": OkxNormalizer.on_index_tickers,
    "funding-rate": OkxNormalizer.on_funding,
    "open-interest": OkxNormalizer.on_open_interest,
    "liquidation-orders": OkxNormalizer.on_liquidations,
    **dict.fromkeys(sorted(_DIFF_BOOKS | _TOP_BOOKS), OkxNormalizer.on_book),
}

_CHANNELS = (*_HANDLERS, "candle<bar>")
