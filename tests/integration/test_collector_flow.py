"""The collector flow on real servers: simulated venues (recorded captures over websockets and HTTP) and Tansu.

The reference is ``flows/replay.py`` run on the same captures: the collector must produce the same envelopes
(receipt time aside; connection ids are the collector's own and REST URLs name the simulator, so both are
compared through the mapping they imply), in the same order per instrument and connection.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import orjson
import pytest

from connectors.kafka import read_topic
from embedded.kafka import TansuBroker
from schemas.raw import CONTROL, REST, RawEnvelope
from simulator import Simulator
from simulator.shipped import collector_config
from tests.collector_support import RECORDED, raw_envelopes, read_until, wait_played
from tests.harness import flow_env, run_flow, settings_for, start_flow

pytestmark = pytest.mark.integration

SPEED = 8.0


def _bare(env: RawEnvelope) -> RawEnvelope:
    return msgspec.structs.replace(env, receipt_ts=0, conn=None, url=None)


def _target(url: str | None) -> str:
    parts = urlsplit(url or "")
    return f"{parts.path}?{parts.query}"


def _assert_sameraw_envelopes(venue: str, got: list[RawEnvelope], want: list[RawEnvelope]) -> None:
    streamed = [e for e in got if e.kind != REST]
    recorded = [e for e in want if e.kind != REST]
    # Each collector connection carries exactly one recorded connection's frames: map them by first frame
    # (records come partition by partition; within a connection, receipt times order the frames).
    first_recorded: dict[str | None, str] = {}
    for env in sorted(recorded, key=lambda e: e.receipt_ts):
        first_recorded.setdefault(env.conn, env.frame)
    by_first_frame = {frame: conn for conn, frame in first_recorded.items()}
    mapping: dict[str | None, str | None] = {}
    for env in sorted(streamed, key=lambda e: e.receipt_ts):
        if env.conn not in mapping:
            mapping[env.conn] = by_first_frame.get(env.frame)
    assert sorted(map(str, mapping.values())) == sorted(map(str, first_recorded)), f"{venue}: connections {mapping}"

    def per_stream(envs: list[RawEnvelope], conn_of: dict[str | None, str | None]) -> dict[tuple[str, str], list]:
        out: dict[tuple[str, str], list[RawEnvelope]] = defaultdict(list)
        for env in envs:
            out[(env.key, str(conn_of.get(env.conn, env.conn)))].append(_bare(env))
        return out

    assert per_stream(streamed, mapping) == per_stream(recorded, {}), f"{venue}: streamed envelopes differ"
    assert Counter((_bare(e), _target(e.url)) for e in got if e.kind == REST) == Counter(
        (_bare(e), _target(e.url)) for e in want if e.kind == REST
    ), f"{venue}: REST envelopes differ"


def _assert_snapshots_follow_first_diff(envs: list[RawEnvelope]) -> None:
    """Binance's procedure: the REST depth snapshot is fetched after the instrument's first diff arrived."""
    seen_diff: set[str] = set()
    snapshots = 0
    for env in envs:
        if env.channel.startswith("depth@"):
            seen_diff.add(env.key)
        elif env.kind == REST:
            assert env.key in seen_diff, f"snapshot of {env.key} before its first diff"
            snapshots += 1
    assert snapshots > 0


def test_the_collector_produces_the_replay_envelopes_for_every_venue(kafka: TansuBroker, tmp_path: Path) -> None:
    paths = [str(recorded.path) for recorded in RECORDED.values()]
    replay_env = flow_env(
        kafka.bootstrap, KAFKA_STOP_AT_END="true", RAW_TOPIC="replayed", REPLAY_CAPTURES=",".join(paths)
    )
    run_flow("flows.replay:flow", replay_env, "-w", "2")
    replayed = raw_envelopes(read_topic(settings_for(replay_env), "replayed", decode=False))

    simulators = {venue: Simulator(rec.path, tmp_path, speed=SPEED) for venue, rec in RECORDED.items()}
    config_file = tmp_path / "collector.json"
    config_file.write_bytes(orjson.dumps(collector_config({venue: sim.url for venue, sim in simulators.items()})))
    env = flow_env(kafka.bootstrap, COLLECTOR_CONFIG=str(config_file), COLLECTOR_BACKOFF_MIN_S="0.2")
    started_us = time.time_ns() // 1000
    for sim in simulators.values():
        sim.start()
    try:
        collector = start_flow("flows.collect_cex:flow", env, tmp_path / "collector.log", "-w", "2")
        try:
            wait_played(simulators.values(), sessions=1)
            rows = read_until(settings_for(env), "raw", lambda rows: len(rows) >= len(replayed))
        finally:
            collector.stop()
    finally:
        for sim in simulators.values():
            sim.stop()
    collected = raw_envelopes(rows)
    ended_us = time.time_ns() // 1000

    assert len(collected) == len(replayed)
    assert not [e for e in collected if e.kind == CONTROL], "no reconnect happened, so no control envelope"
    assert all(started_us <= e.receipt_ts <= ended_us for e in collected), "receipt time is the wall clock, in us"
    for venue in RECORDED:
        got = [e for e in collected if e.exchange == venue]
        _assert_sameraw_envelopes(venue, got, [e for e in replayed if e.exchange == venue])
    for venue in ("binance", "binance_futures"):
        _assert_snapshots_follow_first_diff([e for e in collected if e.exchange == venue])
