"""The Bybit instrument normalizer: book (``u`` sequence), trades, merged tickers, candles, liquidations."""

from __future__ import annotations

from typing import Any

from operators.book import ASK, BID
from operators.records import Output
from operators.symbols import Instrument, market_of
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, InstrumentNormalizer, NormalizerSettings
from schemas.raw import RawEnvelope

__all__ = ["BybitNormalizer"]

_TAKER = {"Buy": "buy", "Sell": "sell"}
#: Bybit names the liquidated position's side; the liquidation order is on the other side.
_LIQUIDATION_ORDER = {"Buy": "sell", "Sell": "buy"}
_INTERVALS = dict(
    zip(
        ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M"),
        ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w", "1M"),
        strict=True,
    )
)

# Ticker state: slot -> (record group it feeds, venue fields filling it; option tickers say bidPrice, not bid1Price).
_TICKER, _FUNDING, _OPEN_INTEREST = 1, 2, 4
_TICKER_SLOTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "bid": (_TICKER, ("bid1Price", "bidPrice")),
    "bid_size": (_TICKER, ("bid1Size", "bidSize")),
    "ask": (_TICKER, ("ask1Price", "askPrice")),
    "ask_size": (_TICKER, ("ask1Size", "askSize")),
    "last": (_TICKER, ("lastPrice",)),
    "volume": (_TICKER, ("volume24h",)),
    "mark": (_TICKER, ("markPrice",)),
    "index": (_TICKER, ("indexPrice",)),
    "rate": (_FUNDING, ("fundingRate",)),
    "next_funding": (_FUNDING, ("nextFundingTime",)),
    "funding_hours": (_FUNDING, ("fundingIntervalHour",)),
    "oi": (_OPEN_INTEREST, ("openInterest",)),
    "oi_value": (_OPEN_INTEREST, ("openInterestValue",)),
}
_SLOTS = {field: slot for slot, (_, fields) in _TICKER_SLOTS.items() for field in fields}
_GROUP = {slot: group for slot, (group, _) in _TICKER_SLOTS.items()}


def _num(text: str | None) -> float | None:
    return float(text) if text else None


