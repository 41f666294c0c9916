"""The Bitfinex instrument normalizer: channel handlers, and the book's sequence and checksum checks."""

from __future__ import annotations

import calendar
import time
from typing import Any

from operators.book import ASK, BID
from operators.records import Output
from operators.symbols import Instrument
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, InstrumentNormalizer, NormalizerSettings, RecentTrades
from operators.venues.bitfinex.book import _checksum_matches
from operators.venues.bitfinex.framer import CS_FLAG, SEQ_FLAG, TS_FLAG
from schemas.raw import RawEnvelope

__all__ = ["BitfinexNormalizer"]

_CANDLE_UNIT_SECONDS = {"m": 60, "h": 3600, "D": 86400, "W": 604800}  # 1M (a calendar month) apart
_FUNDING_HOURS = 8.0


class BitfinexNormalizer(InstrumentNormalizer):
    """One Bitfinex trading pair: trades, book, ticker, candles, funding and open interest."""

    book_channels = ("book",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        self.book_channel: str | None = None  # the subscription (without flags) the book follows
        self.book_sequence: int | None = None
        self.unverified = False  # changes applied but not yet committed (waiting for a checksum)
        self.recent = RecentTrades()

    def books(self) -> list[Any]:
        return [self.book]

    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        channel = env.channel
        if channel.startswith("book"):
            return self.on_book(env, msg)
        if channel.startswith("trades"):
            return self.on_trades(env, msg)
        if channel.startswith("ticker"):
            return [self.ticker(env, msg)]
        if channel.startswith("candles"):
            return self.on_candles(env, msg)
        if channel.startswith("status-deriv"):
            return self.on_status(env, msg[1])
        raise BadFrame(f"unknown Bitfinex channel {channel}")

    def event_time(self, env: RawEnvelope, msg: list[Any]) -> tuple[int, int | None]:
        """(event time, connection sequence) of a frame: the TIMESTAMP flag's value, else receipt time."""
        sequence = msg[-1] if SEQ_FLAG in env.channel else None
        if TS_FLAG not in env.channel:
            return env.receipt_ts, sequence
        return ms_to_us(msg[-2] if sequence is not None else msg[-1]), sequence

    # -- trades, ticker ---------------------------------------------------------------------------------------
    def on_trades(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        kind = msg[1]
        if isinstance(kind, list):  # on-subscribe history, newest first
            out = []
            for row in sorted(kind, key=lambda row: (row[1], row[0])):
                event_ts, trade_id = ms_to_us(row[1]), str(row[0])
                if self.recent.is_new(event_ts, trade_id):
                    out.append(self.trade(env, row, event_ts, trade_id))
            return out
        if kind not in ("te", "tu"):
            raise BadFrame(f"unknown Bitfinex trades message {kind!r}")
        row = msg[2]
        event_ts, trade_id = ms_to_us(row[1]), str(row[0])
        if kind == "te":
            self.recent.see(event_ts, trade_id)
        elif not self.recent.is_new(event_ts, trade_id):
            return []  # the "tu" repeat of a trade already emitted
        return [self.trade(env, row, event_ts, trade_id)]

    def trade(self, env: RawEnvelope, row: list[Any], event_ts: int, trade_id: str) -> Output:
        amount = float(row[2])
        side = "buy" if amount > 0 else "sell"
        return self.out.trade(event_ts, env.receipt_ts, trade_id, float(row[3]), abs(amount), side, int(row[0]))

    def ticker(self, env: RawEnvelope, msg: list[Any]) -> Output:
        data = msg[1]
        if not isinstance(data, list) or len(data) < 10:
            raise BadFrame(f"unexpected Bitfinex ticker payload {data!r}")
        event_ts, sequence = self.event_time(env, msg)
        return self.out.ticker(
            event_ts,
            env.receipt_ts,
            bid_price=float(data[0]),
            bid_size=float(data[1]),
            ask_price=float(data[2]),
            ask_size=float(data[3]),
            last_price=float(data[6]),
            volume_24h=float(data[7]),
            sequence=sequence,
        )

    # -- candles, derivatives status ------------------------------------------------------------------------
    def on_candles(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        data = msg[1]
        interval = env.channel.partition("+")[0].removeprefix("candles-")
        event_ts, _ = self.event_time(env, msg)
        if not data:
            return []
        if not isinstance(data[0], list):
            return [self.candle(env, event_ts, data, interval, None)]
        rows = sorted(data, key=lambda row: row[0])  # snapshot: newest first
        newest = len(rows) - 1
        return [self.candle(env, event_ts, row, interval, True if i < newest else None) for i, row in enumerate(rows)]

    def candle(self, env: RawEnvelope, event_ts: int, row: list[Any], interval: str, closed: bool | None) -> Output:
        start = ms_to_us(row[0])
        return self.out.candle(
            event_ts,
            env.receipt_ts,
            interval=interval if interval[-1] in "mhM" else interval.lower(),
            start_ts=start,
            end_ts=_candle_end(start, interval),
            open_=float(row[1]),
            close=float(row[2]),
            high=float(row[3]),
            low=float(row[4]),
            volume=float(row[5]),
            closed=closed,
        )

    def on_status(self, env: RawEnvelope, data: list[Any]) -> list[Output]:
        if not isinstance(data, list) or len(data) < 18:
            raise BadFrame(f"unexpected Bitfinex derivatives status {data!r}")
        event_ts = ms_to_us(data[0])
        out = []
        if data[11] is not None:
            out.append(
                self.out.funding(
                    event_ts,
                    env.receipt_ts,
                    rate=float(data[11]),
                    predicted_rate=_optional(data[8]),
                    next_funding_ts=ms_to_us(data[7]) if data[7] is not None else None,
                    interval_hours=_FUNDING_HOURS,
                    mark_price=_optional(data[14]),
                )
            )
        if data[17] is not None:
            out.append(self.out.open_interest(event_ts, env.receipt_ts, open_interest=float(data[17])))
        return out

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        data = msg[1]
        base = env.channel.partition("+")[0]
        if base.startswith("book-R0"):
            raise BadFrame(
                "Bitfinex R0 raw books are not supported: subscribe P0 for the price-level book", book_intact=True
            )
        if isinstance(data, list) and (not data or isinstance(data[0], list)):
            return self.on_snapshot(env, msg, base)
        if base != self.book_channel:
            raise BadFrame(f"Bitfinex {base} frame but the book follows {self.book_channel}", book_intact=True)
        if not self.book.valid:
            return []
        if data == "cs":
            return self.on_checksum(env, msg)
        event_ts, sequence = self.event_time(env, msg)
        if sequence is not None:
            if self.book_sequence is not None and sequence <= self.book_sequence:
                return self.book.resync(
                    event_ts, env.receipt_ts, f"gap: sequence {sequence} after {self.book_sequence}"
                )
            self.book_sequence = sequence
        amount = float(data[2])
        if amount == 0:
            raise BadFrame(f"Bitfinex book level without a side: {data!r}")
        self.book.change(BID if amount > 0 else ASK, float(data[0]), abs(amount) if data[1] else 0.0)
        if CS_FLAG in env.channel:
            self.unverified = True  # committed when the checksum frame confirms it
            return []
        return self.book.commit(event_ts, env.receipt_ts, sequence)

    def on_snapshot(self, env: RawEnvelope, msg: list[Any], base: str) -> list[Output]:
        if self.book.valid and base != self.book_channel:
            raise BadFrame(
                f"second Bitfinex book subscription {base}: the book follows {self.book_channel}", book_intact=True
            )
        event_ts, sequence = self.event_time(env, msg)
        rows = msg[1]
        self.book.load_snapshot(
            [(float(row[0]), float(row[2]), None, None) for row in rows if row[2] > 0],
            [(float(row[0]), -float(row[2]), None, None) for row in rows if row[2] < 0],
        )
        self.book_channel, self.book_sequence, self.unverified = base, sequence, False
        return self.book.publish_snapshot(event_ts, env.receipt_ts, sequence)

    def on_checksum(self, env: RawEnvelope, msg: list[Any]) -> list[Output]:
        expected = int(msg[2])
        event_ts, sequence = self.event_time(env, msg)
        if self.unverified:
            self.unverified = False
            return self.book.commit(
                event_ts,
                env.receipt_ts,
                self.book_sequence,
                checksum=expected,
                verify=lambda book: _checksum_matches(book, expected),
            )
        if _checksum_matches(self.book.book, expected):
            return []
        return self.book.resync(event_ts, env.receipt_ts, f"checksum mismatch at sequence {sequence}")


def _optional(value: Any) -> float | None:
    return float(value) if value is not None else None


def _candle_end(start_us: int, interval: str) -> int:
    if interval == "1M":
        year, month = time.gmtime(start_us // 1_000_000)[:2]
        return start_us + calendar.monthrange(year, month)[1] * 86_400_000_000
    unit = _CANDLE_UNIT_SECONDS.get(interval[-1])
    if unit is None or not interval[:-1].isdigit():
        raise BadFrame(f"unknown Bitfinex candle interval {interval!r}")
    return start_us + int(interval[:-1]) * unit * 1_000_000
