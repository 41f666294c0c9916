"""Binance USD-M (``fstream``, ``/fapi``) and COIN-M (``dstream``, ``/dapi``) futures websocket streams.

Subclasses the spot module (`operators.venues.binance`): same framing (combined and raw streams), same REST
snapshot bridging with buffered diffs, same trade, ticker and candle records. What differs:

* Diff books (``<s>@depth``, ``@depth@0ms|100ms|250ms|500ms``), per Binance's futures "How to manage a local order
  book correctly": drop diffs with ``u < lastUpdateId``; the first applied diff has
  ``U <= lastUpdateId <= u``; every later diff's ``pu`` equals the previous diff's ``u``, else it is a gap (the
  book resyncs and waits for the next REST snapshot, ``/fapi/v1/depth`` or ``/dapi/v1/depth``, which carry
  ``E`` and ``T``). No checksums exist on this venue. Partial books ``@depthN`` are ``depthUpdate`` events that
  hold the top N levels (the spot base class recognises them by channel name) and are published as snapshots.
* ``@markPrice`` / ``@markPrice@1s`` (``markPriceUpdate``): ``funding`` with ``r`` the current rate, ``T`` the
  next funding time, ``p`` the mark and ``i`` the index price (absent on some COIN-M contracts). Dated
  contracts send an empty ``r`` and ``T`` = 0: they have no funding, so their mark and index go to ``ticker``.
  ``P`` is the estimated settle price, not a predicted funding rate (cryptofeed reads it as one; the Binance
  documentation does not), so ``predicted_rate`` stays null.
* ``@forceOrder`` and ``!forceOrder@arr`` (``forceOrder``): ``liquidations`` with ``side`` the liquidation
  order's side ``o.S`` (sell closes a long), ``price`` the average fill price ``o.ap`` (the order price ``o.p``
  when nothing filled), ``size`` the filled quantity ``o.z`` (else ``o.q``), ``status`` ``o.X`` and the event
  time ``o.T`` (else ``E``).
* ``<pair>_<contracttype>@continuousKline_<i>`` (``continuous_kline``): candles of the contract the stream
  follows, attributed through the exchangeInfo (pair, contractType) table (perpetuals without it too).
* REST ``openInterest`` polls: the spot base class turns ``{"openInterest", "time"}`` into ``open_interest``
  (COIN-M adds ``pair`` and ``contractType`` to the same shape; its open interest is in contracts).
* COIN-M klines: ``q`` is the base-asset volume, not a quote volume, so ``quote_volume`` is null there.

Live: `BinanceLive` (see `operators.venues.binance`) with the futures endpoints, ``/fapi/v1/depth`` or
``/dapi/v1/depth`` snapshots, and at most 200 streams per connection (the futures limit).

Symbols come from exchangeInfo (``contractType`` PERPETUAL -> ``BASE.QUOTE-PERP``; quarterly and monthly
contracts -> ``BASE.QUOTE-YYYYMMDD`` from the ``_YYMMDD`` suffix or ``deliveryDate``); without it, ``BTCUSDT``
and ``BTCUSD_PERP`` are perpetuals and ``BTCUSDT_240927`` is the 2024-09-27 future. All-market array streams
(``!markPrice@arr``, ``!ticker@arr``) concern many instruments in one frame and are not attributed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from operators.records import Output
from operators.symbols import future, perp, split_concatenated, yymmdd_to_date
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, Venue
from operators.venues.binance import BINANCE_KLINES, BinanceFramer, BinanceLive, BinanceNormalizer
from schemas.raw import RawEnvelope

__all__ = [
    "VENUES",
    "BinanceDeliveryFramer",
    "BinanceDeliveryNormalizer",
    "BinanceFuturesFramer",
    "BinanceFuturesNormalizer",
]

_CONTINUOUS = re.compile(r'^\{"stream":"([^"@_]+)_([a-z_]+)@(continuousKline_[^"]+)"')
_MARKET_WIDE = re.compile(r'^\{"stream":"!([^"@]+)')
_SIDES = {"SELL": "sell", "BUY": "buy"}


def _delivery_date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d")


class BinanceFuturesFramer(BinanceFramer):
    """USD-M framing: contract symbols, continuous-contract klines and the all-market liquidation stream."""

    #: What follows the pair in a perpetual's symbol (COIN-M ``BTCUSD_PERP``; USD-M perpetuals are the pair).
    perpetual_suffix = ""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        #: ``<pair>_<contracttype>`` (lower case, as in continuousKline stream names) -> contract symbol.
        self.contracts: dict[str, str] = {}

    # -- symbols ---------------------------------------------------------------------------------------------
    def symbol_from_info(self, info: dict[str, Any]) -> str:
        base, quote = info["baseAsset"], info["quoteAsset"]
        kind = info.get("contractType") or ""
        if "PERPETUAL" in kind:
            return perp(base, quote)
        if not kind:
            raise ValueError(f"{info['symbol']} has no contract type")
        _, sep, suffix = info["symbol"].partition("_")
        if sep and suffix.isdigit():
            return future(base, quote, yymmdd_to_date(suffix))
        return future(base, quote, _delivery_date(info["deliveryDate"]))

    def symbol_from_name(self, venue_symbol: str) -> str:
        pair, _, suffix = venue_symbol.partition("_")
        base, quote = split_concatenated(pair)
        if not suffix or suffix == "PERP":
            return perp(base, quote)
        return future(base, quote, yymmdd_to_date(suffix))

    def learn(self, exchange_info: dict[str, Any]) -> None:
        super().learn(exchange_info)
        for info in exchange_info.get("symbols", []):
            pair, kind = info.get("pair"), info.get("contractType")
            if pair and kind:
                self.contracts[f"{pair}_{kind}".lower()] = info["symbol"]

    # -- events ----------------------------------------------------------------------------------------------
    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        if text.startswith('{"stream":"!'):
            return self._market_wide(conn, text, ts)
        if text.find("@continuousKline_", 0, 96) >= 0:
            return self._continuous(conn, text, ts)
        return super().on_recv(conn, text, ts)

    def _market_wide(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        """``!forceOrder@arr`` and ``!bookTicker`` carry one event per frame; array streams are not attributed."""
        match = _MARKET_WIDE.match(text)
        try:
            data = orjson.loads(text)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return []
        if match is None or not isinstance(data, dict):
            return []
        order = data.get("o")
        venue_symbol = order.get("s") if isinstance(order, dict) else data.get("s")
        if not isinstance(venue_symbol, str):
            return []
        return [self.envelope(self.instrument(venue_symbol), match.group(1), conn, text, ts)]

    def _continuous(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _CONTINUOUS.match(text)
        if match is None:
            return super().on_recv(conn, text, ts)
        pair, kind, channel = match.groups()
        venue_symbol = self.contracts.get(f"{pair}_{kind}")
        if venue_symbol is None and kind == "perpetual":
            venue_symbol = pair.upper() + self.perpetual_suffix
        if venue_symbol is None:
            return []  # a dated contract we cannot name without exchangeInfo
        return [self.envelope(self.instrument(venue_symbol), channel, conn, text, ts)]


class BinanceDeliveryFramer(BinanceFuturesFramer):
    """COIN-M framing: perpetuals are ``<pair>_PERP``."""

    perpetual_suffix = "_PERP"


class BinanceFuturesNormalizer(BinanceNormalizer):
    """One USD-M instrument: the spot channels plus funding, liquidations and the futures diff-book rules."""

    # -- sequence rules --------------------------------------------------------------------------------------
    def is_stale(self, delta: dict[str, Any], last: int) -> bool:
        u: int = delta["u"]
        return u < last

    def bridges(self, delta: dict[str, Any], last: int) -> bool:
        U: int = delta["U"]
        u: int = delta["u"]
        return U <= last <= u

    def continues(self, delta: dict[str, Any], last: int) -> bool:
        pu: int = delta["pu"]
        return pu == last

    def describe_gap(self, delta: dict[str, Any], last: int) -> str:
        return f"gap: expected pu={last}, got pu={delta['pu']} (U={delta['U']} u={delta['u']})"

    # -- futures channels ------------------------------------------------------------------------------------
    def on_other(self, env: RawEnvelope, data: dict[str, Any], event: Any) -> list[Output]:
        if event == "markPriceUpdate":
            return [self.mark_price(env, data)]
        if event == "forceOrder":
            return [self.liquidation(env, data)]
        if event == "continuous_kline":
            return [self.candle(env, data)]
        return super().on_other(env, data, event)

    def mark_price(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        event_ts = ms_to_us(data["E"])
        mark = float(data["p"])
        index = float(data["i"]) if data.get("i") else None
        rate = data.get("r")
        next_funding = data.get("T")
        if rate and next_funding:
            return self.out.funding(
                event_ts,
                env.receipt_ts,
                rate=float(rate),
                next_funding_ts=ms_to_us(next_funding),
                mark_price=mark,
                index_price=index,
            )
        return self.out.ticker(event_ts, env.receipt_ts, mark_price=mark, index_price=index)

    def liquidation(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        order = data["o"]
        side = _SIDES.get(order["S"])
        if side is None:
            raise BadFrame(f"forceOrder with unknown side {order['S']!r}")
        price = float(order.get("ap") or 0) or float(order["p"])
        size = float(order.get("z") or 0) or float(order["q"])
        return self.out.liquidation(
            ms_to_us(order.get("T") or data["E"]),
            env.receipt_ts,
            side=side,
            price=price,
            size=size,
            status=order.get("X"),
        )


class BinanceDeliveryNormalizer(BinanceFuturesNormalizer):
    """One COIN-M instrument: as USD-M, but kline ``q`` is base-asset volume, so no quote volume is given."""

    def candle(self, env: RawEnvelope, data: dict[str, Any]) -> Output:
        topic, record = super().candle(env, data)
        record["quote_volume"] = None
        return topic, record


_CHANNELS = ("trades", "lob", "ticker", "candles", "funding", "open_interest", "liquidations")
_LIVE_CHANNELS = (
    r"depth(5|10|20)?(@(0|100|250|500)ms)?",
    "aggTrade",
    "bookTicker",
    BINANCE_KLINES,
    r"markPrice(@1s)?",
    "forceOrder",
)
_LIVE_DEFAULTS = ("depth@100ms", "aggTrade", "bookTicker", "markPrice@1s", "forceOrder")

VENUES = [
    Venue(
        "binance_futures",
        ("BINANCE_FUTURES",),
        BinanceFuturesFramer,
        BinanceFuturesNormalizer,
        "Binance USD-M futures",
        _CHANNELS,
        live=BinanceLive(
            ws_url="wss://fstream.binance.com/stream",
            rest_url="https://fapi.binance.com",
            channels=_LIVE_CHANNELS,
            default_channels=_LIVE_DEFAULTS,
            default_instruments=("BTC.USDT-PERP", "ETH.USDT-PERP"),
            instrument_lists=("/fapi/v1/exchangeInfo",),
            max_subscriptions=200,
            rotate_after_s=23 * 3600.0,
            snapshot_path="/fapi/v1/depth",
        ),
    ),
    Venue(
        "binance_delivery",
        ("BINANCE_DELIVERY",),
        BinanceDeliveryFramer,
        BinanceDeliveryNormalizer,
        "Binance COIN-M futures",
        _CHANNELS,
        live=BinanceLive(
            ws_url="wss://dstream.binance.com/stream",
            rest_url="https://dapi.binance.com",
            channels=_LIVE_CHANNELS,
            default_channels=_LIVE_DEFAULTS,
            default_instruments=("BTC.USD-PERP", "ETH.USD-PERP"),
            instrument_lists=("/dapi/v1/exchangeInfo",),
            max_subscriptions=200,
            rotate_after_s=23 * 3600.0,
            snapshot_path="/dapi/v1/depth",
        ),
    ),
]
