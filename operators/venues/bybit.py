"""Bybit v5 public websockets: ``wss://stream.bybit.com/v5/public/{spot,linear,inverse,option}``.

Channels (topic ``<channel>.<symbol>``):

* ``orderbook.<depth>`` (1, 25, 50, 100, 200, 500, 1000): ``type`` ``snapshot`` replaces the book (Bybit also
  re-sends one at any time, and a frame with ``u == 1`` is a full book after a service restart, whatever its
  ``type``); every ``delta`` must carry ``u`` = previous ``u`` + 1, anything else is a gap: one resync, then
  nothing until the next snapshot. Bybit sends no checksum. Bybit keeps the book to the subscribed depth
  itself (it deletes levels leaving the window), so the local book is not truncated. One book per
  instrument: it follows the deepest depth subscribed, frames of shallower depths are ignored.
* ``publicTrade``: ``S`` is the taker side, ``i`` the trade id, ``seq`` the cross sequence. Block trades
  (``BT``) and RPI trades are trades of the instrument and are emitted too.
* ``tickers``: linear/inverse send a snapshot, then deltas with only the changed fields; spot and option send
  snapshots. The merged state of the fields used (best bid/ask, last, 24 h volume, mark, index, funding,
  open interest) is kept per instrument. A ``ticker`` record goes out when bid/ask/last/volume/mark/index
  change, ``funding`` when ``fundingRate``/``nextFundingTime``/``fundingIntervalHour`` change (it carries the
  current mark and index), ``open_interest`` when ``openInterest``/``openInterestValue`` change. Deltas
  before the first snapshot are ignored. Spot's ``usdIndexPrice`` is a coin's USD index, not the pair's, so it
  is not used as ``index_price``.
* ``kline.<interval>`` (1..720, D, W, M -> 1m..12h, 1d, 1w, 1M); ``end`` is inclusive in ms, so the exclusive
  end is ``end + 1`` ms; ``confirm`` -> ``closed``.
* ``allLiquidation`` and the older ``liquidation``: Bybit's side is the side of the *liquidated position*
  ("Buy" = a long was liquidated), so the liquidation *order* side recorded is the opposite (Buy -> sell).
  cryptofeed passes Bybit's side through unchanged; this module follows Bybit's documentation instead.

Inverse contracts: sizes and volumes are in contracts (1 USD each) and Bybit's ``turnover`` and
``openInterestValue`` are in the base coin, so ``quote_volume`` and ``open_interest_value`` are left null.

Symbols: the market comes from the connection URL, because ``BTCUSDT`` is both a spot pair and a linear
perpetual. REST ``instruments-info`` responses name base, quote, contract type and delivery time; without
them symbols are parsed (``BTCUSDT-14AUG26``, ``BTCPERP`` = USDC perpetual, ``BTCUSDH25`` = inverse future
expiring on the last Friday of the month, ``BTC-27DEC24-100000-C[-USDT]`` option quoted in USD unless a
quote suffix is given). A symbol that cannot be parsed keeps the venue symbol (``-PERP`` appended off spot).
Subscription acks, pongs and error replies carry no ``topic`` and are dropped by the framer.

Live (`BybitLive`): one connection per market (``/v5/public/spot``, ``linear``, ``inverse``, ``option``: the URL
is what tells ``BTCUSDT`` spot from perpetual), ``{"op":"subscribe","args":["<channel>.<symbol>",..]}`` with at
most 10 arguments per frame (the spot limit), and ``{"op":"ping"}`` every 20 s as Bybit requires.
"""

from __future__ import annotations

import calendar
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

from operators.book import ASK, BID
from operators.records import Output
from operators.symbols import Instrument, future, market_of, option, perp, split_concatenated, spot, yymmdd_to_date
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, Venue
from operators.venues.live import LiveSpec, Subscription, batched, compact_json
from schemas.raw import RawEnvelope

__all__ = ["VENUES", "BybitFramer", "BybitLive", "BybitNormalizer"]

_CATEGORIES = frozenset(("spot", "linear", "inverse", "option"))
_TOPIC = '"topic":"'
_WITH_ARGUMENT = frozenset(("orderbook", "kline"))
_INVERSE = re.compile(r"^([A-Z0-9]+)USD(?:([FGHJKMNQUVXZ])(\d{2}))?$")
_MONTH_CODES = "FGHJKMNQUVXZ"

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


def _ms_date(ms: str | int) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y%m%d")


def _last_friday(year: int, month: int) -> str:
    last = calendar.monthrange(year, month)[1]
    day = last - (calendar.weekday(year, month, last) - calendar.FRIDAY) % 7
    return f"{year:04d}{month:02d}{day:02d}"


def _category_of(url: str) -> str | None:
    name = urlparse(url).path.rstrip("/").rpartition("/")[2]
    return name if name in _CATEGORIES else None


def _guess_category(venue_symbol: str) -> str:
    if venue_symbol.count("-") >= 3:
        return "option"
    return "inverse" if _INVERSE.match(venue_symbol) else "linear"


def _symbol_from_info(category: str, info: dict[str, Any]) -> str:
    """The normalized symbol of one ``instruments-info`` entry."""
    base, quote = info["baseCoin"], info["quoteCoin"]
    if category == "spot":
        return spot(base, quote)
    if category == "option":
        parts = info["symbol"].split("-")
        return option(base, quote, _ms_date(info["deliveryTime"]), parts[2], parts[3])
    if info["contractType"].endswith("Futures"):
        return future(base, quote, _ms_date(info["deliveryTime"]))
    return perp(base, quote)


