"""The events the pipeline decodes: their layouts, topic0 hashes and a strict decoder (eth-abi).

topic0 is keccak256 of the canonical signature, computed here from the signature itself (the values are listed
in ``data/ethereum/event_signatures.md`` and a unit test checks they agree). A log is matched by topic0 and then
by shape: the number of topics must be exactly 1 + the indexed parameters and the data exactly 32 bytes per
data parameter (all are static types). ERC-20 and ERC-721 ``Transfer`` share topic0 and differ in shape
(ERC-721 indexes the token id: 4 topics, no data). A log with a known topic0 and any other shape, a topic
that is not a valid padded address or int24, or data that is not hex, raises `UndecodableLog` with the reason.
Logs of other events decode to None: they are simply not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak

__all__ = [
    "ERC20_TRANSFER",
    "ERC721_TRANSFER",
    "LAYOUTS",
    "PAIR_CREATED",
    "POOL_CREATED",
    "V2_BURN",
    "V2_MINT",
    "V2_SWAP",
    "V3_BURN",
    "V3_MINT",
    "V3_SWAP",
    "DecodedLog",
    "EventLayout",
    "UndecodableLog",
    "decode_log",
]


class UndecodableLog(ValueError):
    """A log with a topic0 we decode whose topics or data do not fit the event's layout."""


@dataclass(frozen=True)
class EventLayout:
    """An event's name (for reasons and dispatch), canonical signature and where its parameters are."""

    name: str
    signature: str
    #: ABI types of topics[1:], in order.
    indexed: tuple[str, ...]
    #: ABI types of the data words, in order.
    data: tuple[str, ...]

    @cached_property
    def topic0(self) -> str:
        return "0x" + keccak(text=self.signature).hex()

    @property
    def topic_count(self) -> int:
        return 1 + len(self.indexed)

    @property
    def data_bytes(self) -> int:
        return 32 * len(self.data)

    def shape(self) -> str:
        return f"{self.topic_count} topics and {self.data_bytes} data bytes ({self.name})"


ERC20_TRANSFER = EventLayout(
    "erc20_transfer", "Transfer(address,address,uint256)", ("address", "address"), ("uint256",)
)
ERC721_TRANSFER = EventLayout(
    "erc721_transfer", "Transfer(address,address,uint256)", ("address", "address", "uint256"), ()
)
V2_SWAP = EventLayout(
    "uniswap_v2_swap",
    "Swap(address,uint256,uint256,uint256,uint256,address)",
    ("address", "address"),
    ("uint256", "uint256", "uint256", "uint256"),
)
V2_MINT = EventLayout("uniswap_v2_mint", "Mint(address,uint256,uint256)", ("address",), ("uint256", "uint256"))
V2_BURN = EventLayout(
    "uniswap_v2_burn", "Burn(address,uint256,uint256,address)", ("address", "address"), ("uint256", "uint256")
)
V3_SWAP = EventLayout(
    "uniswap_v3_swap",
    "Swap(address,address,int256,int256,uint160,uint128,int24)",
    ("address", "address"),
    ("int256", "int256", "uint160", "uint128", "int24"),
)
V3_MINT = EventLayout(
    "uniswap_v3_mint",
    "Mint(address,address,int24,int24,uint128,uint256,uint256)",
    ("address", "int24", "int24"),
    ("address", "uint128", "uint256", "uint256"),
)
V3_BURN = EventLayout(
    "uniswap_v3_burn",
    "Burn(address,int24,int24,uint128,uint256,uint256)",
    ("address", "int24", "int24"),
    ("uint128", "uint256", "uint256"),
)
PAIR_CREATED = EventLayout(
    "uniswap_v2_pair_created",
    "PairCreated(address,address,address,uint256)",
    ("address", "address"),
    ("address", "uint256"),
)
POOL_CREATED = EventLayout(
    "uniswap_v3_pool_created",
    "PoolCreated(address,address,uint24,int24,address)",
    ("address", "address", "uint24"),
    ("int24", "address"),
)

LAYOUTS: dict[str, tuple[EventLayout, ...]] = {}
for _layout in (ERC20_TRANSFER, ERC721_TRANSFER, V2_SWAP, V2_MINT, V2_BURN, V3_SWAP, V3_MINT, V3_BURN):
    LAYOUTS[_layout.topic0] = (*LAYOUTS.get(_layout.topic0, ()), _layout)
for _layout in (PAIR_CREATED, POOL_CREATED):
    LAYOUTS[_layout.topic0] = (_layout,)


@dataclass(frozen=True, slots=True)
class DecodedLog:
    """A log decoded by ``layout``: indexed then data values; addresses lower case, integers exact."""

    layout: EventLayout
    indexed: tuple[Any, ...]
    values: tuple[Any, ...]


def _normalized(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _hex_bytes(text: str, what: str) -> bytes:
    if not text.startswith("0x"):
        raise UndecodableLog(f"{what} {text[:80]!r} is not 0x-hex")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise UndecodableLog(f"{what} is not hex: {exc}") from exc


def _topic_bytes(topic: str) -> bytes:
    word = _hex_bytes(topic, "topic")
    if len(word) != 32:
        raise UndecodableLog(f"topic {topic[:80]!r} is {len(word)} bytes, not 32")
    return word


def decode_log(topics: list[str], data: str) -> DecodedLog | None:
    """The decoded log, None when it is no event we decode; raises UndecodableLog when it does not fit."""
    if not topics:
        return None
    candidates = LAYOUTS.get(topics[0].lower())
    if candidates is None:
        return None
    body = _hex_bytes(data, "data")
    for layout in candidates:
        if len(topics) == layout.topic_count and len(body) == layout.data_bytes:
            try:
                indexed = tuple(
                    _normalized(decode([kind], _topic_bytes(topic))[0])
                    for kind, topic in zip(layout.indexed, topics[1:], strict=True)
                )
                values = tuple(_normalized(v) for v in decode(list(layout.data), body)) if layout.data else ()
            except DecodingError as exc:
                raise UndecodableLog(f"{layout.name}: {exc}") from exc
            return DecodedLog(layout, indexed, values)
    expected = " or ".join(layout.shape() for layout in candidates)
    raise UndecodableLog(
        f"{candidates[0].signature} log with {len(topics)} topics and {len(body)} data bytes; expected {expected}"
    )
