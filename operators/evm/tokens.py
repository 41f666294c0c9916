"""Token and pool metadata, and amounts scaled by token decimals.

Raw amounts always travel exactly (decimal strings of Python ints); the scaled amounts are a convenience for
humans and dashboards, a float next to the exact value, and null whenever the token's decimals are not known.
Where metadata comes from (eth_call, pool-creation logs) is the business of a `MetadataLookup`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MetadataLookup", "PoolInfo", "TokenInfo", "scaled"]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known of a token contract; None where the contract does not say."""

    address: str
    symbol: str | None
    decimals: int | None


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """A Uniswap V2-style pair or V3 pool and its two tokens."""

    address: str
    token0: str
    token1: str


class MetadataLookup(Protocol):
    """Resolves tokens and pools; never blocks the stream: what it cannot resolve is simply absent."""

    def learn_pool(self, pool: PoolInfo) -> None:
        """Remember a pool seen created on chain (PairCreated / PoolCreated)."""

    def pools(self, addresses: Collection[str]) -> Mapping[str, PoolInfo]:
        """The known pools among ``addresses``."""
        ...

    def tokens(self, addresses: Collection[str]) -> Mapping[str, TokenInfo]:
        """The known tokens among ``addresses``."""
        ...


def scaled(amount: int, decimals: int | None) -> float | None:
    """``amount / 10**decimals`` (correctly rounded: Python divides the exact integers), or None if unknown."""
    if decimals is None:
        return None
    return amount / 10**decimals