def _symbol_from_name(category: str, venue_symbol: str) -> str:
    """The normalized symbol parsed from the venue symbol alone; raises ValueError when it cannot be."""
    if category == "spot":
        return spot(*split_concatenated(venue_symbol))
    if category == "option":
        base, date, strike, kind, *rest = venue_symbol.split("-")
        if kind not in ("C", "P"):
            raise ValueError(f"not an option symbol: {venue_symbol!r}")
        return option(base, rest[0] if rest else "USD", yymmdd_to_date(date), strike, kind)
    if category == "inverse":
        match = _INVERSE.match(venue_symbol)
        if match is None:
            raise ValueError(f"not an inverse symbol: {venue_symbol!r}")
        base, month, year = match.groups()
        if month is None:
            return perp(base, "USD")
        return future(base, "USD", _last_friday(2000 + int(year), _MONTH_CODES.index(month) + 1))
    if "-" in venue_symbol:
        left, _, date = venue_symbol.rpartition("-")
        try:
            base, quote = split_concatenated(left)
        except ValueError:
            base, quote = left, "USDC"  # USDC futures: BTC-27DEC24
        return future(base, quote, yymmdd_to_date(date))
    if venue_symbol.endswith("PERP"):
        return perp(venue_symbol[:-4], "USDC")
    return perp(*split_concatenated(venue_symbol))


class BybitFramer(Framer):
    """Attributes Bybit frames to instruments by topic, with the market taken from the connection URL."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[tuple[str, str], Instrument] = {}
        self._categories: dict[str, str | None] = {}

    def instrument(self, category: str | None, venue_symbol: str) -> Instrument:
        market = category or _guess_category(venue_symbol)
        inst = self.table.get((market, venue_symbol))
        if inst is None:
            try:
                symbol = _symbol_from_name(market, venue_symbol)
            except ValueError:
                symbol = venue_symbol if market == "spot" else f"{venue_symbol}-PERP"
            inst = self.table[(market, venue_symbol)] = Instrument(self.exchange, symbol, venue_symbol)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, category: str, response: dict[str, Any]) -> None:
        result = response.get("result") or {}
        category = result.get("category") or category
        for info in result.get("list") or []:
            try:
                symbol = _symbol_from_info(category, info)
            except (KeyError, ValueError, IndexError):
                continue
            self.table[(category, info["symbol"])] = Instrument(self.exchange, symbol, info["symbol"])

    # -- events ----------------------------------------------------------------------------------------------
    def on_connect(self, conn: str, url: str, ts: int) -> list[RawEnvelope]:
        self._categories[conn] = _category_of(url)
        return super().on_connect(conn, url, ts)

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        topic = self.topic(text)
        if not topic:
            return []  # subscription acks, pongs, error replies
        name, _, rest = topic.partition(".")
        if name in _WITH_ARGUMENT:
            argument, _, venue_symbol = rest.partition(".")
            channel = f"{name}.{argument}"
        else:
            channel, venue_symbol = name, rest
        if not venue_symbol:
            return []
        inst = self.instrument(self._categories.get(conn), venue_symbol)
        return [self.envelope(inst, channel, conn, text, ts)]

    @staticmethod
    def topic(text: str) -> str | None:
        """The frame's topic: a cheap scan of Bybit's compact JSON, a full parse for anything else."""
        start = text.find(_TOPIC)
        if start >= 0:
            start += len(_TOPIC)
            return text[start : text.find('"', start)]
        if '"topic"' not in text:
            return None
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        topic = msg.get("topic") if isinstance(msg, dict) else None
        return topic if isinstance(topic, str) else None

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and urlparse(url).path.endswith("instruments-info"):
            category = (parse_qs(urlparse(url).query).get("category") or [""])[0]
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                self.learn(category, orjson.loads(text))
        return []


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


@dataclass(frozen=True)
class BybitLive(LiveSpec):
    """Bybit v5 public subscriptions (see the module docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return channel != "allLiquidation" or sub.market in ("perp", "future")

    def connection_key(self, sub: Subscription) -> str:
        if "." not in sub.symbol:
            return _guess_category(sub.venue_symbol)
        market = sub.market
        if market == "spot" or market == "option":
            return market
        quote = sub.symbol.partition(".")[2].partition("-")[0]
        return "inverse" if quote == "USD" else "linear"

    def connection_url(self, key: str, subs: Sequence[Subscription]) -> str:
        return f"{self.ws_url}/{key}"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        topics = [f"{sub.channel}.{sub.venue_symbol}" for sub in subs]
        return [compact_json({"op": "subscribe", "args": args}) for args in batched(topics, 10)]

    def ping_frame(self) -> str | None:
        return '{"op":"ping"}'


VENUES = [
    Venue(
        "bybit",
        ("BYBIT",),
        BybitFramer,
        BybitNormalizer,
        "Bybit v5 spot, linear, inverse and option",
        live=BybitLive(
            ws_url="wss://stream.bybit.com/v5/public",
            rest_url="https://api.bybit.com",
            channels=(
                r"orderbook\.(1|25|50|100|200|500|1000)",
                "publicTrade",
                "tickers",
                r"kline\.(1|3|5|15|30|60|120|240|360|720|D|W|M)",
                "allLiquidation",
            ),
            default_channels=("orderbook.200", "publicTrade", "tickers", "kline.1", "allLiquidation"),
            default_instruments=("BTC.USDT", "ETH.USDT", "BTC.USDT-PERP", "ETH.USDT-PERP"),
            instrument_lists=tuple(
                f"/v5/market/instruments-info?category={category}&status=Trading&limit=1000"
                for category in ("spot", "linear", "inverse")
            ),
            max_subscriptions=200,
            ping_interval_s=20.0,
        ),
    )
]
