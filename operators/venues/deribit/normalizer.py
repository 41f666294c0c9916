"""The Deribit instrument normalizer: book (``change_id`` chain), trades and liquidations, tickers, candles."""

from __future__ import annotations

from typing import Any

from operators.book import ASK, BID, BookPublisher
from operators.records import Output
from operators.symbols import Instrument
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, InstrumentNormalizer, NormalizerSettings
from schemas.raw import RawEnvelope

__all__ = ["DeribitNormalizer"]

_TAKER_SIDES = {"buy": "buy", "sell": "sell"}
_OPPOSITE = {"buy": "sell", "sell": "buy"}
#: chart.trades resolutions -> (interval name, length in microseconds).
_RESOLUTIONS = {
    res: (f"{int(res) // 60}h" if int(res) >= 60 else f"{res}m", int(res) * 60_000_000)
    for res in ("1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720")
} | {"1D": ("1d", 86_400_000_000)}


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


class DeribitNormalizer(InstrumentNormalizer):
    """One Deribit instrument: book, trades (with liquidations), ticker, quote, candles, perpetual funding."""

    book_channels = ("book.",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        self.open_interest: float | None = None

    def books(self) -> list[Any]:
        return [self.book]

    # -- dispatch --------------------------------------------------------------------------------------------
    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        params = msg["params"]
        channel: str = params["channel"]
        data = params["data"]
        kind = channel.partition(".")[0]
        if kind == "book":
            return self.on_book(env, channel, data)
        if kind == "ticker":
            return self.on_ticker(env, data)
        if kind == "trades":
            return self.on_trades(env, data)
        if kind == "quote":
            return [self.best(env, data, ms_to_us(data["timestamp"]))]
        if kind == "chart":
            return [self.candle(env, channel, data)]
        if kind == "perpetual":
            return [self.interest(env, data)]
        raise BadFrame(f"unsupported Deribit channel {channel}")

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, channel: str, data: dict[str, Any]) -> list[Output]:
        event_ts = ms_to_us(data["timestamp"])
        if channel.count(".") == 4:
            return self.grouped_book(env, data, event_ts)
        kind = data["type"]
        if kind == "change":
            return self.on_change(env, data, event_ts)
        if kind != "snapshot":
            raise BadFrame(f"unknown Deribit book notification type {kind!r}")
        self.book.load_snapshot(
            ((float(price), float(amount), None, None) for _, price, amount in data["bids"]),
            ((float(price), float(amount), None, None) for _, price, amount in data["asks"]),
        )
        return self.book.publish_snapshot(event_ts, env.receipt_ts, data["change_id"])

    def grouped_book(self, env: RawEnvelope, data: dict[str, Any], event_ts: int) -> list[Output]:
        self.book.load_snapshot(
            ((float(price), float(amount), None, None) for price, amount in data["bids"]),
            ((float(price), float(amount), None, None) for price, amount in data["asks"]),
        )
        return self.book.publish_snapshot(event_ts, env.receipt_ts, data.get("change_id"))

    def on_change(self, env: RawEnvelope, data: dict[str, Any], event_ts: int) -> list[Output]:
        book = self.book
        if not book.valid:
            return []  # no snapshot yet, or resynced: wait for the next snapshot
        change_id: int = data["change_id"]
        last = book.sequence
        if data["prev_change_id"] != last:
            if last is not None and change_id <= last:
                return []
            reason = f"gap: prev_change_id {data['prev_change_id']} does not follow change_id {last}"
            return book.resync(event_ts, env.receipt_ts, reason)
        _apply(book, BID, data["bids"])
        _apply(book, ASK, data["asks"])
        return book.commit(event_ts, env.receipt_ts, change_id)

    # -- trades ----------------------------------------------------------------------------------------------
    def on_trades(self, env: RawEnvelope, data: list[dict[str, Any]]) -> list[Output]:
        name = self.instrument.venue_symbol
        out: list[Output] = []
        for trade in data:
            if trade.get("instrument_name", name) == name:
                out.extend(self.trade(env, trade))
        return out

    def trade(self, env: RawEnvelope, trade: dict[str, Any]) -> list[Output]:
        side = _TAKER_SIDES.get(trade["direction"])
        if side is None:
            raise BadFrame(f"unknown Deribit trade direction {trade['direction']!r}")
        event_ts = ms_to_us(trade["timestamp"])
        price, size = float(trade["price"]), float(trade["amount"])
        trade_id = str(trade["trade_id"])
        out = [self.out.trade(event_ts, env.receipt_ts, trade_id, price, size, side, trade.get("trade_seq"))]
        liquidated = trade.get("liquidation") or ""
        if "T" in liquidated:
            out.append(self.out.liquidation(event_ts, env.receipt_ts, side=side, price=price, size=size))
        if "M" in liquidated:
            out.append(self.out.liquidation(event_ts, env.receipt_ts, side=_OPPOSITE[side], price=price, size=size))
        return out

    # -- ticker, quote, candles ------------------------------------------------------------------------------
    def best(self, env: RawEnvelope, data: dict[str, Any], event_ts: int, **fields: Any) -> Output:
        """A ticker record from best bid/ask fields (an empty side, price 0 amount 0, becomes null)."""
        bid_size, ask_size = _num(data.get("best_bid_amount")), _num(data.get("best_ask_amount"))
        return self.out.ticker(
            event_ts,
            env.receipt_ts,
            bid_price=_num(data["best_bid_price"]) if bid_size else None,
            bid_size=bid_size or None,
            ask_price=_num(data["best_ask_price"]) if ask_size else None,
            ask_size=ask_size or None,
            **fields,
        )

    def on_ticker(self, env: RawEnvelope, data: dict[str, Any]) -> list[Output]:
        stats = data.get("stats") or {}
        event_ts = ms_to_us(data["timestamp"])
        mark, index = _num(data.get("mark_price")), _num(data.get("index_price"))
        out = [
            self.best(
                env,
                data,
                event_ts,
                last_price=_num(data.get("last_price")),
                volume_24h=_num(stats.get("volume")),
                mark_price=mark,
                index_price=index,
            )
        ]
        if "current_funding" in data:
            rate = float(data["current_funding"])
            out.append(self.out.funding(event_ts, env.receipt_ts, rate=rate, mark_price=mark, index_price=index))
        open_interest = _num(data.get("open_interest"))
        if open_interest is not None and open_interest != self.open_interest:
            self.open_interest = open_interest
            out.append(self.out.open_interest(event_ts, env.receipt_ts, open_interest=open_interest))
        return out

    def interest(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        """The ``perpetual`` channel: the current funding rate (``interest``) and the index."""
        return self.out.funding(
            ms_to_us(data["timestamp"]),
            env.receipt_ts,
            rate=float(data["interest"]),
            index_price=_num(data.get("index_price")),
        )

    def candle(self, env: RawEnvelope, channel: str, data: dict[str, Any]) -> Output:
        resolution = channel.rpartition(".")[2]
        if resolution not in _RESOLUTIONS:
            raise BadFrame(f"unknown Deribit chart resolution {resolution!r}")
        interval, length = _RESOLUTIONS[resolution]
        start = ms_to_us(data["tick"])
        return self.out.candle(
            env.receipt_ts,
            env.receipt_ts,
            interval=interval,
            start_ts=start,
            end_ts=start + length,
            open_=float(data["open"]),
            high=float(data["high"]),
            low=float(data["low"]),
            close=float(data["close"]),
            volume=float(data["volume"]),
            quote_volume=_num(data.get("cost")),
        )


def _apply(book: BookPublisher, side: int, levels: list[list[Any]]) -> None:
    """Apply one side of a change: ``new``/``change`` set a level, ``delete`` removes it."""
    for action, price, amount in levels:
        if action == "delete":
            book.change(side, float(price), 0.0)
        elif action == "new" or action == "change":
            book.change(side, float(price), float(amount))
        else:
            raise BadFrame(f"unknown Deribit book action {action!r}")
