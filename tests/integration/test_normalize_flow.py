"""normalize_cex on real servers: replay a capture into Tansu, run the flow, decode what it produced."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.inputs import write_capture
from connectors.kafka import TopicError, ensure_topics, read_topic
from embedded.kafka import TansuBroker
from schemas import CEX_TOPICS
from schemas.raw import RawEnvelope
from tests.harness import flow_env, init_recovery, run_flow, settings_for, start_flow
from tests.support import CRYPTOFEED, capture, envelopes, normalize

pytestmark = pytest.mark.integration

INTERVAL_US = 60_000_000  # the flow's default BOOK_SNAPSHOT_INTERVAL_S, as micros


def _canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _consumed(env: dict[str, str]) -> dict[tuple[str, str], list[bytes]]:
    """(key, topic) -> records in partition order, for every standardized topic."""
    config = settings_for(env)
    out: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for topic in CEX_TOPICS:
        try:
            rows = read_topic(config, topic)
        except TopicError:
            continue
        for row in sorted(rows, key=lambda r: (r.partition, r.offset)):
            out[(row.key or "", topic)].append(_canonical(row.value))
    return out


def _offline(envs: list[RawEnvelope]) -> dict[tuple[str, str], list[bytes]]:
    out: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for key, topic, record in normalize(envs, snapshot_interval_us=INTERVAL_US):
        out[(key, topic)].append(_canonical(record))
    return out


def test_every_venue_replayed_through_kafka_normalizes_to_the_offline_records(kafka: TansuBroker) -> None:
    paths = sorted(CRYPTOFEED.glob("*.jsonl.zst"))
    env = flow_env(kafka.bootstrap, KAFKA_STOP_AT_END="true", REPLAY_CAPTURES=str(CRYPTOFEED / "*.jsonl.zst"))
    run_flow("flows.replay:flow", env, "-w", "2")
    expected_envelopes = {path: envelopes(path) for path in paths}
    raw = read_topic(settings_for(env), "raw", decode=False)
    assert len(raw) == sum(len(envs) for envs in expected_envelopes.values())
    assert {row.key for row in raw} == {env.key for envs in expected_envelopes.values() for env in envs}
    run_flow("flows.normalize_cex:flow", env)
    expected: dict[tuple[str, str], list[bytes]] = {}
    for envs in expected_envelopes.values():
        expected.update(_offline(envs))
    assert _consumed(env) == expected
    assert read_topic(settings_for(env), "dead_letter") == []


def _watermark_floor(bootstrap: str, topic: str) -> int:
    """A cheap lower bound of a topic's record count (sum of high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        partitions = consumer.list_topics(timeout=5).topics.get(topic)
        if partitions is None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in partitions.partitions
        )
    finally:
        consumer.close()


