"""collect_evm as a real process: the local JSON-RPC server in, Tansu out; fixtures, reorgs, kill -9, RPC errors."""

from __future__ import annotations

import pickle
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka import TopicError, read_topic
from embedded.kafka import TansuBroker
from evm_rpc import RecordedRpcServer
from tests.evm_support import BLOCKS_2023, exports_2023, json_lines, matches_exports
from tests.harness import flow_env, init_recovery, run_flow, settings_for, start_flow

pytestmark = pytest.mark.integration

FLOW = "flows.collect_evm:flow"
TOPICS = ("ethereum_blocks", "ethereum_transactions", "ethereum_logs")
FIRST, SECOND = 17173049, 17173050
SECOND_HASH = json_lines(BLOCKS_2023 / "blocks.json")[1]["hash"]


def _env(kafka: TansuBroker, node: RecordedRpcServer, start: int, end: int | None, **extra: str) -> dict[str, str]:
    settings = {
        "EVM_RPC_URL": node.url,
        "EVM_CONFIRMATIONS": "0",
        "EVM_START_BLOCK": str(start),
        "EVM_POLL_INTERVAL_S": "0.2",
        "EVM_RPC_BACKOFF_INITIAL_S": "0.01",
        "EVM_RPC_BACKOFF_MAX_S": "0.05",
        **({"EVM_END_BLOCK": str(end)} if end is not None else {}),
        **extra,
    }
    return flow_env(kafka.bootstrap, **settings)


