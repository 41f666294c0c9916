"""OKX v5 public websocket (``wss://ws.okx.com:8443/ws/v5/public``).

Frames ``{"arg": {"channel", "instId"}, "action"?, "data": [...]}`` are attributed by a prefix match on ``arg``;
channels subscribed by ``instType`` (``liquidation-orders``) by each data item's ``instId`` (one envelope per
instrument, whole frame; each normalizer keeps its own items). Acks, ``error``/``notice`` events and ``pong``
are consumed. Symbols come from ``instruments`` pushes and REST lists (SPOT ``baseCcy``/``quoteCcy``, else
``uly``), else from the instId; an id of no known form keeps the venue id as its symbol.

* ``books``, ``books-l2-tbt``, ``books50-l2-tbt``: snapshot + update, levels ``[px, sz, "0", count]``, size 0
  deletes. ``checksum``, the signed CRC32 of ``bidPx:bidSz:askPx:askSz:...`` over the top 25 levels per side
  (interleaved, the longer side continuing alone, on the venue's own strings as OKX documents, where
  cryptofeed re-renders Decimals), is verified after snapshots and updates; a mismatch resyncs. With
  ``seqId``, an update's ``prevSeqId`` must equal the last ``seqId`` (else a ``gap`` resync); an update
  without levels is a heartbeat, checked but not published. The 2022 frames have no ``seqId``, so the
  checksum is the gap detector and a lost update touching only levels below the top 25 goes unnoticed
  until a later change reaches them. OKX deprecated the checksum in 2026 (always
  0): 0 beside a ``seqId`` counts as absent. ``lob.sequence`` is ``seqId``, else the frame ``ts`` (ms).
  ``books5``/``bbo-tbt`` messages are whole top-N books, published as snapshots. The first book channel seen
  owns an instrument's lob stream; another book channel's frames for it are dead-lettered, never mixed in.
* ``trades``, ``trades-all``: ``side`` is the taker side; the trade OKX repeats on subscribe is emitted once.
* ``tickers`` (``volume_24h`` = ``vol24h``: contracts, base currency on spot); ``mark-price`` /
  ``index-tickers`` -> tickers with only ``mark_price`` / ``index_price`` (index ``BTC-USDT`` -> ``BTC.USDT``).
* ``candle<bar>``: interval ``1m``/``1h``/``1d``/``1w``/``1M`` (``...utc`` bars too; plain day-and-longer bars
  start at 00:00 UTC+8). ``quote_volume`` = ``volCcyQuote`` (``volCcy`` in 7-field spot rows), ``closed`` =
  ``confirm``; no event time is sent, so it is the receipt time.
* ``funding-rate``: ``fundingRate`` is the current period's rate, settled at ``fundingTime`` (hence
  ``next_funding_timestamp``); ``predicted_rate`` = ``nextFundingRate``; ``interval_hours`` from
  ``nextFundingTime - fundingTime``; event time ``ts`` (cryptofeed uses ``fundingTime``, OKX documents ``ts``).
* ``open-interest``: ``oi`` (contracts); value ``oiUsd`` where sent (USD, standing in for USDT/USDC quotes).
* ``liquidation-orders``: one record per ``details`` item; ``side`` is the liquidation order's side as OKX
  documents it (``sell`` closes a long; ``posSide`` names the position), price ``bkPx``, size ``sz``.

Live (`OkxLive`): ``/ws/v5/public``, and ``/ws/v5/business`` for candles and ``trades-all`` (where OKX moved
them in 2023); ``{"op":"subscribe","args":[{"channel","instId"},..]}``, and the text ``ping`` every 25 s
because OKX drops connections idle for 30 s. Books start with a snapshot; nothing is fetched over REST.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache, partial
from typing import Any

import orjson

from operators.book import ASK, BID, BookPublisher, LocalBook
from operators.records import Output
from operators.symbols import Instrument, future, option, perp, spot, yymmdd_to_date
from operators.timeparse import ms_to_us
from operators.venues.base import BadFrame, Framer, InstrumentNormalizer, NormalizerSettings, RecentTrades, Venue
from operators.venues.live import LiveSpec, Subscription, batched, compact_json
from schemas.raw import RawEnvelope

__all__ = [
    "VENUES",
    "OkxFramer",
    "OkxLive",
    "OkxNormalizer",
    "book_checksum",
    "symbol_from_info",
    "symbol_from_inst_id",
]

_ARG = re.compile(r'\{"arg":\{"channel":"([^"]+)","instId":"([^"]+)"\}')
_DIFF_BOOKS = frozenset(("books", "books-l2-tbt", "books50-l2-tbt"))
_TOP_BOOKS = frozenset(("books5", "bbo-tbt"))
_CHECKSUM_DEPTH = 25
_SIDES = frozenset(("buy", "sell"))
#: bar unit -> (normalized unit, seconds; 0 for calendar months)
_BAR_UNITS = {"s": ("s", 1), "m": ("m", 60), "H": ("h", 3600), "D": ("d", 86400), "W": ("w", 604800), "M": ("M", 0)}
_HONG_KONG = timezone(timedelta(hours=8))


# -- symbols -------------------------------------------------------------------------------------------------
def symbol_from_inst_id(inst_id: str) -> str:
    """``BTC-USDT``, ``UNI-USD-SWAP``, ``BTC-USD-220527``, ``BTC-USD-220527-30000-C`` -> normalized symbol."""
    base, _, rest = inst_id.partition("-")
    quote, _, tail = rest.partition("-")
    return _symbol(base, quote, tail.split("-") if tail else [])


def symbol_from_info(info: dict[str, Any]) -> str:
    """One entry of ``/api/v5/public/instruments``: base and quote from ``baseCcy``/``quoteCcy`` or ``uly``."""
    if info["instType"] in ("SPOT", "MARGIN"):
        base, quote = info["baseCcy"], info["quoteCcy"]
    else:
        base, _, quote = (info.get("uly") or info["instFamily"]).partition("-")
    return _symbol(base, quote, info["instId"].split("-")[2:])


def _symbol(base: str, quote: str, tail: list[str]) -> str:
    """``tail``: the instId after base and quote (``[]``, ``[SWAP]``, ``[YYMMDD]``, ``[YYMMDD, strike, C|P]``)."""
    if not base or not quote:
        raise ValueError(f"OKX instrument without base or quote: {base!r}-{quote!r}")
    if not tail:
        return spot(base, quote)
    if tail == ["SWAP"]:
        return perp(base, quote)
    if len(tail) == 1:
        return future(base, quote, yymmdd_to_date(tail[0]))
    if len(tail) == 3 and tail[2] in ("C", "P"):
        return option(base, quote, yymmdd_to_date(tail[0]), tail[1], tail[2])
    raise ValueError(f"not an OKX instrument id: {base}-{quote}-{'-'.join(tail)}")


def book_checksum(book: LocalBook) -> int:
    """OKX's CRC32 of the top 25 levels, interleaved bid/ask, as a signed 32-bit integer."""
    bids = book.top(BID, _CHECKSUM_DEPTH)
    asks = book.top(ASK, _CHECKSUM_DEPTH)
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(f"{bids[i][2]}:{bids[i][3]}")
        if i < len(asks):
            parts.append(f"{asks[i][2]}:{asks[i][3]}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


def _checksum_matches(expected: int, book: LocalBook) -> bool:
    return book_checksum(book) == expected


def _expected_checksum(data: dict[str, Any]) -> int | None:
    """The checksum to verify; None when absent or deprecated (always 0 beside a seqId since 2026)."""
    checksum = data.get("checksum")
    if checksum is None or (checksum == 0 and "seqId" in data):
        return None
    return int(checksum)


def _levels(levels: Iterable[list[str]]) -> Iterator[tuple[float, float, str, str]]:
    for level in levels:
        price, size = level[0], level[1]
        yield float(price), float(size), price, size


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


# -- framer --------------------------------------------------------------------------------------------------
class OkxFramer(Framer):
    """Attributes OKX frames to instruments by ``arg.instId`` (or each data item's ``instId``)."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    def instrument(self, inst_id: str) -> Instrument:
        inst = self.table.get(inst_id)
        if inst is None:
            try:
                symbol = symbol_from_inst_id(inst_id)
            except (KeyError, ValueError):  # KeyError: a DDMMMYY-looking date with no such month
                symbol = inst_id
            inst = self.table[inst_id] = Instrument(self.exchange, symbol, inst_id)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, items: Any) -> None:
        for info in items if isinstance(items, list) else ():
            try:
                symbol = symbol_from_info(info)
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            self.table[info["instId"]] = Instrument(self.exchange, symbol, info["instId"])

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _ARG.match(text)
        if match is not None:
            return [self.envelope(self.instrument(match[2]), match[1], conn, text, ts)]
        return self._slow_path(conn, text, ts)

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and "/api/v5/public/instruments" in url:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                self.learn(orjson.loads(text).get("data"))  # an error reply has no data list
        return []

    def _slow_path(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        if text.startswith('{"event"'):
            return []
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []  # "pong"
        arg = msg.get("arg") if isinstance(msg, dict) and "event" not in msg else None
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            return []
        channel = arg["channel"]
        if channel == "instruments":
            self.learn(msg.get("data"))
            return []
        names = [arg["instId"]] if isinstance(arg.get("instId"), str) else _item_inst_ids(msg.get("data"))
        return [self.envelope(self.instrument(name), channel, conn, text, ts) for name in names]


def _item_inst_ids(data: Any) -> list[str]:
    """Distinct data-item ``instId`` values, in order: channels subscribed by ``instType`` name them there."""
    rows = data if isinstance(data, list) else ()
    return list(dict.fromkeys(d["instId"] for d in rows if isinstance(d, dict) and isinstance(d.get("instId"), str)))


# -- normalizer ----------------------------------------------------------------------------------------------
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
_DERIVATIVE_ONLY = frozenset(("funding-rate", "open-interest", "mark-price"))


@dataclass(frozen=True)
class OkxLive(LiveSpec):
    """OKX v5 subscriptions (see the module docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        if channel == "funding-rate":
            return sub.market == "perp"
        return channel not in _DERIVATIVE_ONLY or sub.market != "spot"

    def connection_key(self, sub: Subscription) -> str:
        return "business" if sub.channel.startswith("candle") or sub.channel == "trades-all" else "public"

    def connection_url(self, key: str, subs: Sequence[Subscription]) -> str:
        return f"{self.ws_url}/{key}"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        args = [{"channel": sub.channel, "instId": sub.venue_symbol} for sub in subs]
        return [compact_json({"op": "subscribe", "args": chunk}) for chunk in batched(args, 50)]

    def ping_frame(self) -> str | None:
        return "ping"


VENUES = [
    Venue(
        "okx",
        ("OKX",),
        OkxFramer,
        OkxNormalizer,
        "OKX v5 public websocket",
        channels=_CHANNELS,
        live=OkxLive(
            ws_url="wss://ws.okx.com:8443/ws/v5",
            rest_url="https://www.okx.com",
            channels=(
                "books",
                "books5",
                "bbo-tbt",
                "trades",
                "trades-all",
                "tickers",
                "mark-price",
                "funding-rate",
                "open-interest",
                r"candle(1s|1m|3m|5m|15m|30m|1H|2H|4H|6H|12H|1D|2D|3D|5D|1W|1M|3M)(utc)?",
            ),
            default_channels=("books", "trades", "tickers", "funding-rate", "open-interest"),
            default_instruments=("BTC.USDT", "ETH.USDT", "BTC.USDT-PERP", "ETH.USDT-PERP"),
            instrument_lists=tuple(
                f"/api/v5/public/instruments?instType={kind}" for kind in ("SPOT", "SWAP", "FUTURES")
            ),
            max_subscriptions=200,
            ping_interval_s=25.0,
        ),
    )
]
