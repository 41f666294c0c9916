"""Helpers for the collector tests: the shipped captures' subscriptions, lists and plans; waiting on servers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from connectors.capture import read_capture
from connectors.collector.config import VenueSelection, live_specs
from connectors.collector.plan import InstrumentList, VenuePlan, plan_venue
from connectors.config import Settings
from connectors.kafka import TopicRecord, read_topic
from schemas.raw import RawEnvelope
from simulator import Simulator
from simulator.shipped import SHIPPED

#: Venue -> the shipped capture and what it subscribed (the simulator serves them; the tests compare with them).
RECORDED = SHIPPED
#: How long the integration tests wait for servers and flows before failing (never a pass condition).
DEADLINE_S = 180.0


def recorded_lists(path: Path) -> list[InstrumentList]:
    """The REST responses of a capture, as if the collector had fetched them."""
    _, events = read_capture(path)
    return [InstrumentList(e.url, e.data, e.ts) for e in events if e.kind == "http" and e.url and e.data is not None]


def recorded_plan(venue: str) -> VenuePlan:
    """The plan the collector makes for ``venue``'s recorded subscriptions, from the capture's own lists."""
    recorded = RECORDED[venue]
    selection = VenueSelection(venue, live_specs()[venue], recorded.instruments, recorded.channels)
    return plan_venue(selection, recorded_lists(recorded.path), [])


def read_until(config: Settings, topic: str, done: Callable[[list[TopicRecord]], bool]) -> list[TopicRecord]:
    """The topic's records in partition order, once ``done`` says they are all there (fails after DEADLINE_S)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        rows = sorted(read_topic(config, topic, decode=False), key=lambda row: (row.partition, row.offset))
        if done(rows):
            return rows
        assert time.monotonic() < deadline, f"{topic} is still incomplete after {DEADLINE_S}s: {len(rows)} records"
        time.sleep(1.0)


def raw_envelopes(rows: Iterable[TopicRecord]) -> list[RawEnvelope]:
    """The envelopes of raw records, checking that each is keyed by its instrument."""
    out = []
    for row in rows:
        env = RawEnvelope.from_json(row.value)
        assert row.key == env.key, "the Kafka key is the envelope's instrument key"
        out.append(env)
    return out


def wait_played(simulators: Iterable[Simulator], sessions: int) -> None:
    """Until every simulator played each of its recorded connections ``sessions`` times to the end."""
    deadline = time.monotonic() + DEADLINE_S
    pending = list(simulators)
    while pending and time.monotonic() < deadline:
        info = pending[0].info()
        if all(info["played"].get(c["conn"], 0) >= sessions for c in info["connections"]):
            pending.pop(0)
        else:
            time.sleep(0.2)
    assert not pending, f"{[s.capture.name for s in pending]} did not play every connection {sessions} times"
