"""Helpers for the Ethereum tests: the shipped mainnet data, and an ABI reader independent of the code under test.

The slicing here reads 32-byte words by hand (``int(hex, 16)``, two's complement by subtraction) and takes topic0
values from ``data/ethereum/event_signatures.md``, so expected values never come from ``operators.evm``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from tests.support import DATA

ETHEREUM = DATA / "ethereum"
BLOCKS_2023 = ETHEREUM / "blocks_17173049_17173050"
LOGS_2023 = BLOCKS_2023 / "logs.json"
RPC = ETHEREUM / "rpc"


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def signature_topics() -> dict[str, str]:
    """Canonical signature -> topic0, as listed in event_signatures.md."""
    table: dict[str, str] = {}
    for line in (ETHEREUM / "event_signatures.md").read_text().splitlines():
        match = re.match(r"\|[^|]*\| `([^`]+)` \| `(0x[0-9a-f]{64})` \|", line)
        if match:
            table[match.group(1)] = match.group(2)
    return table


TOPICS = signature_topics()
TRANSFER = TOPICS["Transfer(address,address,uint256)"]
V2_SWAP = TOPICS["Swap(address,uint256,uint256,uint256,uint256,address)"]
V3_SWAP = TOPICS["Swap(address,address,int256,int256,uint160,uint128,int24)"]


def words(data: str) -> list[int]:
    body = data[2:]
    return [int(body[i : i + 64], 16) for i in range(0, len(body), 64)]


def signed(word: int) -> int:
    return word - 2**256 if word >= 2**255 else word


def topic_address(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def expected_events(logs: list[dict[str, Any]]) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """Per kind (erc20, erc721, v2, v3): (tx hash, log index) -> the fields a decoder must produce."""
    kinds: dict[str, dict[tuple[str, int], dict[str, Any]]] = {"erc20": {}, "erc721": {}, "v2": {}, "v3": {}}
    for log in logs:
        topics, data = log["topics"], log["data"]
        at = (log["transaction_hash"], log["log_index"])
        if not topics:
            continue
        if topics[0] == TRANSFER and len(topics) == 3 and len(data) == 2 + 64:
            kinds["erc20"][at] = {
                "from_address": topic_address(topics[1]),
                "to_address": topic_address(topics[2]),
                "value": str(words(data)[0]),
            }
        elif topics[0] == TRANSFER and len(topics) == 4 and data == "0x":
            kinds["erc721"][at] = {
                "from_address": topic_address(topics[1]),
                "to_address": topic_address(topics[2]),
                "value": str(int(topics[3], 16)),
            }
        elif topics[0] == V2_SWAP:
            in0, in1, out0, out1 = words(data)
            kinds["v2"][at] = {
                "sender": topic_address(topics[1]),
                "recipient": topic_address(topics[2]),
                "amount0": str(in0 - out0),
                "amount1": str(in1 - out1),
            }
        elif topics[0] == V3_SWAP:
            amount0, amount1, sqrt_price, liquidity, tick = words(data)
            kinds["v3"][at] = {
                "sender": topic_address(topics[1]),
                "recipient": topic_address(topics[2]),
                "amount0": str(signed(amount0)),
                "amount1": str(signed(amount1)),
                "sqrt_price_x96": str(sqrt_price),
                "liquidity": str(liquidity),
                "tick": signed(tick),
            }
    return kinds


def word(value: int) -> str:
    """One ABI word (two's complement for negatives), 64 hex digits."""
    return f"{value % 2**256:064x}"


def topic_of(value: int | str) -> str:
    """A topic: an address (0x + 40 hex) left-padded, or an integer as a word."""
    if isinstance(value, str):
        return "0x" + value[2:].rjust(64, "0")
    return "0x" + word(value)


# -- ethereum-etl's expected exports of the recorded 2015-2016 blocks, renamed to our schemas by the test --------

#: Topic -> records.
Exports = dict[str, list[dict[str, Any]]]

_BLOCK_FIELDS = {
    "number": "block_number",
    "hash": "block_hash",
    "parent_hash": "parent_hash",
    "miner": "miner",
    "gas_limit": "gas_limit",
    "gas_used": "gas_used",
    "base_fee_per_gas": "base_fee_per_gas",
    "transaction_count": "transaction_count",
    "size": "size",
    "difficulty": "difficulty",
    "extra_data": "extra_data",
    "timestamp": "event_timestamp",
}
_TX_FIELDS = {
    "hash": "hash",
    "transaction_index": "transaction_index",
    "from_address": "from_address",
    "to_address": "to_address",
    "value": "value",
    "gas": "gas",
    "gas_price": "gas_price",
    "max_fee_per_gas": "max_fee_per_gas",
    "max_priority_fee_per_gas": "max_priority_fee_per_gas",
    "nonce": "nonce",
    "input": "input",
    "transaction_type": "transaction_type",
    "block_number": "block_number",
    "block_hash": "block_hash",
    "block_timestamp": "event_timestamp",
}
_LOG_FIELDS = {
    "log_index": "log_index",
    "transaction_hash": "transaction_hash",
    "transaction_index": "transaction_index",
    "address": "address",
    "data": "data",
    "topics": "topics",
    "block_number": "block_number",
    "block_hash": "block_hash",
    "block_timestamp": "event_timestamp",
}
#: uint256 columns: exact decimal strings in our schemas.
_DECIMAL = {"value", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas", "base_fee_per_gas", "difficulty"}
_TEXT = {"hash", "parent_hash", "miner", "extra_data", "from_address", "to_address", "input", "block_hash"}
_TEXT |= {"transaction_hash", "address", "data"}


def _typed(name: str, value: Any) -> Any:
    """A JSON or CSV export value as our schema holds it."""
    if value is None or value == "":
        return None
    if name == "topics":
        return value.split(",") if isinstance(value, str) else list(value)
    if name in _TEXT:
        return str(value)
    number = int(value)
    if name in _DECIMAL:
        return str(number)
    return number * 1_000_000 if name in ("timestamp", "block_timestamp") else number


def _renamed(row: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    return {ours: _typed(theirs, row[theirs]) for theirs, ours in fields.items() if theirs in row}


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _records(blocks: list[dict[str, Any]], txs: list[dict[str, Any]], logs: list[dict[str, Any]]) -> Exports:
    return {
        "ethereum_blocks": [_renamed(row, _BLOCK_FIELDS) for row in blocks],
        "ethereum_transactions": [_renamed(row, _TX_FIELDS) for row in txs],
        "ethereum_logs": [_renamed(row, _LOG_FIELDS) for row in logs],
    }


def expected_exports() -> Exports:
    """ethereum-etl's expected blocks, transactions and logs of blocks 483920 and 1755634-1755635, renamed."""
    pair, single, receipts = RPC / "blocks_1755634_1755635", RPC / "block_with_logs", RPC / "receipts_with_logs"
    blocks = json_lines(pair / "expected_blocks.json") + _csv_rows(single / "expected_blocks.csv")
    txs = json_lines(pair / "expected_transactions.json") + _csv_rows(single / "expected_transactions.csv")
    logs = json_lines(pair / "expected_logs.json") + json_lines(receipts / "expected_logs.json")
    return _records(blocks, txs, logs)


def exports_2023() -> Exports:
    """The 2023 blocks' ethereum-etl exports, renamed."""
    names = ("blocks.json", "transactions.json", "logs.json")
    blocks, txs, logs = (json_lines(BLOCKS_2023 / name) for name in names)
    return _records(blocks, txs, logs)


#: How each chain topic's records are told apart.
RECORD_IDS = {
    "ethereum_blocks": ("block_hash",),
    "ethereum_transactions": ("hash",),
    "ethereum_logs": ("block_hash", "log_index"),
}


def matches_exports(produced: Exports, exports: Exports | None = None) -> None:
    """Assert that ``produced`` holds exactly the exports' records (default: the 2015-2016 ones), field by field."""
    for topic, expected_rows in (exports or expected_exports()).items():
        ids = RECORD_IDS[topic]
        assert len(produced[topic]) == len(expected_rows), f"{topic}: duplicates or missing records"
        got = {tuple(r[i] for i in ids): r for r in produced[topic]}
        want = {tuple(r[i] for i in ids): r for r in expected_rows}
        assert got.keys() == want.keys(), topic
        for record_id, row in want.items():
            assert {k: got[record_id][k] for k in row} == row, (topic, record_id)