def _produce_raw(bootstrap: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in items:
        producer.produce("raw", key=key, value=value)
    producer.flush(10)


def test_bad_input_goes_to_dead_letter_and_the_flow_keeps_going(kafka: TansuBroker) -> None:
    env = flow_env(kafka.bootstrap, KAFKA_STOP_AT_END="true")
    good = envelopes(capture("BINANCE"))
    trade = next(e for e in good if e.channel == "aggTrade")
    bad_venue = orjson.dumps({**orjson.loads(trade.to_json()), "exchange": "nowhere"})
    bad_frame = orjson.dumps({**orjson.loads(trade.to_json()), "frame": '{"stream":"x@aggTrade","data":{'})
    bad_shape = orjson.dumps(
        {**orjson.loads(trade.to_json()), "frame": '{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade"}}'}
    )
    key = trade.key.encode()
    ensure_topics(settings_for(env), ["raw"])
    _produce_raw(
        kafka.bootstrap,
        [(key, b"not json"), (b"x", bad_venue), (key, bad_frame), (key, bad_shape)]
        + [(e.key.encode(), e.to_json()) for e in good],
    )
    run_flow("flows.normalize_cex:flow", env)
    dead = read_topic(settings_for(env), "dead_letter")
    kinds = Counter(row.value["error_type"] for row in dead)
    assert kinds == Counter({"malformed_json": 2, "unknown_venue": 1, "unexpected_shape": 1})
    for row in dead:
        assert row.value["reason"] and row.value["source_topic"] == "raw" and row.value["source_offset"] is not None
        assert row.headers["dlq.reason"].decode() == row.value["reason"]
    assert b"not json" in {row.value["payload"] for row in dead}
    # Every good record still came through.
    assert _consumed(env) == _offline(good)


def test_kill_9_and_restart_loses_nothing(kafka: TansuBroker, tmp_path: Path) -> None:
    # The recording under four instruments (165,000 frames): enough input that the flow is still running when
    # it is killed, however fast it has become.
    captures = tmp_path / "captures"
    captures.mkdir()
    for base in ("BTC", "ETH", "SOL", "XRP"):
        write_capture(captures / f"{base}.gz", base)
    env = flow_env(
        kafka.bootstrap,
        KAFKA_STOP_AT_END="true",
        TOPIC_PARTITIONS="default=2,raw=2",
        CONSUMER_BATCH_SIZE="200",
        REPLAY_CAPTURES=str(captures / "*.gz"),
        REPLAY_VENUE="binance",
    )
    run_flow("flows.replay:flow", env)
    recovery = tmp_path / "recovery"
    init_recovery(recovery)
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    expected: dict[tuple[str, str], list[bytes]] = {}
    for capture_file in sorted(captures.glob("*.gz")):
        expected.update(_offline(envelopes(capture_file, venue="binance")))
    assert len({key for key, _ in expected}) == 4
    total = sum(len(v) for v in expected.values())

    flow = start_flow("flows.normalize_cex:flow", env, tmp_path / "normalize-1.log", *args)
    deadline = time.monotonic() + 120
    produced = 0
    while time.monotonic() < deadline and produced < 3000:
        time.sleep(0.1)
        produced = _watermark_floor(kafka.bootstrap, "ticker")
    assert flow.running, "the flow finished before it could be killed; the input is too small"
    flow.kill()
    assert produced < total, (produced, total)

    run_flow("flows.normalize_cex:flow", env, *args)
    got = _consumed(env)
    assert set(got) == set(expected)
    for key_topic, records in expected.items():
        received = got[key_topic]
        # Nothing lost, nothing re-derived differently: the distinct records are exactly the expected ones.
        assert set(received) == set(records), key_topic
        # Duplicates only from the at-least-once window: the tail before the crash repeated once, in order.
        deduplicated = list(dict.fromkeys(received))
        assert deduplicated == list(dict.fromkeys(records)), key_topic


def test_topics_are_created_with_configured_partitions_and_existence_is_real(kafka: TansuBroker) -> None:
    from connectors.kafka import existing_topics

    config = settings_for(flow_env(kafka.bootstrap, TOPIC_PARTITIONS="default=2,raw=5"))
    assert ensure_topics(config, ["raw", "trades"]) == {"raw": 5, "trades": 2}
    assert "ghost" not in existing_topics(config)
    with pytest.raises(TopicError, match="does not exist"):
        read_topic(config, "ghost")


def _scrape(port: int) -> dict[str, float]:
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_a_running_flow_serves_its_metrics(kafka: TansuBroker, tmp_path: Path) -> None:
    from embedded.process import free_port

    port = free_port()
    env = flow_env(kafka.bootstrap, BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(port))
    good = envelopes(capture("BINANCE"))
    ensure_topics(settings_for(env), ["raw"])
    _produce_raw(kafka.bootstrap, [(b"k", b"not json")] + [(e.key.encode(), e.to_json()) for e in good])
    trades = sum(1 for _, topic, _ in normalize(good) if topic == "trades")
    flow = start_flow("flows.normalize_cex:flow", env, tmp_path / "normalize.log")
    try:
        out_key = 'marketpipe_records_out_total{flow="normalize_cex",topic="trades"}'
        in_key = 'marketpipe_records_in_total{flow="normalize_cex"}'
        samples: dict[str, float] = {}
        deadline = time.monotonic() + 60
        # Instruments are normalized batch by batch, so the trades can be counted before every record is in.
        while time.monotonic() < deadline and (samples.get(out_key), samples.get(in_key)) != (trades, len(good) + 1):
            time.sleep(0.5)
            try:
                samples = _scrape(port)
            except OSError:
                continue
        assert samples.get(out_key) == trades
        assert samples.get(in_key) == len(good) + 1
        assert samples['marketpipe_dead_letters_total{error_type="malformed_json",flow="normalize_cex"}'] == 1
        assert any(name.startswith("bytewax_") for name in samples)
    finally:
        flow.stop()


def test_a_two_process_cluster_with_per_process_recovery_storage(kafka: TansuBroker, tmp_path: Path) -> None:
    """Two processes (-i/-a), each with its own recovery volume holding its own partitions, as on Kubernetes."""
    from connectors.recovery import init_process_partitions
    from embedded.process import free_port

    env = flow_env(
        kafka.bootstrap,
        KAFKA_STOP_AT_END="true",
        TOPIC_PARTITIONS="default=4,raw=4",
        REPLAY_CAPTURES=str(CRYPTOFEED / "*.jsonl.zst"),
    )
    run_flow("flows.replay:flow", env)
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    dirs = [tmp_path / f"recovery-{i}" for i in range(2)]
    held = [init_process_partitions(d, 2, i, 2) for i, d in enumerate(dirs)]
    assert [[p.name for p in h] for h in held] == [["part-0.sqlite3"], ["part-1.sqlite3"]]
    processes = [
        start_flow(
            "flows.normalize_cex:flow",
            env,
            tmp_path / f"p{i}.log",
            "-i",
            str(i),
            "-a",
            addresses,
            "-r",
            str(dirs[i]),
            "-s",
            "1",
            "-b",
            "0",
        )
        for i in range(2)
    ]
    for proc in processes:
        assert proc.process is not None
        assert proc.process.wait(240) == 0, proc.log_tail()
    expected: dict[tuple[str, str], list[bytes]] = {}
    for path in sorted(CRYPTOFEED.glob("*.jsonl.zst")):
        expected.update(_offline(envelopes(path)))
    assert _consumed(env) == expected