def _listed(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise BadFrame(f"Bybit data is a {type(data).__name__}, not a list")
    return data


class BybitNormalizer(InstrumentNormalizer):
    """One Bybit instrument: book, trades, merged ticker (ticker, funding, open interest), candles, liquidations."""

    book_channels = ("orderbook",)

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        super().__init__(instrument, settings)
        self.book = self.new_book()
        #: Depth of the orderbook channel feeding the book (the deepest seen).
        self.book_depth: int | None = None
        #: Merged ticker fields (slot -> venue text); None until the first ticker snapshot.
        self.ticker: dict[str, str] | None = None
        market = market_of(instrument.symbol)
        self.inverse = market in ("perp", "future") and instrument.symbol.split("-")[0].endswith(".USD")

    def books(self) -> list[Any]:
        return [self.book]

    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        name, _, argument = env.channel.partition(".")
        if name == "orderbook":
            return self.on_book(env, msg, int(argument))
        if name == "publicTrade":
            return self.on_trades(env, msg["data"])
        if name == "tickers":
            return self.on_ticker(env, msg)
        if name == "kline":
            return self.on_klines(env, msg)
        if name == "allLiquidation":
            return [self.liquidation(env.receipt_ts, x["T"], x["S"], x["p"], x["v"]) for x in _listed(msg["data"])]
        if name == "liquidation":
            data = msg["data"]
            return [self.liquidation(env.receipt_ts, data["updatedTime"], data["side"], data["price"], data["size"])]
        raise BadFrame(f"unknown Bybit channel {env.channel!r}")

    # -- book ------------------------------------------------------------------------------------------------
    def on_book(self, env: RawEnvelope, msg: dict[str, Any], depth: int) -> list[Output]:
        if self.book_depth is not None and depth < self.book_depth:
            return []  # a shallower subscription of a book already followed deeper
        data = msg["data"]
        update_id: int = data["u"]
        kind = msg["type"]
        event_ts = ms_to_us(msg.get("cts") or msg["ts"])
        if kind == "snapshot" or update_id == 1:
            self.book_depth = depth
            return self.on_book_snapshot(env, data, event_ts, update_id)
        if kind != "delta":
            raise BadFrame(f"unknown Bybit orderbook type {kind!r}")
        book = self.book
        last = book.sequence
        if depth != self.book_depth or not book.valid or last is None:
            return []  # waiting for a snapshot
        if update_id != last + 1:
            return book.resync(event_ts, env.receipt_ts, f"gap: expected u={last + 1}, got u={update_id}")
        for price, size in data["b"]:
            book.change(BID, float(price), float(size))
        for price, size in data["a"]:
            book.change(ASK, float(price), float(size))
        return book.commit(event_ts, env.receipt_ts, update_id)

    def on_book_snapshot(self, env: RawEnvelope, data: dict[str, Any], event_ts: int, update_id: int) -> list[Output]:
        self.book.load_snapshot(
            ((float(p), float(q), None, None) for p, q in data["b"]),
            ((float(p), float(q), None, None) for p, q in data["a"]),
        )
        return self.book.publish_snapshot(event_ts, env.receipt_ts, update_id)

    # -- trades, candles, liquidations -----------------------------------------------------------------------
    def on_trades(self, env: RawEnvelope, data: list[dict[str, Any]]) -> list[Output]:
        trade = self.out.trade
        receipt_ts = env.receipt_ts
        return [
            trade(ms_to_us(t["T"]), receipt_ts, str(t["i"]), float(t["p"]), float(t["v"]), _TAKER[t["S"]], t.get("seq"))
            for t in _listed(data)
        ]

    def on_klines(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        inverse = self.inverse
        return [
            self.out.candle(
                ms_to_us(k.get("timestamp") or msg["ts"]),
                env.receipt_ts,
                interval=_INTERVALS[k["interval"]],
                start_ts=ms_to_us(k["start"]),
                end_ts=ms_to_us(int(k["end"]) + 1),
                open_=float(k["open"]),
                high=float(k["high"]),
                low=float(k["low"]),
                close=float(k["close"]),
                volume=float(k["volume"]),
                quote_volume=None if inverse else float(k["turnover"]),
                closed=bool(k["confirm"]),
            )
            for k in _listed(msg["data"])
        ]

    def liquidation(self, receipt_ts: int, ts_ms: int, position_side: str, price: str, size: str) -> Output:
        return self.out.liquidation(
            ms_to_us(ts_ms), receipt_ts, side=_LIQUIDATION_ORDER[position_side], price=float(price), size=float(size)
        )

    # -- tickers ---------------------------------------------------------------------------------------------
    def on_ticker(self, env: RawEnvelope, msg: dict[str, Any]) -> list[Output]:
        kind = msg["type"]
        if kind == "snapshot":
            changed = self.replace_ticker(msg["data"])
        elif kind == "delta":
            changed = self.merge_ticker(self.ticker, msg["data"]) if self.ticker is not None else 0
        else:
            raise BadFrame(f"unknown Bybit tickers type {kind!r}")
        if not changed:
            return []
        event_ts = ms_to_us(msg["ts"])
        out: list[Output] = []
        if changed & _TICKER:
            out.append(self.ticker_record(event_ts, env.receipt_ts, msg.get("cs")))
        if changed & _FUNDING:
            out.extend(self.funding_record(event_ts, env.receipt_ts))
        if changed & _OPEN_INTEREST:
            out.extend(self.open_interest_record(event_ts, env.receipt_ts))
        return out

    def replace_ticker(self, data: dict[str, Any]) -> int:
        """Install a full ticker; returns the groups whose fields differ from the previous state."""
        old = self.ticker or {}
        new = {_SLOTS[key]: value for key, value in data.items() if key in _SLOTS}
        self.ticker = new
        changed = 0
        for slot in old.keys() | new.keys():
            if old.get(slot) != new.get(slot):
                changed |= _GROUP[slot]
        return changed

    @staticmethod
    def merge_ticker(state: dict[str, str], data: dict[str, Any]) -> int:
        """Apply a ticker delta to ``state``; returns the groups whose fields changed."""
        changed = 0
        for key, value in data.items():
            slot = _SLOTS.get(key)
            if slot is not None and state.get(slot) != value:
                state[slot] = value
                changed |= _GROUP[slot]
        return changed

    def ticker_record(self, event_ts: int, receipt_ts: int, sequence: int | None) -> Output:
        state = self.ticker or {}
        return self.out.ticker(
            event_ts,
            receipt_ts,
            bid_price=_num(state.get("bid")),
            bid_size=_num(state.get("bid_size")),
            ask_price=_num(state.get("ask")),
            ask_size=_num(state.get("ask_size")),
            last_price=_num(state.get("last")),
            volume_24h=_num(state.get("volume")),
            mark_price=_num(state.get("mark")),
            index_price=_num(state.get("index")),
            sequence=sequence,
        )

    def funding_record(self, event_ts: int, receipt_ts: int) -> list[Output]:
        state = self.ticker or {}
        rate = _num(state.get("rate"))
        if rate is None:
            return []  # dated futures carry an empty fundingRate
        next_funding = state.get("next_funding")
        return [
            self.out.funding(
                event_ts,
                receipt_ts,
                rate=rate,
                next_funding_ts=ms_to_us(next_funding) if next_funding and next_funding != "0" else None,
                interval_hours=_num(state.get("funding_hours")),
                mark_price=_num(state.get("mark")),
                index_price=_num(state.get("index")),
            )
        ]

    def open_interest_record(self, event_ts: int, receipt_ts: int) -> list[Output]:
        state = self.ticker or {}
        open_interest = _num(state.get("oi"))
        if open_interest is None:
            return []
        value = None if self.inverse else _num(state.get("oi_value"))
        return [self.out.open_interest(event_ts, receipt_ts, open_interest=open_interest, open_interest_value=value)]
