"""What the live collector must know about a venue, declared next to the venue's framer.

Each venue module declares one `LiveSpec` (``Venue.live``), so adding a venue stays one module. The collector
(``connectors/collector``) is venue-agnostic and reads only these declarations:

* endpoints: `ws_url` (websocket base URL) and `rest_url` (REST origin); `instrument_lists` are REST paths
  fetched once at start so the framer learns the venue's symbols (and the collector can resolve ``BTC.USDT``);
* subscriptions: the channel names the pipeline can normalize (`channels`, regular expressions), defaults,
  which subscriptions may share a connection (`connection_key`), how many (`max_subscriptions`), the URL of a
  connection (`connection_url`) and the frames that subscribe it (`subscribe_frames`);
* health: an application-level ping (`ping_frame` every `ping_interval_s`; websocket-protocol pings are always
  on), answers the venue demands (`reply`), frames telling clients to reconnect (`asks_reconnect`), and a
  planned reconnect (`rotate_after_s`) before the venue's forced disconnect;
* books: the REST snapshot a protocol needs (`snapshot_url`, fetched after the first frame of a book channel on
  each connection, so again after every reconnect) and when a fetched snapshot is too old to bridge
  (`snapshot_outdated`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import orjson

from operators.symbols import market_of
from schemas.raw import RawEnvelope

__all__ = ["LiveSpec", "Subscription", "batched", "compact_json"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Subscription:
    """One channel of one instrument, in the venue's own names (``depth@100ms`` of ``BTCUSDT``)."""

    channel: str
    venue_symbol: str
    #: The normalized symbol (``BTC.USDT``), or the venue symbol when the venue lists no instruments.
    symbol: str

    @property
    def market(self) -> str:
        """spot, perp, future or option (spot when the symbol is not in normalized form)."""
        return market_of(self.symbol) if "." in self.symbol else "spot"


def compact_json(value: object) -> str:
    """A frame as venues expect it: compact JSON, keys in the order given."""
    return orjson.dumps(value).decode()


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size`` (venues cap the arguments of one subscribe frame)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass(frozen=True)
class LiveSpec:
    """A venue's live endpoints, subscriptions and connection health rules. Venues subclass and override."""

    #: Websocket base URL (``connection_url`` may add a path or a query).
    ws_url: str
    #: REST origin (scheme, host and port) that REST paths are appended to.
    rest_url: str
    #: Channel names this pipeline can normalize, as regular expressions (full match).
    channels: tuple[str, ...]
    default_channels: tuple[str, ...]
    #: Normalized symbols (or venue symbols where the normalized form is ambiguous) collected by default.
    default_instruments: tuple[str, ...]
    #: REST paths (with query) of the venue's instrument lists, fetched at start and fed to the framer.
    instrument_lists: tuple[str, ...] = ()
    #: Subscriptions one connection may carry (the venue's limit, or a conservative choice where it has none).
    max_subscriptions: int = 100
    #: Seconds between application-level pings (None: websocket-protocol pings only).
    ping_interval_s: float | None = None
    #: Planned reconnect interval, shorter than the venue's forced disconnect (None: the venue has none).
    rotate_after_s: float | None = None

    @cached_property
    def _channel_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(pattern) for pattern in self.channels)

    def accepts_channel(self, channel: str) -> bool:
        """Whether ``channel`` is one of the venue's channels this pipeline can normalize."""
        return any(pattern.fullmatch(channel) for pattern in self._channel_patterns)

    def applies(self, channel: str, sub: Subscription) -> bool:
        """Whether ``channel`` exists for this instrument (funding channels exist for perpetuals only, ...)."""
        return True

    # -- connections -----------------------------------------------------------------------------------------
    def connection_key(self, sub: Subscription) -> str:
        """Subscriptions with different keys never share a connection (Bybit: one endpoint per market)."""
        return "ws"

    def connection_url(self, key: str, subs: Sequence[Subscription]) -> str:
        """The websocket URL of a connection carrying ``subs`` (all with connection key ``key``)."""
        return self.ws_url

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        """The frames that subscribe a fresh connection to ``subs``, in the order they are sent."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to subscribe")

    # -- health ----------------------------------------------------------------------------------------------
    def ping_frame(self) -> str | None:
        """The application-level ping sent every ``ping_interval_s``."""
        return None

    def reply(self, text: str) -> str | None:
        """A frame the venue requires in answer to ``text`` (Deribit's test_request), else None."""
        return None

    def asks_reconnect(self, text: str) -> bool:
        """Whether ``text`` tells clients to reconnect (Bitfinex's server-restart info event)."""
        return False

    # -- books -----------------------------------------------------------------------------------------------
    def snapshot_url(self, env: RawEnvelope) -> str | None:
        """The REST snapshot to fetch after ``env``, the first frame of its instrument and channel on a connection."""
        return None

    def snapshot_outdated(self, first: RawEnvelope, snapshot: str) -> bool:
        """Whether a fetched snapshot is older than the first buffered frame ``first`` (then it is fetched again)."""
        return False
