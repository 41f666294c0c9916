"""The normalize step of ``normalize_evm``: ``ethereum_logs`` records in, decoded on-chain activity out.

* ``token_transfers``: ERC-20 ``Transfer`` (value = amount) and ERC-721 ``Transfer`` (value = token id).
* ``dex_swaps``: Uniswap V2 ``Swap`` (every V2 fork emits the same event) and Uniswap V3 ``Swap``, amounts signed
  from the pool's side (positive = into the pool; V2's ``amountIn - amountOut``).
* ``dex_liquidity``: V2 and V3 ``Mint`` / ``Burn``.

Every record keeps its log's block, transaction, log index, timestamps and ``removed`` flag, so a reorg
retraction of a log retracts what was decoded from it. Keys: the emitting contract (token or pool). uint256 and
int256 values go out as exact decimal strings; the ``*_scaled`` floats are added when the token's decimals are
known (a `MetadataLookup`), else null. ``protocol`` names the event layout (``uniswap_v2`` covers its forks).
PairCreated / PoolCreated logs teach the lookup a pool's tokens and produce no record. A log of a decoded event
whose shape is wrong becomes a dead letter with the reason; logs of any other event produce nothing.
The step works on batches so that metadata for a whole batch is looked up at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.metrics import RECORDS_IN, count_outputs
from operators.dead_letter import SourceRef, dead_letter
from operators.evm.abi import (
    ERC20_TRANSFER,
    ERC721_TRANSFER,
    PAIR_CREATED,
    POOL_CREATED,
    V2_BURN,
    V2_MINT,
    V2_SWAP,
    V3_BURN,
    V3_MINT,
    V3_SWAP,
    DecodedLog,
    UndecodableLog,
    decode_log,
)
from operators.evm.chain_records import KeyedOutput
from operators.evm.tokens import MetadataLookup, PoolInfo, TokenInfo, scaled
from operators.records import Output

__all__ = ["FLOW", "LogItem", "LogNormalizer"]

FLOW = "normalize_evm"
LOG = logging.getLogger(__name__)

#: An ``ethereum_logs`` record and where it came from.
LogItem = tuple[dict[str, Any], SourceRef]

TRANSFERS = frozenset({ERC20_TRANSFER.name, ERC721_TRANSFER.name})
POOL_EVENTS = frozenset({V2_SWAP.name, V3_SWAP.name, V2_MINT.name, V2_BURN.name, V3_MINT.name, V3_BURN.name})
PROTOCOL = {
    V2_SWAP.name: "uniswap_v2",
    V2_MINT.name: "uniswap_v2",
    V2_BURN.name: "uniswap_v2",
    V3_SWAP.name: "uniswap_v3",
    V3_MINT.name: "uniswap_v3",
    V3_BURN.name: "uniswap_v3",
}


@dataclass(frozen=True, slots=True)
class _Event:
    log: dict[str, Any]
    decoded: DecodedLog

    @property
    def name(self) -> str:
        return self.decoded.layout.name


def _base(log: dict[str, Any]) -> dict[str, Any]:
    return {
        "chain": log["chain"],
        "block_number": log["block_number"],
        "block_hash": log["block_hash"],
        "event_timestamp": log["event_timestamp"],
        "receipt_timestamp": log["receipt_timestamp"],
        "removed": log["removed"],
        "transaction_hash": log["transaction_hash"],
        "log_index": log["log_index"],
    }


def _transfer(event: _Event, token: TokenInfo | None) -> Output:
    erc721 = event.name == ERC721_TRANSFER.name
    sender, recipient = event.decoded.indexed[:2]
    value: int = event.decoded.indexed[2] if erc721 else event.decoded.values[0]
    decimals = None if erc721 or token is None else token.decimals
    record = _base(event.log) | {
        "token_address": event.log["address"],
        "standard": "erc721" if erc721 else "erc20",
        "from_address": sender,
        "to_address": recipient,
        "value": str(value),
        "token_symbol": token.symbol if token is not None else None,
        "token_decimals": decimals,
        "value_scaled": scaled(value, decimals),
    }
    return ("token_transfers", record)


def _decimals(tokens: dict[str, TokenInfo], address: str | None) -> int | None:
    token = tokens.get(address) if address is not None else None
    return token.decimals if token is not None else None


def _swap(event: _Event, pool: PoolInfo | None, tokens: dict[str, TokenInfo]) -> Output:
    sender, recipient = event.decoded.indexed
    values = event.decoded.values
    v3 = event.name == V3_SWAP.name
    if v3:
        amount0, amount1, sqrt_price, liquidity, tick = values
    else:
        amount0_in, amount1_in, amount0_out, amount1_out = values
        amount0, amount1 = amount0_in - amount0_out, amount1_in - amount1_out
    token0, token1 = (pool.token0, pool.token1) if pool is not None else (None, None)
    record = _base(event.log) | {
        "protocol": PROTOCOL[event.name],
        "pool_address": event.log["address"],
        "sender": sender,
        "recipient": recipient,
        "amount0": str(amount0),
        "amount1": str(amount1),
        "token0_address": token0,
        "token1_address": token1,
        "amount0_scaled": scaled(amount0, _decimals(tokens, token0)),
        "amount1_scaled": scaled(amount1, _decimals(tokens, token1)),
        "sqrt_price_x96": str(sqrt_price) if v3 else None,
        "liquidity": str(liquidity) if v3 else None,
        "tick": tick if v3 else None,
    }
    return ("dex_swaps", record)


def _liquidity(event: _Event, pool: PoolInfo | None) -> Output:
    indexed, values = event.decoded.indexed, event.decoded.values
    name = event.name
    recipient: str | None = None
    liquidity: int | None = None
    tick_lower: int | None = None
    tick_upper: int | None = None
    if name in (V2_MINT.name, V2_BURN.name):
        owner = indexed[0]
        amount0, amount1 = values
        if name == V2_BURN.name:
            recipient = indexed[1]
    else:
        owner, tick_lower, tick_upper = indexed
        liquidity, amount0, amount1 = values[-3:]  # V3 Mint has the minting sender first
    record = _base(event.log) | {
        "protocol": PROTOCOL[name],
        "pool_address": event.log["address"],
        "action": "mint" if name in (V2_MINT.name, V3_MINT.name) else "burn",
        "owner": owner,
        "recipient": recipient,
        "amount0": str(amount0),
        "amount1": str(amount1),
        "liquidity": None if liquidity is None else str(liquidity),
        "tick_lower": tick_lower,
        "tick_upper": tick_upper,
        "token0_address": pool.token0 if pool is not None else None,
        "token1_address": pool.token1 if pool is not None else None,
    }
    return ("dex_liquidity", record)


def _created_pool(event: _Event) -> PoolInfo:
    token0, token1 = event.decoded.indexed[:2]
    pool_address = event.decoded.values[0] if event.name == PAIR_CREATED.name else event.decoded.values[1]
    return PoolInfo(pool_address, token0, token1)


class LogNormalizer:
    """The batch step: ``list[LogItem]`` in, keyed outputs (records and dead letters) out, in input order."""

    def __init__(self, metadata: MetadataLookup) -> None:
        self._metadata = metadata

    def __call__(self, items: list[LogItem]) -> list[KeyedOutput]:
        parsed = [self._decode(log, source) for log, source in items]
        events = [p for p in parsed if isinstance(p, _Event)]
        for event in events:
            if event.name in (PAIR_CREATED.name, POOL_CREATED.name):
                self._metadata.learn_pool(_created_pool(event))
        pools = dict(self._metadata.pools({e.log["address"] for e in events if e.name in POOL_EVENTS}))
        wanted = {e.log["address"] for e in events if e.name in TRANSFERS}
        wanted |= {token for pool in pools.values() for token in (pool.token0, pool.token1)}
        tokens = dict(self._metadata.tokens(wanted))
        outputs: list[KeyedOutput] = []
        for entry in parsed:
            if isinstance(entry, _Event):
                record = self._record(entry, pools, tokens)
                if record is not None:
                    outputs.append((entry.log["address"], record))
            elif entry is not None:
                outputs.append(entry)
        RECORDS_IN.labels(FLOW).inc(len(items))
        count_outputs(FLOW, [output for _, output in outputs])
        return outputs

    @staticmethod
    def _decode(log: dict[str, Any], source: SourceRef) -> _Event | KeyedOutput | None:
        try:
            decoded = decode_log(log["topics"], log["data"])
        except UndecodableLog as exc:
            return log["address"], _dead(log, source, str(exc), "undecodable_log")
        except Exception as exc:  # a bug met on odd input must not stop the flow
            LOG.exception("decoding log %s/%s failed", log.get("transaction_hash"), log.get("log_index"))
            return log.get("address", ""), _dead(log, source, f"internal error: {exc!r}", "internal_error")
        return None if decoded is None else _Event(log, decoded)

    @staticmethod
    def _record(event: _Event, pools: dict[str, PoolInfo], tokens: dict[str, TokenInfo]) -> Output | None:
        if event.name in TRANSFERS:
            return _transfer(event, tokens.get(event.log["address"]))
        if event.name in (V2_SWAP.name, V3_SWAP.name):
            return _swap(event, pools.get(event.log["address"]), tokens)
        if event.name in POOL_EVENTS:
            return _liquidity(event, pools.get(event.log["address"]))
        return None  # pool creation: learned, not published


def _dead(log: dict[str, Any], source: SourceRef, reason: str, error_type: str) -> Output:
    payload = orjson.dumps(log, default=str)
    return dead_letter(FLOW, "decode_log", reason, error_type, source, payload, log.get("event_timestamp"))
