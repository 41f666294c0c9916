"""The chain the local JSON-RPC server serves: recorded blocks by number and hash, their logs and receipts.

Like a node, it has a head: blocks above it do not exist yet (``null``), and moving the head up makes them appear
(a test "mines" recorded blocks that way). Blocks the recordings do not hold are ``null`` too, so a client asking
for them waits, as it would for a lagging node. A block's logs are known when the export holds them or when every
one of its transactions has a recorded receipt; ``eth_getLogs`` on any other block is an error, never a made-up
empty list. A fork replaces canonical blocks with synthetic ones (`evm_rpc.fork`); the replaced blocks stay
reachable by hash, as geth keeps side-chain blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evm_rpc.fork import empty_block_on, replacement_block
from evm_rpc.recordings import ChainData

__all__ = ["RpcFailure", "ServedChain"]

HEAD_TAGS = frozenset({"latest", "pending", "safe", "finalized"})


class RpcFailure(Exception):
    """A JSON-RPC error answer: ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _number(block: Mapping[str, Any]) -> int:
    return int(block["number"], 16)


def _tx_hash(tx: Any) -> str:
    return str(tx["hash"] if isinstance(tx, dict) else tx)


def _matches(log: Mapping[str, Any], criteria: Mapping[str, Any]) -> bool:
    address = criteria.get("address")
    if address is not None:
        wanted = {a.lower() for a in (address if isinstance(address, list) else [address])}
        if log["address"].lower() not in wanted:
            return False
    for position, allowed in enumerate(criteria.get("topics") or []):
        if allowed is None:
            continue
        options = {t.lower() for t in (allowed if isinstance(allowed, list) else [allowed])}
        if position >= len(log["topics"]) or log["topics"][position].lower() not in options:
            return False
    return True


