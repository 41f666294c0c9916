"""The shape every venue protocol module follows.

A venue module (or package, see ``README.md``) provides two classes and registers them in a `Venue`:

* a `Framer`: what a collector session sees (connections opened, frames sent and received, REST responses) in,
  raw envelopes attributed to instruments out. It is the only place that knows how a frame names its
  instrument, and it watches connection-wide sequences (Coinbase, Bitfinex) that no single instrument can see.
  Replay (``flows/replay.py``), the live collector and offline mode all use it, so they produce the same
  envelopes.
* an `InstrumentNormalizer`: one per instrument key, fed that instrument's envelopes in order, emitting
  standardized records. It owns the instrument's order book and sequence state and must be picklable (Bytewax
  snapshots it for recovery).

A frame the normalizer cannot use raises `BadFrame`; the flow turns it into a dead letter with the reason and
carries on. When the bad frame was a book frame (a lost update) or failed half-way through changing a book,
that book is resynced and the resync record travels with the dead letter, so a book is never published from a
state known to be bad. A bad trade or ticker frame leaves the book alone.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from operators.book import BookPublisher
from operators.records import Output, RecordFactory
from operators.symbols import Instrument
from operators.venues.live import LiveSpec
from schemas.raw import CONTROL, REST, WS, Kind, RawEnvelope

__all__ = [
    "BadFrame",
    "Framer",
    "InstrumentNormalizer",
    "NormalizerSettings",
    "RecentTrades",
    "Venue",
]


class BadFrame(Exception):
    """A frame that cannot be normalized; it is dead-lettered with ``reason``."""

    def __init__(self, reason: str, error_type: str = "unexpected_shape", book_intact: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        #: True when the frame was rejected before it could touch a book (e.g. a second book subscription).
        self.book_intact = book_intact
        #: Records to publish before the dead letter (resyncs of books the bad frame invalidated).
        self.outputs: list[Output] = []


@dataclass(frozen=True, slots=True)
class NormalizerSettings:
    """Tunables shared by all normalizers."""

    #: Re-publish the whole book every this many microseconds of event time (0 = only venue snapshots).
    snapshot_interval_us: int = 60_000_000
    #: Deltas held while waiting for a REST snapshot (Binance); beyond this the oldest are dropped.
    max_buffered_deltas: int = 5_000


class RecentTrades:
    """Drops trades a venue repeats in its on-subscribe trade snapshots (compact: one timestamp and its ids)."""

    __slots__ = ("ids", "last_ts")

    def __init__(self) -> None:
        self.last_ts = -1
        self.ids: set[str] = set()

    def is_new(self, event_ts: int, trade_id: str) -> bool:
        """True once per trade when trades are fed in time order."""
        if event_ts > self.last_ts:
            self.last_ts = event_ts
            self.ids = {trade_id}
            return True
        if event_ts == self.last_ts and trade_id not in self.ids:
            self.ids.add(trade_id)
            return True
        return False

    def see(self, event_ts: int, trade_id: str) -> None:
        """Record a live trade (always emitted) so a later snapshot does not repeat it."""
        self.is_new(event_ts, trade_id)


class InstrumentNormalizer(ABC):
    """Turns one instrument's raw envelopes into standardized records. Subclasses implement `on_ws`."""

    #: Prefixes of the envelope channels that carry book data: a bad frame on one is a lost book update.
    book_channels: tuple[str, ...] = ()

    def __init__(self, instrument: Instrument, settings: NormalizerSettings) -> None:
        self.instrument = instrument
        self.settings = settings
        self.out = RecordFactory(instrument.exchange, instrument.symbol, instrument.venue_symbol)

    # -- entry point -----------------------------------------------------------------------------------------
    def process(self, env: RawEnvelope) -> list[Output]:
        """All records for one envelope. Raises BadFrame for unusable frames, after resyncing any book."""
        if env.kind == CONTROL:
            return self.on_control(env)
        try:
            msg = self.decode(env)
            if env.kind == REST:
                return self.on_rest(env, msg)
            return self.on_ws(env, msg)
        except BadFrame as exc:
            if not exc.book_intact:
                exc.outputs = self.abandon_books(env, exc.reason)
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            bad = BadFrame(f"unexpected {env.channel} frame shape: {type(exc).__name__}: {exc}")
            bad.outputs = self.abandon_books(env, bad.reason)
            raise bad from exc

    def typed_decoder(self, env: RawEnvelope) -> msgspec.json.Decoder[Any] | None:
        """A decoder for this envelope's usual frame shape (numbers parsed in C), or None for generic JSON.

        A venue overrides this for its busiest channels; a frame that does not fit the shape is decoded
        generically, so the typed shape only ever speeds up frames the generic path handles the same way.
        """
        return None

    def decode(self, env: RawEnvelope) -> Any:
        """Parse the frame. Venues with compressed binary frames override this."""
        if env.binary:
            text: str | bytes = base64.b64decode(env.frame)
        else:
            text = env.frame
            typed = self.typed_decoder(env)
            if typed is not None:
                try:
                    return typed.decode(text)
                except msgspec.MsgspecError:
                    pass  # an unusual frame: the generic decode below, and the venue code, judge it
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadFrame(f"{env.channel} frame is not valid JSON: {exc}", "malformed_json") from exc

    @abstractmethod
    def on_ws(self, env: RawEnvelope, msg: Any) -> list[Output]:
        """Records for one websocket frame (already JSON-decoded)."""

    def on_rest(self, env: RawEnvelope, msg: Any) -> list[Output]:
        """Records for one REST response (book snapshots, open-interest polls)."""
        raise BadFrame(f"no handler for REST response from {env.url}")

    def on_control(self, env: RawEnvelope) -> list[Output]:
        """A collector event: a reconnect or a connection-wide sequence gap invalidates every book."""
        return self.resync_books(env.receipt_ts, env.receipt_ts, f"{env.channel}: {env.frame}")

    # -- books -----------------------------------------------------------------------------------------------
    def books(self) -> list[BookPublisher]:
        """The book publishers this normalizer owns (override when there are any)."""
        return []

    def new_book(self, keep_text: bool = False, depth: int | None = None) -> BookPublisher:
        return BookPublisher(self.out, self.settings.snapshot_interval_us, keep_text=keep_text, depth=depth)

    def resync_books(self, event_ts: int, receipt_ts: int, reason: str) -> list[Output]:
        out: list[Output] = []
        for book in self.books():
            out.extend(book.resync(event_ts, receipt_ts, reason))
        return out

    def abandon_books(self, env: RawEnvelope, reason: str) -> list[Output]:
        """After a frame failed: resync each book it lost an update of or left half-changed."""
        book_frame = env.channel.startswith(self.book_channels)
        out: list[Output] = []
        for book in self.books():
            if book_frame or book.dirty:
                out.extend(book.resync(env.receipt_ts, env.receipt_ts, f"bad book frame: {reason}"))
        return out


