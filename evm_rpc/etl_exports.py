"""ethereum-etl exports re-encoded into JSON-RPC shape.

The 2023 blocks in ``data/ethereum/blocks_17173049_17173050`` are NOT JSON-RPC recordings: they are ethereum-etl
*exports* (JSON Lines, snake_case names, integers as JSON numbers). This module RE-ENCODES them into the objects a
node returns: integers become 0x-hex quantities, snake_case names become the JSON-RPC camelCase ones, and each
transaction's ``receipt_*`` columns plus its logs become an ``eth_getTransactionReceipt`` object (its
``logsBloom`` computed from the logs, as a node does). Fields the exports do not keep (``mixHash``, ``v``/``r``/``s``,
``accessList``, ``chainId``) are absent; ``uncles`` is ``[]`` because every exported ``sha3_uncles`` is the hash of
an empty list. Values are never changed, only their encoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_utils import keccak

__all__ = ["block_from_export", "log_from_export", "logs_bloom", "receipt_from_export", "transaction_from_export"]


def _hex(value: int | None) -> str | None:
    return None if value is None else hex(value)


def logs_bloom(logs: Iterable[dict[str, Any]]) -> str:
    """The 2048-bit logs bloom (yellow paper, section 4.3.1) of JSON-RPC logs: address and topics, 3 bits each."""
    bloom = 0
    for log in logs:
        for item in (log["address"], *log["topics"]):
            digest = keccak(hexstr=item)
            for i in (0, 2, 4):
                bloom |= 1 << (int.from_bytes(digest[i : i + 2], "big") & 2047)
    return "0x" + bloom.to_bytes(256, "big").hex()


def log_from_export(log: dict[str, Any]) -> dict[str, Any]:
    """An ethereum-etl ``log`` row as an ``eth_getLogs`` item."""
    return {
        "address": log["address"],
        "blockHash": log["block_hash"],
        "blockNumber": hex(log["block_number"]),
        "data": log["data"],
        "logIndex": hex(log["log_index"]),
        "removed": False,
        "topics": list(log["topics"]),
        "transactionHash": log["transaction_hash"],
        "transactionIndex": hex(log["transaction_index"]),
    }


def transaction_from_export(tx: dict[str, Any]) -> dict[str, Any]:
    """An ethereum-etl ``transaction`` row as a transaction object of ``eth_getBlockByNumber(n, true)``."""
    obj: dict[str, Any] = {
        "blockHash": tx["block_hash"],
        "blockNumber": hex(tx["block_number"]),
        "from": tx["from_address"],
        "gas": hex(tx["gas"]),
        "gasPrice": _hex(tx["gas_price"]),
        "hash": tx["hash"],
        "input": tx["input"],
        "nonce": hex(tx["nonce"]),
        "to": tx["to_address"],
        "transactionIndex": hex(tx["transaction_index"]),
        "value": hex(tx["value"]),
        "type": _hex(tx["transaction_type"]),
    }
    if tx.get("max_fee_per_gas") is not None:
        obj["maxFeePerGas"] = hex(tx["max_fee_per_gas"])
    if tx.get("max_priority_fee_per_gas") is not None:
        obj["maxPriorityFeePerGas"] = hex(tx["max_priority_fee_per_gas"])
    return obj


def receipt_from_export(tx: dict[str, Any], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction row's ``receipt_*`` columns and its (JSON-RPC) logs as an ``eth_getTransactionReceipt`` object."""
    receipt: dict[str, Any] = {
        "blockHash": tx["block_hash"],
        "blockNumber": hex(tx["block_number"]),
        "contractAddress": tx["receipt_contract_address"],
        "cumulativeGasUsed": hex(tx["receipt_cumulative_gas_used"]),
        "effectiveGasPrice": _hex(tx["receipt_effective_gas_price"]),
        "from": tx["from_address"],
        "gasUsed": hex(tx["receipt_gas_used"]),
        "logs": logs,
        "logsBloom": logs_bloom(logs),
        "to": tx["to_address"],
        "transactionHash": tx["hash"],
        "transactionIndex": hex(tx["transaction_index"]),
        "type": _hex(tx["transaction_type"]),
    }
    if tx.get("receipt_status") is not None:
        receipt["status"] = hex(tx["receipt_status"])
    if tx.get("receipt_root") is not None:
        receipt["root"] = tx["receipt_root"]
    return receipt


def block_from_export(block: dict[str, Any], transactions: list[dict[str, Any]]) -> dict[str, Any]:
    """An ethereum-etl ``block`` row and its transaction rows as ``eth_getBlockByNumber(n, true)``'s result."""
    obj: dict[str, Any] = {
        "difficulty": hex(block["difficulty"]),
        "extraData": block["extra_data"],
        "gasLimit": hex(block["gas_limit"]),
        "gasUsed": hex(block["gas_used"]),
        "hash": block["hash"],
        "logsBloom": block["logs_bloom"],
        "miner": block["miner"],
        "nonce": block["nonce"],
        "number": hex(block["number"]),
        "parentHash": block["parent_hash"],
        "receiptsRoot": block["receipts_root"],
        "sha3Uncles": block["sha3_uncles"],
        "size": hex(block["size"]),
        "stateRoot": block["state_root"],
        "timestamp": hex(block["timestamp"]),
        "totalDifficulty": hex(block["total_difficulty"]),
        "transactions": [
            transaction_from_export(tx) for tx in sorted(transactions, key=lambda t: t["transaction_index"])
        ],
        "transactionsRoot": block["transactions_root"],
        "uncles": [],
    }
    if block.get("base_fee_per_gas") is not None:
        obj["baseFeePerGas"] = hex(block["base_fee_per_gas"])
    if block.get("withdrawals_root") is not None:
        obj["withdrawalsRoot"] = block["withdrawals_root"]
        obj["withdrawals"] = [
            {
                "index": hex(w["index"]),
                "validatorIndex": hex(w["validator_index"]),
                "address": w["address"],
                "amount": hex(w["amount"]),
            }
            for w in block.get("withdrawals") or []
        ]
    return obj
