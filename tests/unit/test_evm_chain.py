"""Chain records from recorded JSON-RPC responses, and the reorg window's bookkeeping."""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from typing import Any

import pytest

from operators.evm.chain_records import MalformedBlock, block_outputs, header_of
from operators.evm.reorg import ChainWindow, ReorgTooDeep
from tests.evm_support import RPC, matches_exports


def _recorded(path: str) -> Any:
    return json.loads((RPC / path).read_text())["result"]


def _recorded_blocks() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each recorded full block with the logs of its recorded receipts (the test's own flattening)."""
    receipts = [_recorded(str(p.relative_to(RPC))) for p in RPC.rglob("*eth_getTransactionReceipt_*.json")]
    blocks = []
    for path in sorted(RPC.rglob("*eth_getBlockByNumber_0x*_true.json")):
        block = _recorded(str(path.relative_to(RPC)))
        logs = [log for r in receipts if r["blockHash"] == block["hash"] for log in r["logs"]]
        blocks.append((block, sorted(logs, key=lambda g: int(g["logIndex"], 16))))
    return blocks


def test_recorded_blocks_become_the_records_ethereum_etl_exported() -> None:
    produced: dict[str, list[dict[str, Any]]] = defaultdict(list)
    keys: dict[str, list[str]] = defaultdict(list)
    for block, logs in _recorded_blocks():
        for key, (topic, record) in block_outputs(block, logs, "ethereum", receipt_ts=1):
            produced[topic].append(record)
            keys[topic].append(key)
    assert len(produced["ethereum_blocks"]) == 3
    matches_exports(produced)
    assert keys["ethereum_blocks"] == [str(r["block_number"]) for r in produced["ethereum_blocks"]]
    assert keys["ethereum_transactions"] == [r["hash"] for r in produced["ethereum_transactions"]]
    assert keys["ethereum_logs"] == [r["address"] for r in produced["ethereum_logs"]]
    every = [r for records in produced.values() for r in records]
    assert all(r["removed"] is False and r["chain"] == "ethereum" and r["receipt_timestamp"] == 1 for r in every)


def test_a_retraction_carries_removed_on_every_record() -> None:
    block, logs = _recorded_blocks()[-1]
    outputs = block_outputs(block, logs, "ethereum", receipt_ts=2, removed=True)
    assert len(outputs) == 1 + len(block["transactions"]) + len(logs)
    assert all(record["removed"] is True for _, (_, record) in outputs)


def test_an_unreadable_transaction_or_log_is_dead_lettered_and_the_rest_of_the_block_goes_out() -> None:
    block, logs = next((b, g) for b, g in _recorded_blocks() if len(b["transactions"]) >= 2 and g)
    broken_tx = {k: v for k, v in block["transactions"][1].items() if k != "from"}
    broken_log = {**logs[0], "logIndex": "12"}
    outputs = block_outputs({**block, "transactions": [block["transactions"][0], broken_tx]}, [broken_log], "x", 3)
    topics = [topic for _, (topic, _) in outputs]
    assert topics == ["ethereum_blocks", "ethereum_transactions", "dead_letter", "dead_letter"]
    dead = [record for _, (topic, record) in outputs if topic == "dead_letter"]
    assert "transaction of block" in dead[0]["reason"] and "'from'" in dead[0]["reason"]
    assert "log of block" in dead[1]["reason"] and "not a hex quantity" in dead[1]["reason"]
    assert json.loads(dead[0]["payload"]) == broken_tx


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"number": 7}, "not a hex quantity"),
        ({"parentHash": None}, "parentHash"),
        ({"transactions": ["0x2e3dcd051a91d3a694f6b8de2ac4b5fe7acdba55f58bcf8471ff00d4a430074d"]}, "full transaction"),
        ({"miner": "nobody"}, "not an address"),
    ],
)
def test_an_unreadable_block_header_is_an_error_never_a_skipped_block(change: dict[str, Any], reason: str) -> None:
    block, logs = _recorded_blocks()[-1]
    broken = {k: v for k, v in {**block, **change}.items() if v is not None}
    with pytest.raises(MalformedBlock, match=reason):
        block_outputs(broken, logs, "ethereum", 1)


def _header(number: int, block_hash: str, parent: str) -> dict[str, Any]:
    return {"chain": "c", "block_number": number, "block_hash": block_hash, "parent_hash": parent}


def _block_json(number: int, block_hash: str, parent: str) -> dict[str, Any]:
    return {"number": hex(number), "hash": block_hash, "parentHash": parent, "timestamp": "0x1"}


def test_the_window_finds_the_common_ancestor_and_hands_back_the_replaced_blocks_tip_first() -> None:
    window = ChainWindow(4)
    for n in range(10, 16):
        window.append(_header(n, f"0x{n}", f"0x{n - 1}"))
    assert window.numbers == [12, 13, 14, 15], "only the last 4 are remembered"
    assert window.continues(header_of(_block_json(16, "0x16", "0x15")))
    assert not window.continues(header_of(_block_json(16, "0x16b", "0x15b")))
    assert not window.continues(header_of(_block_json(17, "0x17", "0x15")))
    restored = ChainWindow(4, pickle.loads(pickle.dumps(window.snapshot())))
    ancestor = restored.fork_point({12: "0x12", 13: "0x13", 14: "0x14b", 15: "0x15b"})
    assert ancestor == 13
    assert [b["block_number"] for b in restored.above(ancestor)] == [15, 14]
    assert restored.numbers == [12, 13, 14, 15], "looking does not change the window"
    assert [b["block_number"] for b in restored.rollback(ancestor)] == [15, 14]
    assert restored.tip is not None and restored.tip["block_hash"] == "0x13"
    with pytest.raises(ReorgTooDeep, match="deeper than the 4-block window"):
        window.fork_point({n: f"0x{n}b" for n in range(12, 16)})
