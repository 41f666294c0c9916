"""Deribit JSON-RPC websocket v2 (``wss://www.deribit.com/ws/api/v2``), public market-data channels.

Notifications are ``{"method": "subscription", "params": {"channel": .., "data": ..}}``; RPC responses
(``id``), errors and ``heartbeat``/``test_request`` frames are dropped by the framer, as are channels that name
no instrument (``deribit_price_index``, ``platform_state``, ...).

* ``book.<inst>.raw`` / ``.100ms`` / ``.agg2``: ``type`` ``snapshot`` then ``change`` with levels
  ``[action, price, amount]`` (``new``/``change`` set the level, ``delete`` removes it). A change's
  ``prev_change_id`` must equal the ``change_id`` of the notification before it; otherwise it is a gap: resync,
  then nothing until the next snapshot. A change whose ``change_id`` is not above the last one is a repeat and
  ignored. Deribit sends no checksum.
* ``book.<inst>.<group>.<depth>.<interval>``: every notification is a whole (top ``depth``) book of
  ``[price, amount]`` levels, published as a venue snapshot.
* ``trades.<inst>.<interval>`` and the multi-instrument ``trades.<kind>.<currency>.<interval>`` (the framer
  gives the frame to each instrument it names; each normalizer takes its own trades). ``direction`` is the taker
  side. A trade with ``liquidation`` ``M``/``T``/``MT`` also yields one ``liquidations`` record per liquidated
  party, with that party's order side: the taker's is ``direction``, the maker's the opposite. This follows
  Deribit's documentation; cryptofeed always reports ``direction``.
* ``ticker.<inst>.<interval>``: ``ticker``; ``open_interest`` whenever ``open_interest`` changes (every ticker
  carries it); for perpetuals a ``funding`` record with ``rate`` = ``current_funding`` (the same value the
  ``perpetual`` channel calls ``interest``). ``funding_8h`` (funding realized over the trailing 8 h) has no
  field in the funding record and is not carried. Deribit reports an empty book side as price 0, amount 0:
  that becomes a null bid or ask.
* ``quote.<inst>``: best bid/ask as a ``ticker``. ``chart.trades.<inst>.<resolution>``: ``candles``
  (no venue event time: ``event_timestamp`` is the receipt time; whether a bar is closed is not said).
  ``perpetual.<inst>.<interval>``: ``funding`` with ``rate`` = ``interest``.

``incremental_ticker`` and unknown notification shapes on instrument channels are dead-lettered.

Live (`DeribitLive`): ``public/set_heartbeat`` (30 s) first, answering each ``test_request`` with
``public/test`` as Deribit requires, then ``public/subscribe`` with at most 100 channels per frame. Configured
channels omit the instrument (``book.100ms`` subscribes ``book.<instrument>.100ms``); ``raw`` intervals need an
authorized connection on Deribit today, so the defaults use ``100ms``.

Symbols: ``BTC-PERPETUAL`` -> ``BTC.USD-PERP``, ``BTC_USDC-PERPETUAL`` -> ``BTC.USDC-PERP``, ``BTC-24SEP21``
-> ``BTC.USD-20210924``, ``BTC-24SEP21-8000-P`` -> ``BTC.USD-20210924-8000-P`` (``d`` in a strike is its
decimal point), ``BTC_USDC`` -> ``BTC.USDC``; ``get_instruments`` responses teach them where captured. Inverse
options quoted in their base currency are named against USD, the currency of their strike.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from operators.book import ASK, BID, BookPublisher
from operators.records import Output
from operators.symbols import Instrument, future, option, perp, spot, yymmdd_to_date
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, Venue
from operators.venues.live import LiveSpec, Subscription, batched, compact_json
from schemas.raw import RawEnvelope

__all__ = ["VENUES", "DeribitFramer", "DeribitLive", "DeribitNormalizer", "symbol_from_info", "symbol_from_name"]

_FRAME_HEAD = re.compile(r'^\{"jsonrpc":"2\.0","method":"subscription","params":\{"channel":"([^"]+)"')
_DERIVATIVE = re.compile(r"^([A-Z0-9]+)(?:_([A-Z0-9]+))?-(PERPETUAL|\d{1,2}[A-Z]{3}\d{2})(?:-(\d+(?:d\d+)?)-([CP]))?$")
_SPOT = re.compile(r"^([A-Z0-9]+)_([A-Z0-9]+)$")
#: Position of the instrument name in the dot-separated channel, per channel kind.
_INSTRUMENT_AT = {"book": 1, "ticker": 1, "trades": 1, "quote": 1, "perpetual": 1, "incremental_ticker": 1, "chart": 2}
_TAKER_SIDES = {"buy": "buy", "sell": "sell"}
_OPPOSITE = {"buy": "sell", "sell": "buy"}
#: chart.trades resolutions -> (interval name, length in microseconds).
_RESOLUTIONS = {
    res: (f"{int(res) // 60}h" if int(res) >= 60 else f"{res}m", int(res) * 60_000_000)
    for res in ("1", "3", "5", "10", "15", "30", "60", "120", "180", "360", "720")
} | {"1D": ("1d", 86_400_000_000)}


def symbol_from_name(name: str) -> str:
    match = _DERIVATIVE.match(name)
    if match is not None:
        base, quote, expiry, strike, kind = match.groups()
        quote = quote or "USD"
        if expiry == "PERPETUAL":
            return perp(base, quote)
        date = yymmdd_to_date(expiry)
        if strike is None:
            return future(base, quote, date)
        return option(base, quote, date, strike.replace("d", "."), kind)
    match = _SPOT.match(name)
    if match is not None:
        return spot(*match.groups())
    raise ValueError(f"not a Deribit instrument name: {name!r}")


def _strike_text(strike: float) -> str:
    strike = float(strike)
    return str(int(strike)) if strike.is_integer() else repr(strike)


def symbol_from_info(info: dict[str, Any]) -> str:
    """The symbol of one ``public/get_instruments`` entry; ValueError for combos."""
    kind = info["kind"]
    base = info["base_currency"]
    quote = info.get("counter_currency") or info["quote_currency"]
    if quote == base:
        quote = "USD"  # inverse instruments quoted in their base currency are priced against USD
    if kind == "spot":
        return spot(base, quote)
    if kind == "future" and info.get("settlement_period") == "perpetual":
        return perp(base, quote)
    date = datetime.fromtimestamp(info["expiration_timestamp"] / 1000, tz=UTC).strftime("%Y%m%d")
    if kind == "future":
        return future(base, quote, date)
    if kind == "option":
        return option(base, quote, date, _strike_text(info["strike"]), info["option_type"])
    raise ValueError(f"no symbol form for Deribit {kind} {info.get('instrument_name')!r}")


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


class DeribitFramer(Framer):
    """Attributes subscription notifications to instruments by channel name."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    def instrument(self, name: str) -> Instrument:
        inst = self.table.get(name)
        if inst is None:
            try:
                symbol = symbol_from_name(name)
            except ValueError:
                symbol = name  # combos: keep the venue symbol rather than guess
            inst = self.table[name] = Instrument(self.exchange, symbol, name)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, response: dict[str, Any]) -> None:
        for info in response.get("result") or []:
            try:
                symbol = symbol_from_info(info)
            except (KeyError, ValueError, TypeError):
                continue
            name = info["instrument_name"]
            self.table[name] = Instrument(self.exchange, symbol, name)

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _FRAME_HEAD.match(text)
        channel = match.group(1) if match is not None else self._channel(text)
        if channel is None:
            return []
        return [self.envelope(self.instrument(name), channel, conn, text, ts) for name in self._names(channel, text)]

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and "get_instruments" in url:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                self.learn(orjson.loads(text))
        return []

    @staticmethod
    def _channel(text: str) -> str | None:
        """The channel of a notification whose keys come in another order; None for anything else."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(msg, dict) or msg.get("method") != "subscription":
            return None  # RPC responses, errors, heartbeats and test_request
        params = msg.get("params")
        channel = params.get("channel") if isinstance(params, dict) else None
        return channel if isinstance(channel, str) else None

    @staticmethod
    def _names(channel: str, text: str) -> list[str]:
        parts = channel.split(".")
        if parts[0] == "trades" and len(parts) == 4:
            return DeribitFramer._trade_instruments(text)
        at = _INSTRUMENT_AT.get(parts[0])
        if at is None or len(parts) <= at or (parts[0] == "chart" and parts[1] != "trades"):
            return []
        return [parts[at]]

    @staticmethod
    def _trade_instruments(text: str) -> list[str]:
        """The instruments of a ``trades.<kind>.<currency>.<interval>`` notification, in order of appearance."""
        try:
            trades = orjson.loads(text)["params"]["data"]
            return list(dict.fromkeys(trade["instrument_name"] for trade in trades))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return []


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


_HEARTBEAT_REQUEST = '{"jsonrpc":"2.0","id":1,"method":"public/set_heartbeat","params":{"interval":30}}'
_HEARTBEAT_ANSWER = '{"jsonrpc":"2.0","id":2,"method":"public/test","params":{}}'


@dataclass(frozen=True)
class DeribitLive(LiveSpec):
    """Deribit JSON-RPC subscriptions (see the module docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return not channel.startswith("perpetual.") or sub.market == "perp"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        channels = []
        for sub in subs:
            if sub.channel.startswith("chart.trades."):
                channels.append(f"chart.trades.{sub.venue_symbol}.{sub.channel.removeprefix('chart.trades.')}")
            else:
                kind, dot, rest = sub.channel.partition(".")
                channels.append(f"{kind}.{sub.venue_symbol}{dot}{rest}")
        subscribe = [
            compact_json({"jsonrpc": "2.0", "id": 3 + n, "method": "public/subscribe", "params": {"channels": chunk}})
            for n, chunk in enumerate(batched(channels, 100))
        ]
        return [_HEARTBEAT_REQUEST, *subscribe]

    def reply(self, text: str) -> str | None:
        if '"method":"heartbeat"' in text and '"test_request"' in text:
            return _HEARTBEAT_ANSWER
        return None


VENUES = [
    Venue(
        "deribit",
        ("DERIBIT",),
        DeribitFramer,
        DeribitNormalizer,
        "Deribit JSON-RPC websocket v2",
        channels=("book", "trades", "ticker", "quote", "chart.trades", "perpetual"),
        live=DeribitLive(
            ws_url="wss://www.deribit.com/ws/api/v2",
            rest_url="https://www.deribit.com",
            channels=(
                r"(book|trades|ticker|perpetual)\.(raw|100ms|agg2)",
                r"book\.(none|1|2|5|10|25|100|250)\.(1|10|20)\.(100ms|agg2)",
                "quote",
                r"chart\.trades\.(1|3|5|10|15|30|60|120|180|360|720|1D)",
            ),
            default_channels=("book.100ms", "trades.100ms", "ticker.100ms"),
            default_instruments=("BTC.USD-PERP", "ETH.USD-PERP"),
            instrument_lists=tuple(
                f"/api/v2/public/get_instruments?currency={coin}&expired=false" for coin in ("BTC", "ETH", "USDC")
            ),
            max_subscriptions=300,
        ),
    )
]
