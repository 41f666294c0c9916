"""Synthetic fork blocks, for reorg tests: a recorded block replaced by another with a different hash.

These blocks are made up, on purpose, and say so: their hashes are SHA-256 digests of a label (not Keccak of an RLP
header), so they can never be mistaken for mainnet blocks. A replacement block keeps the first transactions of
the block it replaces (and their logs, with their log indexes) and drops the rest; an extension block is empty.
"""

from __future__ import annotations

import hashlib
from typing import Any

from evm_rpc.etl_exports import logs_bloom

__all__ = ["empty_block_on", "fork_hash", "replacement_block"]

EMPTY_BLOOM = "0x" + "00" * 256
SECONDS_PER_SLOT = 12


def fork_hash(label: str) -> str:
    """A 32-byte 0x-hex hash for a synthetic block, derived from ``label``."""
    return "0x" + hashlib.sha256(label.encode()).hexdigest()


def replacement_block(
    block: dict[str, Any], logs: list[dict[str, Any]], parent_hash: str, keep_transactions: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Another block at ``block``'s height: its first ``keep_transactions`` transactions, a new hash."""
    new_hash = fork_hash(f"replacement of {block['hash']}")
    transactions = [{**tx, "blockHash": new_hash} for tx in block["transactions"][:keep_transactions]]
    kept = {tx["hash"] for tx in transactions}
    new_logs = [{**log, "blockHash": new_hash} for log in logs if log["transactionHash"] in kept]
    replaced = {
        **block,
        "hash": new_hash,
        "parentHash": parent_hash,
        "transactions": transactions,
        "logsBloom": logs_bloom(new_logs) if new_logs else EMPTY_BLOOM,
    }
    return replaced, new_logs


def empty_block_on(parent: dict[str, Any]) -> dict[str, Any]:
    """An empty block on top of ``parent``, one slot later."""
    number = int(parent["number"], 16) + 1
    block = {
        **parent,
        "number": hex(number),
        "hash": fork_hash(f"empty block {number} on {parent['hash']}"),
        "parentHash": parent["hash"],
        "timestamp": hex(int(parent["timestamp"], 16) + SECONDS_PER_SLOT),
        "transactions": [],
        "gasUsed": "0x0",
        "logsBloom": EMPTY_BLOOM,
    }
    if "withdrawals" in parent:
        block["withdrawals"] = []
    return block