def _records(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every record of the chain topics, per topic, in (partition, offset) order."""
    config = settings_for(env)
    found: dict[str, list[dict[str, Any]]] = {}
    for topic in TOPICS:
        try:
            rows = read_topic(config, topic)
        except TopicError:
            rows = []
        found[topic] = [row.value | {"_key": row.key} for row in sorted(rows, key=lambda r: (r.partition, r.offset))]
    return found


def _plain(records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {topic: [{k: v for k, v in r.items() if k != "_key"} for r in rows] for topic, rows in records.items()}


def _wait(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _full_block_requests(node: RecordedRpcServer, since: int = 0) -> list[int]:
    return [
        int(r["params"][0], 16)
        for r in node.requests()[since:]
        if r["method"] == "eth_getBlockByNumber" and r["params"][1] is True
    ]


def _completed(node: RecordedRpcServer, block_hash: str) -> bool:
    """Whether the collector has polled the head again after fetching the logs of ``block_hash``."""
    methods = [(r["method"], r["params"]) for r in node.requests()]
    fetched = [i for i, (m, p) in enumerate(methods) if m == "eth_getLogs" and p[0].get("blockHash") == block_hash]
    return bool(fetched) and any(m == "eth_blockNumber" for m, _ in methods[fetched[0] :])


def test_collected_2015_2016_blocks_equal_ethereum_etl_exports(kafka: TansuBroker, tmp_path: Path) -> None:
    with RecordedRpcServer(tmp_path) as node:
        run_flow(FLOW, _env(kafka, node, 483920, 483920))
        env = _env(kafka, node, 1755634, 1755635)
        run_flow(FLOW, env)
    records = _records(env)
    matches_exports(_plain(records))
    assert [r["_key"] for r in records["ethereum_blocks"]] == [
        str(r["block_number"]) for r in records["ethereum_blocks"]
    ]
    assert all(r["_key"] == r["hash"] for r in records["ethereum_transactions"])
    assert all(r["_key"] == r["address"] for r in records["ethereum_logs"])
    assert all(r["removed"] is False for rows in records.values() for r in rows)


def test_a_reorg_retracts_the_replaced_block_then_sends_the_new_branch(kafka: TansuBroker, tmp_path: Path) -> None:
    with RecordedRpcServer(tmp_path, head=SECOND) as node:
        env = _env(kafka, node, FIRST, SECOND + 1, EVM_RPC_ATTEMPTS="2")
        collector = start_flow(FLOW, env, tmp_path / "collect.log")
        _wait(lambda: _completed(node, SECOND_HASH), "both recorded blocks collected")
        # The first attempt to fetch the replaced block fails for good: the retraction must still happen, once.
        node.inject("rate_limit", count=2, method="eth_getBlockByHash")
        replacement, extension = node.fork(SECOND, keep_transactions=91, extend=1)
        assert collector.process is not None and collector.process.wait(120) == 0, collector.log_tail()
        assert node.faults_served() == {"rate_limit": 2}
    records = _records(env)
    assert "reorg on ethereum: blocks 17173050" in collector.log_path.read_text()
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for topic, rows in records.items():
        for row in rows:
            by_key[(topic, row["_key"])].append(row)
    blocks = {
        n: [(r["block_hash"], r["removed"]) for r in by_key[("ethereum_blocks", str(n))]] for n in (FIRST, SECOND)
    }
    original = blocks[SECOND][0][0]
    assert blocks == {
        FIRST: [(blocks[FIRST][0][0], False)],
        SECOND: [(original, False), (original, True), (replacement, False)],
    }
    assert [(r["block_hash"], r["parent_hash"]) for r in by_key[("ethereum_blocks", str(SECOND + 1))]] == [
        (extension, replacement)
    ]

    def without_flags(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in ("removed", "receipt_timestamp")}

    old_txs = [r for r in records["ethereum_transactions"] if r["block_hash"] == original and not r["removed"]]
    assert len(old_txs) == 182
    for tx in old_txs:
        history = by_key[("ethereum_transactions", tx["hash"])]
        assert [(r["block_hash"], r["removed"]) for r in history[:2]] == [(original, False), (original, True)]
        assert without_flags(history[1]) == without_flags(history[0]), "the retraction is the record, removed"
        kept = tx["transaction_index"] < 91
        assert [(r["block_hash"], r["removed"]) for r in history[2:]] == ([(replacement, False)] if kept else [])
    old_logs = [r for r in records["ethereum_logs"] if r["block_hash"] == original and not r["removed"]]
    retracted = [r for r in records["ethereum_logs"] if r["block_hash"] == original and r["removed"]]
    assert sorted(map(str, map(without_flags, retracted))) == sorted(map(str, map(without_flags, old_logs)))
    new_logs = [r for r in records["ethereum_logs"] if r["block_hash"] == replacement]
    assert {(r["transaction_hash"], r["log_index"]) for r in new_logs} == {
        (r["transaction_hash"], r["log_index"]) for r in old_logs if r["transaction_index"] < 91
    }
    for address in {r["address"] for r in old_logs}:
        states = [
            (r["block_hash"], r["removed"]) for r in by_key[("ethereum_logs", address)] if r["block_number"] == SECOND
        ]
        order = [states.index(s) for s in [(original, False), (original, True), (replacement, False)] if s in states]
        assert order == sorted(order), f"{address}: retraction between the old and the new branch"


def _committed_tip(recovery: Path) -> int | None:
    """The last block in the collector's committed recovery snapshot (read from Bytewax's SQLite store)."""
    query = """
        SELECT ser_change FROM snaps
        WHERE step_id = 'collect_evm.chain_in'
          AND snap_epoch <= (SELECT max(commit_epoch) FROM commits)
          AND snap_epoch < (SELECT min(worker_frontier) FROM fronts)
        ORDER BY snap_epoch DESC LIMIT 1
    """
    try:
        with closing(sqlite3.connect(recovery / "part-0.sqlite3", timeout=5)) as db:
            row = db.execute(query).fetchone()
    except sqlite3.OperationalError:
        return None  # the flow is writing; ask again
    window = pickle.loads(row[0]) if row and row[0] else None
    return int(window[-1]["block_number"]) if window else None


def test_kill_9_mid_block_and_restart_resumes_after_the_last_completed_block(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    recovery = tmp_path / "recovery"
    init_recovery(recovery)
    args = ("-r", str(recovery), "-s", "1", "-b", "0")
    with RecordedRpcServer(tmp_path, head=FIRST) as node:
        env = _env(kafka, node, FIRST, SECOND, EVM_RPC_TIMEOUT_S="120")
        collector = start_flow(FLOW, env, tmp_path / "collect-1.log", *args)
        _wait(lambda: _committed_tip(recovery) == FIRST, "block 17173049 in the committed recovery state")
        # The next block's logs never come: the collector is killed in the middle of block 17173050.
        node.inject("timeout", method="eth_getLogs", delay_s=600)
        node.set_head(SECOND)
        _wait(lambda: SECOND in _full_block_requests(node), "the collector fetching block 17173050")
        collector.kill()
        assert [r["block_number"] for r in _records(env)["ethereum_blocks"]] == [FIRST]

        node.clear_faults()
        before_restart = len(node.requests())
        result = run_flow(FLOW, env, *args)
        assert f"resuming ethereum after block {FIRST}" in result.stderr
        assert _full_block_requests(node, before_restart) == [SECOND], "nothing completed is fetched again"
    matches_exports(_plain(_records(env)), exports_2023())


def test_rate_limits_timeouts_and_unavailability_are_retried_and_the_run_completes(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    with RecordedRpcServer(tmp_path, head=SECOND) as node:
        # More rate limits than the client's attempts: the source waits a poll interval and tries again.
        node.inject("rate_limit", count=4, method="eth_blockNumber")
        node.inject("rate_limit", count=2, method="eth_getBlockByNumber")
        node.inject("http_429", count=1, method="eth_getLogs", retry_after_s=1)
        node.inject("http_503", count=1, method="eth_getLogs")
        node.inject("timeout", count=1, method="eth_getLogs", delay_s=6)
        env = _env(kafka, node, FIRST, SECOND, EVM_RPC_ATTEMPTS="3", EVM_RPC_TIMEOUT_S="2")
        result = run_flow(FLOW, env)
        assert node.faults_served() == {"rate_limit": 6, "http_429": 1, "http_503": 1, "timeout": 1}
    assert "failed after 3 attempts" in result.stderr and "trying again in 0.2s" in result.stderr
    matches_exports(_plain(_records(env)), exports_2023())
