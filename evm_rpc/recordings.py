"""What the local JSON-RPC server knows: real mainnet data from ethereum-etl's test resources (MIT).

* ``data/ethereum/rpc/**/web3_response.<method>_<param>_<param>....json`` are genuine JSON-RPC responses. The file
  name encodes the request: ``web3_response.eth_getBlockByNumber_0x1ac9f3_true.json`` answered
  ``eth_getBlockByNumber("0x1ac9f3", true)``. Blocks and receipts are served exactly as recorded; any other
  recorded method is answered verbatim for exactly its recorded params.
* ``data/ethereum/blocks_*/{blocks,transactions,logs}.json`` are ethereum-etl exports, re-encoded into JSON-RPC
  shape by `evm_rpc.etl_exports` (they are not recordings of a node's answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evm_rpc.etl_exports import block_from_export, log_from_export, receipt_from_export

__all__ = ["ChainData", "Recording", "load_chain_data", "load_recordings", "recorded_call"]

PREFIX = "web3_response."


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded JSON-RPC answer and the request its file name encodes."""

    method: str
    params: tuple[Any, ...]
    result: Any
    path: Path


@dataclass(slots=True)
class ChainData:
    """Blocks (with whether they carry full transaction objects), receipts, and logs known per block hash."""

    blocks: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Other recorded answers, served for exactly their (method, params).
    verbatim: list[Recording] = field(default_factory=list)


def _param(text: str) -> Any:
    return {"true": True, "false": False}.get(text, text)


def recorded_call(file_name: str) -> tuple[str, tuple[Any, ...]]:
    """The (method, params) a recording's file name encodes; raises ValueError for other names."""
    if not file_name.startswith(PREFIX) or not file_name.endswith(".json"):
        raise ValueError(f"{file_name!r} is not named {PREFIX}<method>_<params>.json")
    namespace, name, *params = file_name[len(PREFIX) : -len(".json")].split("_")
    return f"{namespace}_{name}", tuple(_param(p) for p in params)


def load_recordings(rpc_dir: Path) -> list[Recording]:
    """Every recording under ``rpc_dir``, in path order."""
    recordings = []
    for path in sorted(rpc_dir.rglob(f"{PREFIX}*.json")):
        method, params = recorded_call(path.name)
        body = json.loads(path.read_text())
        if "result" not in body:
            raise ValueError(f"{path}: recording has no result")
        recordings.append(Recording(method, params, body["result"], path))
    return recordings


def _json_lines(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _add_export(data: ChainData, export_dir: Path) -> None:
    transactions = _json_lines(export_dir / "transactions.json")
    logs = [log_from_export(row) for row in _json_lines(export_dir / "logs.json")]
    for block in _json_lines(export_dir / "blocks.json"):
        block_txs = [tx for tx in transactions if tx["block_number"] == block["number"]]
        block_logs = sorted((g for g in logs if g["blockHash"] == block["hash"]), key=lambda g: int(g["logIndex"], 16))
        data.blocks.append((block_from_export(block, block_txs), True))
        data.logs[block["hash"]] = block_logs
        for tx in block_txs:
            tx_logs = [log for log in block_logs if log["transactionHash"] == tx["hash"]]
            data.receipts.append(receipt_from_export(tx, tx_logs))


def _check_block(recording: Recording) -> None:
    number = recording.params[0] if recording.params else None
    result = recording.result
    if isinstance(number, str) and number.startswith("0x") and int(result["number"], 16) != int(number, 16):
        raise ValueError(f"{recording.path}: block {result['number']} recorded under {number}")


def load_chain_data(data_dir: Path) -> ChainData:
    """The recordings under ``data_dir/rpc`` and the re-encoded exports in ``data_dir/blocks_*``."""
    data = ChainData()
    for recording in load_recordings(data_dir / "rpc"):
        if recording.method == "eth_getBlockByNumber" and recording.result is not None:
            _check_block(recording)
            full = len(recording.params) > 1 and recording.params[1] is True
            data.blocks.append((recording.result, full))
        elif recording.method == "eth_getTransactionReceipt" and recording.result is not None:
            data.receipts.append(recording.result)
        else:
            data.verbatim.append(recording)
    for export_dir in sorted(data_dir.glob("blocks_*")):
        if (export_dir / "blocks.json").exists():
            _add_export(data, export_dir)
    return data
