"""Connections against the simulator, without Kafka: rotation, application pings, snapshot refetches, bad frames.

The connection runners run in this process (as a collector partition runs them), against a real simulator
process serving a recorded capture.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx2
import orjson
import pytest

from connectors.collector.config import load_selections
from connectors.collector.connection import SNAPSHOT_ATTEMPTS, Collected, ConnectionOptions, ConnectionRunner
from connectors.collector.plan import VenuePlan, plan_collection
from connectors.collector.settings import load_collector_settings
from operators.records import Output
from schemas.raw import CONTROL, REST, RawEnvelope
from simulator import Simulator
from tests.collector_support import DEADLINE_S, RECORDED
from tests.support import capture, envelopes, normalize, raw_lines, replay_books

pytestmark = pytest.mark.integration

Done = Callable[[list[RawEnvelope], list[ConnectionRunner]], bool]


def _plan(venue: str, sim: Simulator, tmp_path: Path) -> VenuePlan:
    config = tmp_path / f"{venue}.json"
    config.write_bytes(orjson.dumps({"venues": {venue: RECORDED[venue].section(sim.url)}}))
    settings = load_collector_settings(collector_config=str(config), collector_endpoints=None)
    (plan,) = plan_collection(load_selections(settings), settings)
    return plan


class _Collected:
    """What the connections produced: envelopes, and dead letters apart."""

    def __init__(self) -> None:
        self.envelopes: list[RawEnvelope] = []
        self.dead_letters: list[Output] = []

    def __call__(self, items: Sequence[Collected]) -> None:
        for item in items:
            if isinstance(item, RawEnvelope):
                self.envelopes.append(item)
            else:
                self.dead_letters.append(item)


def _collect(plan: VenuePlan, options: ConnectionOptions, done: Done) -> tuple[_Collected, list[ConnectionRunner]]:
    """Run the plan's connections until ``done`` (checked in a thread, it may ask the simulator), then stop."""

    async def scenario() -> tuple[_Collected, list[ConnectionRunner]]:
        out = _Collected()
        stop = asyncio.Event()
        async with httpx2.AsyncClient() as client:
            runners = []
            for conn in plan.connections:
                framer, envelopes = plan.framer()
                out(envelopes)
                runners.append(ConnectionRunner(plan, conn, framer, out, options, client))
            tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
            deadline = asyncio.get_running_loop().time() + DEADLINE_S
            while not await asyncio.to_thread(done, out.envelopes, runners):
                assert asyncio.get_running_loop().time() < deadline, "the connections never got there"
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)
        return out, runners

    return asyncio.run(scenario())


def _third_session_has_books(out: list[RawEnvelope], runners: list[ConnectionRunner]) -> bool:
    if runners[0].sessions < 3:
        return False
    last = max(i for i, env in enumerate(out) if env.kind == CONTROL)
    return len({env.key for env in out[last:] if env.channel == "books"}) == 3


def test_connections_rotate_on_schedule_and_books_are_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connectors.collector")
    with Simulator(RECORDED["okx"].path, tmp_path, speed=1.0) as sim:
        plan = _plan("okx", sim, tmp_path)
        plan = dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, ping_interval_s=0.25))
        options = ConnectionOptions(backoff_min_s=5.0, backoff_max_s=10.0, rotation_s=3.0, open_timeout_s=10.0)
        collected, (runner,) = _collect(plan, options, _third_session_has_books)
        info = sim.info()
    out = collected.envelopes
    assert collected.dead_letters == []

    rotations = runner.sessions - 1
    assert rotations >= 2
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("connectors.collector")]
    assert sum("rotating the connection after 3s" in m for m in messages) == rotations
    assert not [m for m in messages if "connection lost" in m or "closed by the venue" in m]
    assert info["received"]["OKX.ws.1"] >= 3, "application pings reach the venue"
    # Each rotation tells every instrument of the connection that its book must be rebuilt, and the new
    # session subscribes again: the venue plays its recording from the start.
    keys = {env.key for env in out}
    controls = Counter(env.key for env in out if env.kind == CONTROL)
    assert controls == dict.fromkeys(keys, rotations)
    assert {env.channel for env in out if env.kind == CONTROL} == {"reconnect"}
    recorded = [env.frame for env in envelopes(RECORDED["okx"].path)]
    sessions: list[list[str]] = [[]]
    for previous, env in zip([None, *out], out, strict=False):
        if env.kind != CONTROL:
            sessions[-1].append(env.frame)
        elif previous is None or previous.kind != CONTROL:  # a reconnect's control envelopes come together
            sessions.append([])
    assert len(sessions) == runner.sessions
    for session in sessions:
        assert session == recorded[: len(session)], "every session starts from the venue's first frame"
    outputs = normalize(out)
    books = replay_books(outputs)  # asserts that no update is ever published for an invalid book
    lob = [record for _, topic, record in outputs if topic == "lob"]
    assert (
        sum(record["action"] == "resync" and record["reason"].startswith("reconnect") for record in lob)
        == rotations * 3
    )
    assert all(book.valid for book in books.values()) and len(books) == 3


