"""JSON-RPC blocks, transactions and logs as ``ethereum_blocks``, ``ethereum_transactions`` and ``ethereum_logs``.

JSON-RPC sends integers as 0x-hex QUANTITY strings; they become Python ints, and uint256 fields (value, fees,
difficulty) leave as exact decimal strings, so nothing is ever rounded or overflows. Keys follow the schemas'
docs: blocks by block number (decimal), transactions by hash, logs by emitting contract address.

A block whose header cannot be read raises `MalformedBlock` (the collector retries it; it never skips a block).
A single transaction or log that cannot be read becomes a dead letter with its JSON, and the rest of the block
still goes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from operators.dead_letter import SourceRef, dead_letter
from operators.records import Output

__all__ = [
    "FLOW",
    "BlockHeader",
    "KeyedOutput",
    "MalformedBlock",
    "block_outputs",
    "header_of",
    "quantity",
]

FLOW = "collect_evm"

#: ``(Kafka key, (topic, record))``, what the Avro encoder takes.
KeyedOutput = tuple[str, Output]


class MalformedBlock(ValueError):
    """A JSON-RPC block whose header fields are missing or not what the JSON-RPC spec says."""


def quantity(value: Any) -> int:
    """A JSON-RPC QUANTITY (``"0x1a"``) as an int; raises ValueError for anything else."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        raise ValueError(f"not a hex quantity: {value!r}")
    return int(value, 16)


def _optional_quantity(value: Any) -> int | None:
    return None if value is None else quantity(value)


def _decimal(value: Any) -> str | None:
    return None if value is None else str(quantity(value))


def _hex_data(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not hex data: {value!r}")
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        raise ValueError(f"not an address: {value!r}")
    return value.lower()


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What chain tracking needs of a block."""

    number: int
    hash: str
    parent_hash: str
    timestamp_us: int
    #: An all-zero logs bloom: the block has no logs at all.
    bloom_empty: bool


def header_of(block: Any) -> BlockHeader:
    """The header of a JSON-RPC block object; raises MalformedBlock naming the problem."""
    if not isinstance(block, dict):
        raise MalformedBlock(f"block is {type(block).__name__}, not an object")
    try:
        bloom = _hex_data(block.get("logsBloom", "0x"))
        return BlockHeader(
            number=quantity(block["number"]),
            hash=_hex_data(block["hash"]),
            parent_hash=_hex_data(block["parentHash"]),
            timestamp_us=quantity(block["timestamp"]) * 1_000_000,
            bloom_empty=int(bloom, 16) == 0 if len(bloom) > 2 else True,
        )
    except (KeyError, ValueError) as exc:
        raise MalformedBlock(f"block header unreadable: {exc!r}") from exc


def _block_context(header: BlockHeader, chain: str, receipt_ts: int, removed: bool) -> dict[str, Any]:
    """The fields every chain record carries: where it sits in the chain, when, and whether it was retracted."""
    return {
        "chain": chain,
        "block_number": header.number,
        "block_hash": header.hash,
        "event_timestamp": header.timestamp_us,
        "receipt_timestamp": receipt_ts,
        "removed": removed,
    }


def _block_record(block: dict[str, Any], header: BlockHeader, chain: str, receipt_ts: int, removed: bool) -> Output:
    return (
        "ethereum_blocks",
        {
            **_block_context(header, chain, receipt_ts, removed),
            "parent_hash": header.parent_hash,
            "miner": _address(block["miner"]),
            "gas_limit": quantity(block["gasLimit"]),
            "gas_used": quantity(block["gasUsed"]),
            "base_fee_per_gas": _decimal(block.get("baseFeePerGas")),
            "transaction_count": len(block["transactions"]),
            "size": quantity(block["size"]),
            "difficulty": _decimal(block.get("difficulty")),
            "extra_data": _hex_data(block["extraData"]),
        },
    )


def _transaction_record(tx: dict[str, Any], header: BlockHeader, chain: str, receipt_ts: int, removed: bool) -> Output:
    to_address = tx.get("to")
    tx_type = tx.get("type")
    return (
        "ethereum_transactions",
        {
            **_block_context(header, chain, receipt_ts, removed),
            "hash": _hex_data(tx["hash"]),
            "transaction_index": quantity(tx["transactionIndex"]),
            "from_address": _address(tx["from"]),
            "to_address": None if to_address is None else _address(to_address),
            "value": str(quantity(tx["value"])),
            "gas": quantity(tx["gas"]),
            "gas_price": _decimal(tx.get("gasPrice")),
            "max_fee_per_gas": _decimal(tx.get("maxFeePerGas")),
            "max_priority_fee_per_gas": _decimal(tx.get("maxPriorityFeePerGas")),
            "nonce": quantity(tx["nonce"]),
            "input": _hex_data(tx["input"]),
            "transaction_type": _optional_quantity(tx_type),
        },
    )


def _log_record(log: dict[str, Any], header: BlockHeader, chain: str, receipt_ts: int, removed: bool) -> Output:
    topics = log["topics"]
    if not isinstance(topics, list):
        raise ValueError(f"topics is not a list: {topics!r}")
    return (
        "ethereum_logs",
        {
            **_block_context(header, chain, receipt_ts, removed),
            "transaction_hash": _hex_data(log["transactionHash"]),
            "transaction_index": quantity(log["transactionIndex"]),
            "log_index": quantity(log["logIndex"]),
            "address": _address(log["address"]),
            "topics": [_hex_data(t) for t in topics],
            "data": _hex_data(log["data"]),
        },
    )


def _rejected(what: str, item: Any, exc: Exception, header: BlockHeader, receipt_ts: int) -> KeyedOutput:
    reason = f"{what} of block {header.number} ({header.hash}) unreadable: {exc!r}"
    payload = orjson.dumps(item, default=str)
    source = SourceRef(topic="jsonrpc", key=str(header.number).encode())
    return str(header.number), dead_letter(
        FLOW, "chain_records", reason, "unexpected_shape", source, payload, header.timestamp_us or receipt_ts
    )


def block_outputs(
    block: dict[str, Any], logs: list[Any], chain: str, receipt_ts: int, removed: bool = False
) -> list[KeyedOutput]:
    """The keyed records of one block: the block, its transactions, its logs (``removed`` on every record).

    ``block`` must carry full transaction objects (``eth_getBlockByNumber(n, true)``). Raises MalformedBlock
    when the header (or the block record itself) cannot be built; a bad transaction or log is dead-lettered.
    """
    header = header_of(block)
    transactions = block.get("transactions")
    if not isinstance(transactions, list) or any(not isinstance(tx, dict) for tx in transactions):
        raise MalformedBlock(f"block {header.number} does not carry full transaction objects")
    try:
        block_out = _block_record(block, header, chain, receipt_ts, removed)
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedBlock(f"block {header.number} ({header.hash}) unreadable: {exc!r}") from exc
    outputs: list[KeyedOutput] = [(str(header.number), block_out)]
    for tx in transactions:
        try:
            tx_out = _transaction_record(tx, header, chain, receipt_ts, removed)
            outputs.append((tx_out[1]["hash"], tx_out))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            outputs.append(_rejected("transaction", tx, exc, header, receipt_ts))
    for log in logs:
        try:
            log_out = _log_record(log, header, chain, receipt_ts, removed)
            outputs.append((log_out[1]["address"], log_out))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            outputs.append(_rejected("log", log, exc, header, receipt_ts))
    return outputs
