"""Token and pool metadata from ``eth_call`` (``decimals()``, ``symbol()``, ``token0()``, ``token1()``), cached.

Metadata never changes for a deployed contract, so answers are kept (LRU, ``EVM_METADATA_CACHE_SIZE`` entries per
kind), including "this contract has no such function" (a revert or an empty answer). Lookups are batched: one
JSON-RPC batch per normalize batch, at most `CALLS_PER_REQUEST` calls per request. When the endpoint is
unavailable (after the client's retries), nothing is cached, the records go out with null metadata, and the
endpoint is asked again only after ``EVM_METADATA_RETRY_S``, so a dead node never slows the stream down.
Pools seen created on chain (PairCreated / PoolCreated) are learned without any call. Without an endpoint, that
is the only source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

from cachetools import LRUCache
from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import function_signature_to_4byte_selector

from connectors.evm.rpc import JsonRpcClient, RpcCall, RpcUnavailable
from connectors.evm.settings import EvmSettings
from operators.evm.tokens import PoolInfo, TokenInfo

__all__ = ["CALLS_PER_REQUEST", "TokenMetadata", "symbol_from_answer", "token_metadata"]

LOG = logging.getLogger(__name__)

CALLS_PER_REQUEST = 100
MAX_DECIMALS = 77  # 10**77 < 2**256 <= 10**78: larger "decimals" cannot describe a uint256 amount


def _selector(signature: str) -> str:
    return "0x" + function_signature_to_4byte_selector(signature).hex()


DECIMALS, SYMBOL, TOKEN0, TOKEN1 = (_selector(s) for s in ("decimals()", "symbol()", "token0()", "token1()"))


def _answer_bytes(answer: Any) -> bytes | None:
    if not isinstance(answer, str) or not answer.startswith("0x") or len(answer) <= 2:
        return None  # an error (revert), or "0x": no such function
    try:
        return bytes.fromhex(answer[2:])
    except ValueError:
        return None


def _decimals(answer: Any) -> int | None:
    raw = _answer_bytes(answer)
    if raw is None or len(raw) != 32:
        return None
    value = int.from_bytes(raw, "big")
    return value if value <= MAX_DECIMALS else None


def symbol_from_answer(answer: Any) -> str | None:
    """A ``symbol()`` answer as text: an ABI string, or the bytes32 some old tokens (MKR, SAI) return."""
    raw = _answer_bytes(answer)
    if raw is None:
        return None
    try:
        (text,) = decode(["string"], raw)
    except (DecodingError, OverflowError):
        if len(raw) != 32:
            return None
        text = raw.rstrip(b"\0").decode("utf-8", "replace")
    return str(text).replace("\0", "") or None


def _address(answer: Any) -> str | None:
    raw = _answer_bytes(answer)
    if raw is None or len(raw) != 32:
        return None
    try:
        return str(decode(["address"], raw)[0]).lower()
    except DecodingError:
        return None


class TokenMetadata:
    """A `operators.evm.tokens.MetadataLookup` over an optional JSON-RPC endpoint; safe across worker threads."""

    def __init__(self, client: JsonRpcClient | None, cache_size: int = 100_000, retry_s: float = 300.0) -> None:
        self._client = client
        self._retry_s = retry_s
        self._tokens: LRUCache[str, TokenInfo] = LRUCache(cache_size)
        self._pools: LRUCache[str, PoolInfo | None] = LRUCache(cache_size)
        self._unavailable_until = 0.0
        self._lock = threading.Lock()

    def learn_pool(self, pool: PoolInfo) -> None:
        with self._lock:
            self._pools[pool.address] = pool

    def pools(self, addresses: Collection[str]) -> Mapping[str, PoolInfo]:
        with self._lock:
            return self._lookup_pools(addresses)

    def tokens(self, addresses: Collection[str]) -> Mapping[str, TokenInfo]:
        with self._lock:
            return self._lookup_tokens(addresses)

    def _lookup_pools(self, addresses: Collection[str]) -> Mapping[str, PoolInfo]:
        missing = sorted(a for a in set(addresses) if a not in self._pools)
        answers = self._eth_calls([(a, selector) for a in missing for selector in (TOKEN0, TOKEN1)])
        if answers is not None:
            for i, address in enumerate(missing):
                token0, token1 = _address(answers[2 * i]), _address(answers[2 * i + 1])
                self._pools[address] = PoolInfo(address, token0, token1) if token0 and token1 else None
        return {a: pool for a in addresses if (pool := self._pools.get(a)) is not None}

    def _lookup_tokens(self, addresses: Collection[str]) -> Mapping[str, TokenInfo]:
        missing = sorted(a for a in set(addresses) if a not in self._tokens)
        answers = self._eth_calls([(a, selector) for a in missing for selector in (DECIMALS, SYMBOL)])
        if answers is not None:
            for i, address in enumerate(missing):
                self._tokens[address] = TokenInfo(
                    address, symbol_from_answer(answers[2 * i + 1]), _decimals(answers[2 * i])
                )
        return {a: token for a in addresses if (token := self._tokens.get(a)) is not None}

    def _eth_calls(self, calls: list[tuple[str, str]]) -> list[Any] | None:
        """Each call's raw answer (a hex string, or an RpcError); None when there is no endpoint to ask now."""
        if not calls or self._client is None or time.monotonic() < self._unavailable_until:
            return None
        answers: list[Any] = []
        try:
            for start in range(0, len(calls), CALLS_PER_REQUEST):
                chunk = calls[start : start + CALLS_PER_REQUEST]
                answers.extend(
                    self._client.batch_settled(
                        [RpcCall("eth_call", ({"to": to, "data": data}, "latest")) for to, data in chunk]
                    )
                )
        except RpcUnavailable as exc:
            LOG.warning("token metadata unavailable (%s); records go out unscaled for %.0fs", exc, self._retry_s)
            self._unavailable_until = time.monotonic() + self._retry_s
            return None
        return answers


def token_metadata(settings: EvmSettings) -> TokenMetadata:
    """The lookup the settings describe: eth_call on ``EVM_METADATA_RPC_URL`` if set, else pool-creation logs only."""
    url = settings.evm_metadata_rpc_url
    client = JsonRpcClient(url, settings.retry_policy()) if url else None
    return TokenMetadata(client, settings.evm_metadata_cache_size, settings.evm_metadata_retry_s)
