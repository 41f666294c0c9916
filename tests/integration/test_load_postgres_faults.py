"""load_postgres when things go wrong, on real servers: kill -9, a database outage, rows the database refuses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from connectors.kafka import TopicRecord, ensure_topics, read_topic
from embedded.kafka import TansuBroker
from embedded.postgres import EmbeddedPostgres
from schemas.serde import codec_for
from tests.harness import flow_env, init_recovery, run_flow, settings_for, start_flow
from tests.integration.load_postgres_support import (
    CEX_LOADED,
    LOADER,
    assert_table_equals_topic,
    count_rows,
    create_database,
    read_topics,
    replayed_captures,
    table_rows,
    wait_for_rows,
)
from tests.support import DATA

pytestmark = pytest.mark.integration

#: Small batches and polls, so that the flow is still mid-stream when the test strikes.
SLOW = {"POSTGRES_BATCH_SIZE": "20", "CONSUMER_BATCH_SIZE": "100"}
ERC20_TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], dict[str, list[TopicRecord]]]]:
    with replayed_captures(tmp_path_factory.mktemp("captured")) as (_, env):
        yield env, read_topics(env, CEX_LOADED)


def _assert_tables_equal_topics(dsn: str, records: dict[str, list[TopicRecord]]) -> None:
    for topic in CEX_LOADED:
        assert_table_equals_topic(dsn, topic, records[topic])


def _expected_total(records: dict[str, list[TopicRecord]]) -> int:
    return sum(len(rs) for rs in records.values())


def test_kill_9_mid_stream_and_restart_loads_every_row_exactly_once(
    captured: tuple[dict[str, str], dict[str, list[TopicRecord]]], postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    env, records = captured
    dsn = create_database(postgres, "load_crash")
    env = {**env, **SLOW, "DATABASE_URL": dsn}
    recovery = tmp_path / "recovery"
    init_recovery(recovery)
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    total = _expected_total(records)

    flow = start_flow(LOADER, env, tmp_path / "load-1.log", *args)
    loaded = wait_for_rows(dsn, CEX_LOADED, total * 2 // 5)
    assert flow.running, f"the flow finished before it could be killed:\n{flow.log_tail()}"
    flow.kill()
    at_kill = count_rows(dsn, CEX_LOADED)
    assert loaded <= at_kill < total

    run_flow(LOADER, env, *args)  # resumes from the last snapshot: the rows after it are written again
    _assert_tables_equal_topics(dsn, records)


def test_a_database_outage_mid_stream_holds_the_rows_until_it_is_back(
    captured: tuple[dict[str, str], dict[str, list[TopicRecord]]], tmp_path: Path
) -> None:
    env, records = captured
    total = _expected_total(records)
    with EmbeddedPostgres(tmp_path / "pg") as server:
        env = {
            **env,
            **SLOW,
            "DATABASE_URL": server.dsn,
            "POSTGRES_RETRY_MIN_S": "0.2",
            "POSTGRES_RETRY_MAX_S": "1",
        }
        log = tmp_path / "load.log"
        flow = start_flow(LOADER, env, log)
        try:
            assert wait_for_rows(server.dsn, CEX_LOADED, total // 5) < total
            server.stop()
            time.sleep(4)
            assert flow.running, f"the flow must wait for the database, not stop:\n{flow.log_tail()}"
            server.start()
            assert flow.process is not None and flow.process.wait(180) == 0, flow.log_tail()
        finally:
            flow.stop()
        _assert_tables_equal_topics(server.dsn, records)
    text = log.read_text()
    assert text.count("PostgreSQL unavailable") == 1, text[-3000:]
    assert text.count("PostgreSQL available again") == 1, text[-3000:]


def _erc20_transfers() -> list[dict[str, Any]]:
    """The ERC-20 Transfer logs of blocks 17173049-17173050 (ethereum-etl's export) as token_transfers records."""
    logs_file = DATA / "ethereum" / "blocks_17173049_17173050" / "logs.json"
    transfers = []
    for line in logs_file.read_text().splitlines():
        log = json.loads(line)
        if len(log["topics"]) != 3 or log["topics"][0] != ERC20_TRANSFER or log["data"] == "0x":
            continue
        transfers.append(
            {
                "chain": "ethereum",
                "block_number": log["block_number"],
                "block_hash": log["block_hash"],
                "event_timestamp": log["block_timestamp"] * 1_000_000,
                "receipt_timestamp": log["block_timestamp"] * 1_000_000 + 2_000_000,
                "removed": False,
                "transaction_hash": log["transaction_hash"],
                "log_index": log["log_index"],
                "token_address": log["address"],
                "standard": "erc20",
                "from_address": "0x" + log["topics"][1][-40:],
                "to_address": "0x" + log["topics"][2][-40:],
                "value": str(int(log["data"], 16)),
                "token_symbol": None,
                "token_decimals": None,
                "value_scaled": None,
            }
        )
    return transfers


@pytest.mark.parametrize("method", ["copy", "values"])
def test_rows_the_database_refuses_go_to_dead_letter_and_the_rest_of_their_batch_loads(
    method: str,
    captured: tuple[dict[str, str], dict[str, list[TopicRecord]]],
    kafka: TansuBroker,
    postgres: EmbeddedPostgres,
) -> None:
    trades = [r.value for r in captured[1]["trades"][:400]]
    transfers = _erc20_transfers()
    assert len(transfers) > 100
    bad = {
        ("trades", 100): ({**trades[100], "trade_id": "7\x0042"}, "0x00"),
        ("trades", 200): ({**trades[200], "event_timestamp": 2**62}, "outside the representable time range"),
        ("token_transfers", 10): ({**transfers[10], "value": str(2**256)}, 'check constraint "value_uint256"'),
        ("token_transfers", 20): ({**transfers[20], "value": "9" * 80}, "numeric field overflow"),
        # The COPY path's binary encoder refuses it before the server sees it; the VALUES path's server refuses it.
        ("token_transfers", 30): (
            {**transfers[30], "value": "12abc"},
            "no binary COPY form: column value = '12abc'"
            if method == "copy"
            else 'invalid input syntax for type numeric: "12abc"',
        ),
    }
    batches = {"trades": trades, "token_transfers": transfers}
    for (topic, index), (record, _) in bad.items():
        batches[topic][index] = record
    env = flow_env(
        kafka.bootstrap,
        KAFKA_STOP_AT_END="true",
        TOPIC_PARTITIONS="default=1",  # one partition: every bad row shares a batch with good ones
        DATABASE_URL=create_database(postgres, f"load_rejects_{method}"),
        POSTGRES_WRITE_METHOD=method,
        POSTGRES_TOPICS="trades,token_transfers,dead_letter",
    )
    ensure_topics(settings_for(env), [*batches, "dead_letter"])
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": "true"})
    for topic, values in batches.items():
        for value in values:
            producer.produce(topic, key=b"k", value=codec_for(topic).encode(value))
    assert producer.flush(30) == 0

    run_flow(LOADER, env)
    dsn = env["DATABASE_URL"]
    for topic, values in batches.items():
        refused = [record for (t, _), (record, _) in bad.items() if t == topic]
        stored = sorted(json.dumps(row, sort_keys=True) for row in _avro_rows(dsn, topic))
        good = sorted(json.dumps(value, sort_keys=True) for value in values if value not in refused)
        assert stored == good, f"{topic}: every good row of the batch is loaded, and only those"
    dead = read_topic(settings_for(env), "dead_letter")
    assert len(dead) == len(bad)
    for letter in dead:
        value = letter.value
        source = (value["source_topic"], value["source_offset"])
        record, words = bad[source]  # one partition written from offset 0: a record's index is its offset
        assert value["source_partition"] == 0
        assert (value["flow"], value["step"], value["error_type"]) == ("load_postgres", "postgres_out", "db_rejected")
        assert words in value["reason"], value["reason"]
        assert letter.headers["dlq.reason"].decode() == value["reason"]
        assert codec_for(source[0]).decode(value["payload"]) == record  # the original record, unchanged

    run_flow(LOADER, env)  # the next run loads the dead letters themselves
    letters = {(row["source_topic"], row["source_offset"]): row["reason"] for row in table_rows(dsn, "dead_letter")}
    assert letters == {(v.value["source_topic"], v.value["source_offset"]): v.value["reason"] for v in dead}


def _avro_rows(dsn: str, table: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in row.items() if k not in ("kafka_partition", "kafka_offset", "content_hash")}
        for row in table_rows(dsn, table)
    ]
