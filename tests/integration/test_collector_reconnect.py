"""A venue dies mid-stream and comes back: the collector reconnects and the books are rebuilt, never corrupted.

The simulators (Binance spot from the hftbacktest capture, which needs the REST depth snapshot, and Coinbase,
whose level-2 book rides a connection-wide sequence) are killed with SIGKILL while playing, kept down until the
collector has failed to reconnect twice (backoff), then restarted on the same ports. Every new connection plays
its recording from the start, so after the reconnect each instrument must see its whole recording again.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from connectors.kafka import TopicRecord
from embedded.kafka import TansuBroker
from embedded.process import ManagedProcess
from schemas.raw import CONTROL, REST, RawEnvelope
from simulator import Simulator
from tests.collector_support import DEADLINE_S, RECORDED, raw_envelopes, read_until, wait_played
from tests.harness import flow_env, settings_for, start_flow
from tests.support import HFTBACKTEST, envelopes, normalize, replay_books

pytestmark = pytest.mark.integration

BINANCE_KEY = "binance:BTC.USDT"
COINBASE_KEYS = ("coinbase:BTC.USD", "coinbase:ETH.USD")


def _wait_mid_stream(simulators: list[Simulator]) -> None:
    """Until every simulator sent a tenth of each recorded connection (and has not finished it)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        infos = [sim.info() for sim in simulators]
        if all(info["sent"].get(c["conn"], 0) * 10 >= c["frames"] for info in infos for c in info["connections"]):
            assert all(not info["played"] for info in infos), "a recording ended before the kill; slow it down"
            return
        time.sleep(0.1)
    raise AssertionError("the simulators did not get going")


def _wait_failed_reconnects(collector: ManagedProcess, conn_ids: list[str]) -> None:
    """Until the collector's log shows a failed reconnect (a second backoff delay) for every connection."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        log = collector.log_path.read_text(errors="replace")
        if all(re.search(rf"{re.escape(conn)}: reconnecting in [\d.]+s \(attempt 2\)", log) for conn in conn_ids):
            return
        time.sleep(0.1)
    raise AssertionError(f"no backoff seen:\n{collector.log_tail()}")


def _sessions(envs: list[RawEnvelope]) -> tuple[list[RawEnvelope], list[RawEnvelope]]:
    """An instrument's envelopes before and after its one reconnect control envelope."""
    controls = [i for i, env in enumerate(envs) if env.kind == CONTROL]
    assert len(controls) == 1 and envs[controls[0]].channel == "reconnect", [envs[i] for i in controls]
    return envs[: controls[0]], envs[controls[0] + 1 :]


def _frames(envs: list[RawEnvelope]) -> list[str]:
    return [env.frame for env in envs if env.kind != REST]


def _resubscribed(rows: list[TopicRecord], expected: dict[str, list[RawEnvelope]]) -> bool:
    """Whether every instrument received its whole recording after a reconnect control envelope."""
    collected = _by_key(raw_envelopes(rows))
    for key, envs in expected.items():
        stream = collected.get(key, [])
        control = next((i for i, env in enumerate(stream) if env.kind == CONTROL), None)
        if control is None or len(_frames(stream[control + 1 :])) < len(_frames(envs)):
            return False
    return True


def test_a_killed_venue_is_reconnected_and_its_books_rebuilt(kafka: TansuBroker, tmp_path: Path) -> None:
    binance = Simulator(HFTBACKTEST, tmp_path, speed=15.0, venue="binance")
    coinbase = Simulator(RECORDED["coinbase"].path, tmp_path, speed=2.0)
    config_file = tmp_path / "collector.json"
    venues = {
        "binance": {
            "instruments": ["BTCUSDT"],
            "channels": ["depth@100ms", "bookTicker", "trade"],
            "endpoint": binance.url,
        },
        "coinbase": RECORDED["coinbase"].section(coinbase.url),
    }
    config_file.write_bytes(orjson.dumps({"venues": venues}))
    env = flow_env(
        kafka.bootstrap, COLLECTOR_CONFIG=str(config_file), COLLECTOR_BACKOFF_MIN_S="0.2", COLLECTOR_BACKOFF_MAX_S="1"
    )
    simulators = [binance.start(), coinbase.start()]
    expected = _by_key(envelopes(HFTBACKTEST, venue="binance")) | _by_key(envelopes(RECORDED["coinbase"].path))
    collector = start_flow("flows.collect_cex:flow", env, tmp_path / "collector.log")
    try:
        _wait_mid_stream(simulators)
        for sim in simulators:
            sim.kill()
        _wait_failed_reconnects(collector, ["binance.ws.0", "coinbase.ws.0"])
        for sim in simulators:
            sim.start()
        wait_played(simulators, sessions=1)
        rows = read_until(settings_for(env), "raw", lambda rows: _resubscribed(rows, expected))
    finally:
        collector.stop()
        for sim in simulators:
            sim.stop()
    collected = _by_key(raw_envelopes(rows))
    assert set(collected) == set(expected)

    for key, envs in collected.items():
        before, after = _sessions(envs)
        recorded = _frames(expected[key])
        assert 0 < len(_frames(before)) < len(recorded), f"{key}: the venue died mid-stream"
        assert _frames(before) == recorded[: len(_frames(before))], f"{key}: first session out of order"
        assert _frames(after) == recorded, f"{key}: the resubscribed session is the whole recording"

    # Binance: the depth snapshot is fetched again after the reconnect, after the new session's first diff.
    for session in _sessions(collected[BINANCE_KEY]):
        kinds = [env.kind if env.kind == REST else env.channel for env in session]
        assert kinds.count(REST) == 1 and kinds.index("depth@100ms") < kinds.index(REST), kinds

    outputs = normalize(env for envs in collected.values() for env in envs)
    assert not [out for out in outputs if out[1] == "dead_letter"]
    books = replay_books(outputs)  # asserts that no update is ever published for an invalid book
    reference = replay_books(normalize(env for envs in expected.values() for env in envs))
    for key in (BINANCE_KEY, *COINBASE_KEYS):
        lob = [record for k, topic, record in outputs if k == key and topic == "lob"]
        actions = [record["action"] for record in lob]
        resync = next(i for i, record in enumerate(lob) if record["action"] == "resync")
        assert lob[resync]["reason"].startswith("reconnect"), lob[resync]
        assert "update" in actions[:resync] and "snapshot" in actions[resync:], f"{key}: {actions}"
        assert books[key].valid, f"{key}: valid again after the reconnect"
        assert (books[key].bids, books[key].asks) == (reference[key].bids, reference[key].asks)


def _by_key(envs: list[RawEnvelope]) -> dict[str, list[RawEnvelope]]:
    out: dict[str, list[RawEnvelope]] = defaultdict(list)
    for env in envs:
        out[env.key].append(env)
    return dict(out)