class ServedChain:
    """Blocks, logs and receipts behind the JSON-RPC methods; see the module docstring."""

    def __init__(self, data: ChainData, head: int | None = None) -> None:
        self._blocks: dict[str, dict[str, Any]] = {}
        self._full: dict[str, bool] = {}
        self._canonical: dict[int, str] = {}
        self._logs: dict[str, list[dict[str, Any]]] = {}
        self._receipts: dict[str, dict[str, Any]] = {r["transactionHash"]: r for r in data.receipts}
        for block, full in data.blocks:
            self._add(block, full, data.logs.get(block["hash"]))
        if not self._canonical:
            raise ValueError("no recorded blocks to serve")
        self.head = max(self._canonical) if head is None else head

    @property
    def numbers(self) -> list[int]:
        """Canonical block numbers held, ascending (some may be above the head)."""
        return sorted(self._canonical)

    def _add(self, block: dict[str, Any], full: bool, logs: list[dict[str, Any]] | None) -> None:
        block_hash = block["hash"]
        self._blocks[block_hash] = block
        self._full[block_hash] = full
        self._canonical[_number(block)] = block_hash
        known = logs if logs is not None else self._logs_from_receipts(block)
        if known is not None:
            self._logs[block_hash] = known

    def _logs_from_receipts(self, block: dict[str, Any]) -> list[dict[str, Any]] | None:
        receipts = [self._receipts.get(_tx_hash(tx)) for tx in block["transactions"]]
        if any(r is None or r["blockHash"] != block["hash"] for r in receipts):
            return None
        logs = [{"removed": False, **log} for r in receipts if r is not None for log in r["logs"]]
        if (not logs) != (int(block.get("logsBloom", "0x0"), 16) == 0):
            return None  # e.g. a recording whose transaction list was trimmed
        return logs

    def _resolve(self, ref: Any) -> int:
        if ref in HEAD_TAGS:
            return self.head
        if ref == "earliest":
            return 0
        if isinstance(ref, str) and ref.startswith("0x") and len(ref) > 2:
            try:
                return int(ref, 16)
            except ValueError:
                pass
        raise RpcFailure(-32602, f"invalid block reference {ref!r}")

    def _shape(self, block: dict[str, Any], full: bool) -> dict[str, Any]:
        if not full:
            return {**block, "transactions": [_tx_hash(tx) for tx in block["transactions"]]}
        if not self._full[block["hash"]] and block["transactions"]:
            raise RpcFailure(-32000, f"block {block['number']} was recorded without transaction objects")
        return block

    def block_by_number(self, ref: Any, full: bool) -> dict[str, Any] | None:
        number = self._resolve(ref)
        block_hash = self._canonical.get(number)
        if number > self.head or block_hash is None:
            return None
        return self._shape(self._blocks[block_hash], full)

    def block_by_hash(self, block_hash: str, full: bool) -> dict[str, Any] | None:
        block = self._blocks.get(block_hash.lower())
        if block is None or _number(block) > self.head:
            return None
        return self._shape(block, full)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        receipt = self._receipts.get(tx_hash.lower())
        if receipt is None or int(receipt["blockNumber"], 16) > self.head:
            return None
        return receipt

    def logs(self, criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``eth_getLogs``: by ``blockHash``, or over ``fromBlock``..``toBlock`` (canonical blocks held)."""
        if "blockHash" in criteria:
            if "fromBlock" in criteria or "toBlock" in criteria:
                raise RpcFailure(-32602, "blockHash cannot be combined with fromBlock/toBlock")
            block = self._blocks.get(str(criteria["blockHash"]).lower())
            if block is None or _number(block) > self.head:
                raise RpcFailure(-32000, "unknown block")
            hashes = [block["hash"]]
        else:
            low = self._resolve(criteria.get("fromBlock", "latest"))
            high = min(self._resolve(criteria.get("toBlock", "latest")), self.head)
            hashes = [self._canonical[n] for n in self.numbers if low <= n <= high]
        found: list[dict[str, Any]] = []
        for block_hash in hashes:
            if block_hash not in self._logs:
                raise RpcFailure(-32000, f"logs of block {block_hash} are not recorded")
            found.extend(log for log in self._logs[block_hash] if _matches(log, criteria))
        return found

    def fork(self, number: int, keep_transactions: int | None = None, extend: int = 1) -> list[str]:
        """Replace canonical blocks ``number``..head (each keeps its first transactions), then add ``extend`` empty
        blocks on top; the head moves to the new tip. Returns the new blocks' hashes, lowest first."""
        if number not in self._canonical or number > self.head:
            raise ValueError(f"block {number} is not a served canonical block (head {self.head})")
        replaced = [n for n in self.numbers if number <= n <= self.head]
        parent_hash = self._blocks[self._canonical[number]]["parentHash"]
        new_hashes: list[str] = []
        tip: dict[str, Any] | None = None
        for n in replaced:
            old = self._blocks[self._canonical[n]]
            if old["hash"] not in self._logs or not self._full[old["hash"]]:
                raise ValueError(f"block {n} cannot be forked: its transactions or logs are not all recorded")
            keep = len(old["transactions"]) // 2 if keep_transactions is None else keep_transactions
            tip, logs = replacement_block(old, self._logs[old["hash"]], parent_hash, keep)
            self._rehome_receipts(old, tip, logs)
            self._add(tip, True, logs)
            new_hashes.append(tip["hash"])
            parent_hash = tip["hash"]
        assert tip is not None  # `replaced` holds at least `number`
        for _ in range(extend):
            tip = empty_block_on(tip)
            self._add(tip, True, [])
            new_hashes.append(tip["hash"])
        self.head = max(self.head, _number(tip))
        return new_hashes

    def _rehome_receipts(self, old: dict[str, Any], block: dict[str, Any], logs: list[dict[str, Any]]) -> None:
        """Kept transactions' receipts now name the new block; dropped transactions have none (not mined)."""
        for tx in old["transactions"][len(block["transactions"]) :]:
            self._receipts.pop(tx["hash"], None)
        for tx in block["transactions"]:
            receipt = self._receipts.get(tx["hash"])
            if receipt is not None:
                tx_logs = [log for log in logs if log["transactionHash"] == tx["hash"]]
                self._receipts[tx["hash"]] = {**receipt, "blockHash": block["hash"], "logs": tx_logs}
