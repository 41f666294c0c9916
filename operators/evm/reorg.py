"""Chain continuity: the last blocks the collector completed, and where a reorg forked from them.

A new block continues the chain when its number is the tip's plus one and its ``parentHash`` is the tip's hash.
When it does not, the canonical hashes of the remembered block numbers are compared with the remembered ones: the
highest number where they agree is the common ancestor, and every remembered block above it was replaced.

The window holds the ``ethereum_blocks`` records themselves (a few hundred bytes each), so a replaced block can be
retracted (re-sent with ``removed=true``) even when the node no longer serves it. It is the collector's Bytewax
recovery state, as plain dicts and lists, so snapshots stay readable across code versions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from operators.evm.chain_records import BlockHeader

__all__ = ["ChainWindow", "ReorgTooDeep"]


class ReorgTooDeep(RuntimeError):
    """No remembered block is on the canonical chain any more: the reorg is deeper than the window."""


class ChainWindow:
    """The last ``size`` completed blocks (``ethereum_blocks`` records), oldest first."""

    def __init__(self, size: int, blocks: Iterable[Mapping[str, Any]] = ()) -> None:
        self._blocks: deque[dict[str, Any]] = deque((dict(b) for b in blocks), maxlen=size)

    @property
    def tip(self) -> dict[str, Any] | None:
        """The last completed block's record, or None before the first block."""
        return self._blocks[-1] if self._blocks else None

    @property
    def numbers(self) -> list[int]:
        return [b["block_number"] for b in self._blocks]

    def continues(self, header: BlockHeader) -> bool:
        """Whether ``header`` is the next block on the same chain as the tip."""
        tip = self.tip
        if tip is None:
            return True
        return header.number == tip["block_number"] + 1 and header.parent_hash == tip["block_hash"]

    def append(self, block_record: Mapping[str, Any]) -> None:
        """Record a completed block (the caller checked `continues`)."""
        self._blocks.append(dict(block_record))

    def fork_point(self, canonical: Mapping[int, str]) -> int:
        """The highest remembered block number whose hash is still canonical; raises ReorgTooDeep if none is."""
        for block in reversed(self._blocks):
            if canonical.get(block["block_number"]) == block["block_hash"]:
                return int(block["block_number"])
        oldest = self._blocks[0]["block_number"] if self._blocks else None
        raise ReorgTooDeep(
            f"reorg deeper than the {self._blocks.maxlen}-block window: none of blocks {oldest}.."
            f"{self.tip and self.tip['block_number']} is canonical any more; raise EVM_REORG_WINDOW or re-collect "
            "from an earlier EVM_START_BLOCK with a fresh recovery directory"
        )

    def above(self, ancestor: int) -> list[dict[str, Any]]:
        """The records of the remembered blocks above ``ancestor``, tip first (the window is unchanged)."""
        return [dict(b) for b in reversed(self._blocks) if b["block_number"] > ancestor]

    def rollback(self, ancestor: int) -> list[dict[str, Any]]:
        """Forget every block above ``ancestor``; returns their records, tip first."""
        replaced: list[dict[str, Any]] = []
        while self._blocks and self._blocks[-1]["block_number"] > ancestor:
            replaced.append(self._blocks.pop())
        return replaced

    def snapshot(self) -> list[dict[str, Any]]:
        """The window as plain data (Bytewax recovery state)."""
        return [dict(b) for b in self._blocks]
