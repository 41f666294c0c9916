"""Logs exported by ethereum-etl (``export_blocks_and_transactions`` / ``export_receipts_and_logs``, JSON Lines) as
``ethereum_logs`` records, for the offline mode of ``normalize_evm``.

An export holds no receipt time, so ``receipt_timestamp`` is the block time, like ``event_timestamp``. A line that is
not JSON or not a log row becomes a dead letter with the reason; rows of other types (blocks, transactions)
are skipped, so a mixed export can be fed as is.
"""

from __future__ import annotations

from typing import Any

import orjson

from operators.dead_letter import SourceRef, dead_letter
from operators.evm.chain_records import KeyedOutput
from operators.evm.normalize import FLOW, LogItem

__all__ = ["export_log_item", "log_record_from_export"]


def _int(row: dict[str, Any], name: str) -> int:
    value = row[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is {value!r}, not an integer")
    return value


def log_record_from_export(row: dict[str, Any], chain: str) -> dict[str, Any]:
    """An ethereum-etl log row as an ``ethereum_logs`` record; raises KeyError/ValueError when it is not one."""
    timestamp_us = _int(row, "block_timestamp") * 1_000_000
    topics = row["topics"]
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise ValueError(f"topics is {topics!r}, not a list of hex strings")
    return {
        "chain": chain,
        "block_number": _int(row, "block_number"),
        "block_hash": str(row["block_hash"]),
        "event_timestamp": timestamp_us,
        "receipt_timestamp": timestamp_us,
        "removed": False,
        "transaction_hash": str(row["transaction_hash"]),
        "transaction_index": _int(row, "transaction_index"),
        "log_index": _int(row, "log_index"),
        "address": str(row["address"]).lower(),
        "topics": topics,
        "data": str(row["data"]),
    }


def export_log_item(line: str, source: SourceRef, chain: str) -> LogItem | KeyedOutput | None:
    """One export line: a log item to normalize, a keyed dead letter, or None for a non-log row."""
    if not line.strip():
        return None
    raw = line.encode()
    try:
        row = orjson.loads(raw)
        if not isinstance(row, dict):
            raise ValueError(f"a JSON {type(row).__name__}, not an object")
        if row.get("type", "log") != "log":
            return None
        return log_record_from_export(row, chain), source
    except orjson.JSONDecodeError as exc:
        return "", dead_letter(FLOW, "parse_export", f"not JSON: {exc}", "malformed_json", source, raw)
    except (KeyError, ValueError, TypeError) as exc:
        reason = f"not an ethereum-etl log row: {exc!r}"
        return "", dead_letter(FLOW, "parse_export", reason, "unexpected_shape", source, raw)
