"""Builders for standardized records, one per topic, matching ``schemas/avro/<topic>.avsc`` field for field.

A `RecordFactory` is bound to one instrument, so venue normalizers only pass what differs per record.
Every builder returns an `Output`: ``(topic, record)``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Output", "RecordFactory"]

Output = tuple[str, dict[str, Any]]


class RecordFactory:
    """Record builders for one instrument."""

    __slots__ = ("exchange", "symbol", "venue_symbol")

    def __init__(self, exchange: str, symbol: str, venue_symbol: str) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.venue_symbol = venue_symbol

    def _base(self, event_ts: int, receipt_ts: int) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "venue_symbol": self.venue_symbol,
            "event_timestamp": event_ts,
            "receipt_timestamp": receipt_ts,
        }

    def trade(
        self,
        event_ts: int,
        receipt_ts: int,
        trade_id: str,
        price: float,
        size: float,
        side: str,
        sequence: int | None = None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["trade_id"] = trade_id
        rec["price"] = price
        rec["size"] = size
        rec["side"] = side
        rec["sequence"] = sequence
        return ("trades", rec)

    def book(
        self,
        action: str,
        event_ts: int,
        receipt_ts: int,
        sequence: int | None,
        bid_price: list[float],
        bid_size: list[float],
        ask_price: list[float],
        ask_size: list[float],
        checksum: int | None,
        reason: str | None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["action"] = action
        rec["sequence"] = sequence
        rec["bid_price"] = bid_price
        rec["bid_size"] = bid_size
        rec["ask_price"] = ask_price
        rec["ask_size"] = ask_size
        rec["checksum"] = checksum
        rec["reason"] = reason
        return ("lob", rec)

    def ticker(
        self,
        event_ts: int,
        receipt_ts: int,
        *,
        bid_price: float | None = None,
        bid_size: float | None = None,
        ask_price: float | None = None,
        ask_size: float | None = None,
        last_price: float | None = None,
        last_size: float | None = None,
        volume_24h: float | None = None,
        mark_price: float | None = None,
        index_price: float | None = None,
        sequence: int | None = None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["bid_price"] = bid_price
        rec["bid_size"] = bid_size
        rec["ask_price"] = ask_price
        rec["ask_size"] = ask_size
        rec["last_price"] = last_price
        rec["last_size"] = last_size
        rec["volume_24h"] = volume_24h
        rec["mark_price"] = mark_price
        rec["index_price"] = index_price
        rec["sequence"] = sequence
        return ("ticker", rec)

    def candle(
        self,
        event_ts: int,
        receipt_ts: int,
        *,
        interval: str,
        start_ts: int,
        end_ts: int,
        open_: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        quote_volume: float | None = None,
        trades: int | None = None,
        closed: bool | None = None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["interval"] = interval
        rec["start_timestamp"] = start_ts
        rec["end_timestamp"] = end_ts
        rec["open"] = open_
        rec["high"] = high
        rec["low"] = low
        rec["close"] = close
        rec["volume"] = volume
        rec["quote_volume"] = quote_volume
        rec["trades"] = trades
        rec["closed"] = closed
        return ("candles", rec)

    def funding(
        self,
        event_ts: int,
        receipt_ts: int,
        *,
        rate: float,
        predicted_rate: float | None = None,
        next_funding_ts: int | None = None,
        interval_hours: float | None = None,
        mark_price: float | None = None,
        index_price: float | None = None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["rate"] = rate
        rec["predicted_rate"] = predicted_rate
        rec["next_funding_timestamp"] = next_funding_ts
        rec["interval_hours"] = interval_hours
        rec["mark_price"] = mark_price
        rec["index_price"] = index_price
        return ("funding", rec)

    def open_interest(
        self,
        event_ts: int,
        receipt_ts: int,
        *,
        open_interest: float,
        open_interest_value: float | None = None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["open_interest"] = open_interest
        rec["open_interest_value"] = open_interest_value
        return ("open_interest", rec)

    def liquidation(
        self,
        event_ts: int,
        receipt_ts: int,
        *,
        side: str,
        price: float,
        size: float,
        order_id: str | None = None,
        status: str | None = None,
    ) -> Output:
        rec = self._base(event_ts, receipt_ts)
        rec["side"] = side
        rec["price"] = price
        rec["size"] = size
        rec["order_id"] = order_id
        rec["status"] = status
        return ("liquidations", rec)
