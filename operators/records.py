"""Builders for standardized records, one per topic, matching ``schemas/avro/<topic>.avsc`` field for field.

A `RecordFactory` is bound to one instrument, so venue normalizers only pass what differs per record.
Every builder returns an `Output`: ``(topic, record)``.
"""

from __future__ import annotations

from typing import Any

from schemas import load_schema

__all__ = ["Output", "RecordFactory"]

Output = tuple[str, dict[str, Any]]


def _template(topic: str) -> dict[str, Any]:
    """A record of ``topic`` with every field of its schema, in the schema's order, all None."""
    return dict.fromkeys(field["name"] for field in load_schema(topic)["fields"])


_TRADE, _BOOK, _TICKER = _template("trades"), _template("lob"), _template("ticker")


class RecordFactory:
    """Record builders for one instrument.

    The busiest builders (trades, books, tickers) copy a template that already holds the instrument's fields
    and set the rest: cheaper than building a dict literal for every record.
    """

    __slots__ = ("_book", "_ticker", "_trade", "exchange", "symbol", "venue_symbol")

    def __init__(self, exchange: str, symbol: str, venue_symbol: str) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.venue_symbol = venue_symbol
        ident = {"exchange": exchange, "symbol": symbol, "venue_symbol": venue_symbol}
        self._trade = _TRADE | ident
        self._book = _BOOK | ident
        self._ticker = _TICKER | ident

    def __getstate__(self) -> tuple[str, str, str]:
        return self.exchange, self.symbol, self.venue_symbol

    def __setstate__(self, state: tuple[str, str, str] | tuple[None, dict[str, str]]) -> None:
        if state[0] is None:  # pickled before the templates existed: (None, slot values)
            fields: dict[str, str] = state[1]
            state = fields["exchange"], fields["symbol"], fields["venue_symbol"]
        self.__init__(*state)  # type: ignore[misc]

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
        record = self._trade.copy()
        record["event_timestamp"] = event_ts
        record["receipt_timestamp"] = receipt_ts
        record["trade_id"] = trade_id
        record["price"] = price
        record["size"] = size
        record["side"] = side
        record["sequence"] = sequence
        return "trades", record

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
        record = self._book.copy()
        record["event_timestamp"] = event_ts
        record["receipt_timestamp"] = receipt_ts
        record["action"] = action
        record["sequence"] = sequence
        record["bid_price"] = bid_price
        record["bid_size"] = bid_size
        record["ask_price"] = ask_price
        record["ask_size"] = ask_size
        record["checksum"] = checksum
        record["reason"] = reason
        return "lob", record

    def quote(
        self,
        event_ts: int,
        receipt_ts: int,
        bid_price: float | None,
        bid_size: float | None,
        ask_price: float | None,
        ask_size: float | None,
        sequence: int | None = None,
    ) -> Output:
        """A ``ticker`` record carrying only the best bid and offer (the busiest ticker of most venues)."""
        record = self._ticker.copy()
        record["event_timestamp"] = event_ts
        record["receipt_timestamp"] = receipt_ts
        record["bid_price"] = bid_price
        record["bid_size"] = bid_size
        record["ask_price"] = ask_price
        record["ask_size"] = ask_size
        record["sequence"] = sequence
        return "ticker", record

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
        topic, record = self.quote(event_ts, receipt_ts, bid_price, bid_size, ask_price, ask_size, sequence)
        record["last_price"] = last_price
        record["last_size"] = last_size
        record["volume_24h"] = volume_24h
        record["mark_price"] = mark_price
        record["index_price"] = index_price
        return topic, record

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
        return (
            "candles",
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "venue_symbol": self.venue_symbol,
                "event_timestamp": event_ts,
                "receipt_timestamp": receipt_ts,
                "interval": interval,
                "start_timestamp": start_ts,
                "end_timestamp": end_ts,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "quote_volume": quote_volume,
                "trades": trades,
                "closed": closed,
            },
        )

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
        return (
            "funding",
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "venue_symbol": self.venue_symbol,
                "event_timestamp": event_ts,
                "receipt_timestamp": receipt_ts,
                "rate": rate,
                "predicted_rate": predicted_rate,
                "next_funding_timestamp": next_funding_ts,
                "interval_hours": interval_hours,
                "mark_price": mark_price,
                "index_price": index_price,
            },
        )

    def open_interest(
        self,
        event_ts: int,
        receipt_ts: int,
        *,
        open_interest: float,
        open_interest_value: float | None = None,
    ) -> Output:
        return (
            "open_interest",
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "venue_symbol": self.venue_symbol,
                "event_timestamp": event_ts,
                "receipt_timestamp": receipt_ts,
                "open_interest": open_interest,
                "open_interest_value": open_interest_value,
            },
        )

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
        return (
            "liquidations",
            {
                "exchange": self.exchange,
                "symbol": self.symbol,
                "venue_symbol": self.venue_symbol,
                "event_timestamp": event_ts,
                "receipt_timestamp": receipt_ts,
                "side": side,
                "price": price,
                "size": size,
                "order_id": order_id,
                "status": status,
            },
        )