class Framer(ABC):
    """Attributes what a collector session sees to instruments, as raw envelopes."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.conn_urls: dict[str, str] = {}
        self._conn_instruments: dict[str, dict[str, Instrument]] = {}

    # -- events ----------------------------------------------------------------------------------------------
    def on_connect(self, conn: str, url: str, ts: int) -> list[RawEnvelope]:
        """A connection opened. If it replaces an earlier one with the same id, its instruments must resync."""
        self.conn_urls[conn] = url
        if self._conn_instruments.get(conn):
            return self.control(conn, "reconnect", ts, {"url": url})
        return []

    def on_send(self, conn: str, text: str, ts: int) -> None:  # noqa: B027 - optional hook
        """A frame the client sent (subscriptions); some venues configure the stream here."""

    @abstractmethod
    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        """A frame received; returns one envelope per instrument it concerns (none for heartbeats and acks)."""

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        """A REST response: instrument lists teach symbols; book snapshots become envelopes."""
        return []

    # -- helpers for subclasses ------------------------------------------------------------------------------
    def envelope(
        self,
        inst: Instrument,
        channel: str,
        conn: str | None,
        text: str,
        ts: int,
        kind: Kind = WS,
        url: str | None = None,
    ) -> RawEnvelope:
        if conn is not None:
            self._conn_instruments.setdefault(conn, {})[inst.key] = inst
        return RawEnvelope(
            exchange=inst.exchange,
            symbol=inst.symbol,
            venue_symbol=inst.venue_symbol,
            channel=channel,
            kind=kind,
            receipt_ts=ts,
            frame=text,
            conn=conn,
            url=url,
        )

    def control(self, conn: str, channel: str, ts: int, details: dict[str, Any]) -> list[RawEnvelope]:
        """One control envelope for every instrument seen on ``conn`` (reconnect, sequence_gap)."""
        frame = orjson.dumps(details).decode()
        return [
            RawEnvelope(
                exchange=inst.exchange,
                symbol=inst.symbol,
                venue_symbol=inst.venue_symbol,
                channel=channel,
                kind=CONTROL,
                receipt_ts=ts,
                frame=frame,
                conn=conn,
            )
            for inst in self._conn_instruments.get(conn, {}).values()
        ]

    def instruments_on(self, conn: str) -> list[Instrument]:
        return list(self._conn_instruments.get(conn, {}).values())

    def known_instruments(self) -> list[Instrument]:
        """Instruments learned from the venue's instrument lists (`on_http`); the collector resolves names with them."""
        return []


@dataclass(frozen=True)
class Venue:
    """A venue protocol as the pipeline knows it."""

    #: Exchange id used in keys and records (``binance_us``).
    name: str
    #: Header names of cryptofeed captures for this venue (``BINANCE_US``).
    capture_names: tuple[str, ...]
    #: Builds a framer for a session: ``framer(exchange_name)``.
    framer: Callable[[str], Framer]
    #: Builds the normalizer of one instrument.
    normalizer: Callable[[Instrument, NormalizerSettings], InstrumentNormalizer]
    description: str = ""
    channels: tuple[str, ...] = field(default=())
    #: How the live collector connects, subscribes and keeps the connection healthy (None: replay only).
    live: LiveSpec | None = None