def test_an_outdated_binance_snapshot_is_fetched_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = raw_lines(capture("BINANCE"))
    for line in lines:  # NKNUSDT's snapshot now predates the first diff the venue sends
        if line["t"] == "http" and "symbol=NKNUSDT" in line.get("url", ""):
            line["data"] = orjson.dumps({**orjson.loads(line["data"]), "lastUpdateId": 1}).decode()
    stale = tmp_path / "BINANCE.jsonl"
    stale.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    caplog.set_level(logging.INFO, logger="connectors.collector")
    with Simulator(stale, tmp_path, speed=4.0) as sim:
        plan = _plan("binance", sim, tmp_path)
        options = ConnectionOptions(backoff_min_s=0.05, backoff_max_s=0.2, rotation_s=None, open_timeout_s=10.0)
        collected, _ = _collect(plan, options, lambda out, _: sum(env.kind == REST for env in out) == 4)
        requests = sim.info()["requests"]
    out = collected.envelopes

    depth = {target: count for target, count in requests.items() if target.startswith("/api/v3/depth")}
    assert depth.pop("/api/v3/depth?symbol=NKNUSDT&limit=1000") == SNAPSHOT_ATTEMPTS
    assert depth == dict.fromkeys(depth, 1) and len(depth) == 3
    assert sum("is older than the first buffered frame" in record.getMessage() for record in caplog.records) == (
        SNAPSHOT_ATTEMPTS - 1
    )
    # The last answer is passed on all the same: the normalizer reports the gap instead of guessing.
    (snapshot,) = [env for env in out if env.kind == REST and env.venue_symbol == "NKNUSDT"]
    lob = [record for key, topic, record in normalize(out) if topic == "lob" and key == snapshot.key]
    assert any(record["action"] == "resync" and "does not bridge" in record["reason"] for record in lob)


def test_a_frame_the_framer_fails_on_is_a_dead_letter_and_the_stream_goes_on(tmp_path: Path) -> None:
    lines = raw_lines(capture("GEMINI"))
    bad = [line for line in lines if line["t"] == "recv"][40]
    original = bad["data"]
    symbol = orjson.loads(original)["symbol"]
    bad["data"] = original.replace(f'"symbol":"{symbol}"', '"symbol":"BTC USD"')  # not a Gemini symbol
    broken = tmp_path / "GEMINI.jsonl"
    broken.write_bytes(b"\n".join(orjson.dumps(line) for line in lines))
    expected = [env for env in envelopes(RECORDED["gemini"].path) if env.frame != original]
    with Simulator(broken, tmp_path, speed=0) as sim:
        plan = _plan("gemini", sim, tmp_path)
        options = ConnectionOptions(backoff_min_s=5.0, backoff_max_s=10.0, rotation_s=None, open_timeout_s=10.0)
        collected, _ = _collect(plan, options, lambda out, _: len(out) >= len(expected))

    ((topic, record),) = collected.dead_letters
    assert (topic, record["flow"], record["exchange"]) == ("dead_letter", "collect_cex", "gemini")
    assert "framer on_recv failed: ValueError: 'BTC USD' is not a Gemini symbol" in record["reason"]
    assert record["payload"] == bad["data"].encode()
    assert [(env.key, env.frame) for env in collected.envelopes] == [(env.key, env.frame) for env in expected]
