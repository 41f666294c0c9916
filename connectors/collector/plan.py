"""From the configuration to connections: fetch instrument lists, resolve instruments, lay out connections.

Instrument lists are fetched once per process (a venue that cannot be reached is retried with backoff; after
that its configured names must be venue symbols). A configured name is resolved against what the venue's
framer learned from them, by normalized symbol first (``BTC.USDT``), then by venue symbol (``BTCUSDT``); a
normalized symbol the lists do not name, or name twice, is an error, while a venue symbol they do not name is
subscribed as given (with a warning), because some lists are partial (options, paginated lists). The
subscriptions (channel x instrument, where the channel exists for it) are grouped by the venue's connection
key, in configuration order, and split at the venue's per-connection limit. Each group is one logical
connection with a stable id (``<venue>.<key>.<n>``): the id survives reconnects, which is how the framer knows
to announce them, and it names the Bytewax input partition.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx2

from connectors.collector.backoff import Backoff
from connectors.collector.config import CollectorConfigError, VenueSelection
from connectors.collector.rest import RestError, get_text, now_us
from connectors.collector.settings import CollectorSettings
from operators.symbols import Instrument
from operators.venues import VENUES
from operators.venues.base import Framer
from operators.venues.live import LiveSpec, Subscription
from schemas.raw import RawEnvelope

__all__ = ["ConnectionPlan", "InstrumentList", "VenuePlan", "plan_collection", "plan_venue", "resolve_instrument"]

LOG = logging.getLogger(__name__)
#: Attempts per instrument list at start (with backoff in between).
LIST_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class InstrumentList:
    """A fetched REST instrument list, replayed into every framer of the venue."""

    url: str
    text: str
    receipt_ts: int


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """One logical connection: its stable id, URL and subscriptions."""

    conn_id: str
    url: str
    subscriptions: tuple[Subscription, ...]


@dataclass(frozen=True)
class VenuePlan:
    """Everything a venue's connections need."""

    venue: str
    spec: LiveSpec
    instrument_lists: tuple[InstrumentList, ...]
    connections: tuple[ConnectionPlan, ...]

    def framer(self) -> tuple[Framer, list[RawEnvelope]]:
        """A framer for one logical connection, taught the instrument lists, and the envelopes that taught it."""
        framer = VENUES[self.venue].framer(self.venue)
        envelopes: list[RawEnvelope] = []
        for listing in self.instrument_lists:
            envelopes.extend(framer.on_http(listing.url, listing.text, listing.receipt_ts))
        return framer, envelopes


async def _fetch_lists(
    selections: list[VenueSelection], settings: CollectorSettings
) -> dict[str, tuple[list[InstrumentList], list[str]]]:
    """Venue -> (lists fetched, errors of those that failed)."""
    timeout = httpx2.Timeout(settings.collector_open_timeout_s)
    async with httpx2.AsyncClient(timeout=timeout, follow_redirects=True) as client:

        async def fetch(url: str) -> InstrumentList | str:
            backoff = Backoff(settings.collector_backoff_min_s, settings.collector_backoff_max_s)
            try:
                text = await get_text(client, url, backoff, LIST_ATTEMPTS)
            except RestError as exc:
                LOG.warning("instrument list unavailable: %s", exc)
                return str(exc)
            return InstrumentList(url, text, now_us())

        urls = {sel.name: [f"{sel.spec.rest_url}{path}" for path in sel.spec.instrument_lists] for sel in selections}
        results = await asyncio.gather(*(fetch(url) for venue_urls in urls.values() for url in venue_urls))
    out: dict[str, tuple[list[InstrumentList], list[str]]] = {}
    position = 0
    for name, venue_urls in urls.items():
        chunk = results[position : position + len(venue_urls)]
        position += len(venue_urls)
        out[name] = ([r for r in chunk if isinstance(r, InstrumentList)], [r for r in chunk if isinstance(r, str)])
    return out


def resolve_instrument(framer: Framer, name: str, list_errors: list[str]) -> Instrument:
    """The instrument a configured name means; CollectorConfigError says why there is none, or several."""
    known = framer.known_instruments()
    matches = {inst for inst in known if inst.symbol == name} or {inst for inst in known if inst.venue_symbol == name}
    if not matches:
        matches = {inst for inst in known if inst.venue_symbol.upper() == name.upper()}
    if len(matches) == 1:
        return matches.pop()
    venue = framer.exchange
    if matches:
        names = ", ".join(sorted(f"{inst.venue_symbol} ({inst.symbol})" for inst in matches))
        raise CollectorConfigError(f"{venue}: instrument {name!r} is ambiguous: {names}; name one of them")
    if "." not in name:
        # Lists are partial by design (OKX and Bybit options, Deribit currencies): a venue symbol is taken as given.
        LOG.warning("%s: %s is not in the instrument lists fetched; subscribing it as given", venue, name)
        return Instrument(venue, name, name)
    if known:
        raise CollectorConfigError(f"{venue}: instrument {name!r} is not in the venue's instrument list")
    reason = "; ".join(list_errors) or "the venue lists no instruments"
    raise CollectorConfigError(
        f"{venue}: cannot resolve {name!r} without the venue's instrument list ({reason}); give the venue symbol"
    )


def plan_venue(selection: VenueSelection, lists: list[InstrumentList], list_errors: list[str]) -> VenuePlan:
    """Resolve a venue's instruments and lay out its connections."""
    spec = selection.spec
    plan = VenuePlan(selection.name, spec, tuple(lists), ())
    framer, _ = plan.framer()
    instruments: list[Instrument] = []
    problems: list[str] = []
    for name in selection.instruments:
        try:
            instruments.append(resolve_instrument(framer, name, list_errors))
        except CollectorConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise CollectorConfigError("; ".join(problems))
    groups: dict[str, list[Subscription]] = {}
    for channel in selection.channels:
        subs = [Subscription(channel, inst.venue_symbol, inst.symbol) for inst in instruments]
        applicable = [sub for sub in subs if spec.applies(channel, sub)]
        if not applicable:
            LOG.warning("%s: channel %s applies to none of %s", selection.name, channel, selection.instruments)
        for sub in applicable:
            groups.setdefault(spec.connection_key(sub), []).append(sub)
    connections = []
    for key, subs in groups.items():
        for n, start in enumerate(range(0, len(subs), spec.max_subscriptions)):
            chunk = tuple(subs[start : start + spec.max_subscriptions])
            connections.append(ConnectionPlan(f"{selection.name}.{key}.{n}", spec.connection_url(key, chunk), chunk))
    return VenuePlan(selection.name, spec, tuple(lists), tuple(connections))


def plan_collection(selections: list[VenueSelection], settings: CollectorSettings) -> list[VenuePlan]:
    """Plans for every selected venue; CollectorConfigError lists every instrument that cannot be resolved."""
    fetched = asyncio.run(_fetch_lists(selections, settings))
    plans: list[VenuePlan] = []
    problems: list[str] = []
    for selection in selections:
        lists, errors = fetched[selection.name]
        try:
            plans.append(plan_venue(selection, lists, errors))
        except CollectorConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise CollectorConfigError("; ".join(problems))
    return plans
