"""Decoding real mainnet logs (blocks 17173049-17173050) into transfers and swaps, exactly, and rejecting bad ones."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from connectors.evm.token_metadata import TokenMetadata, symbol_from_answer
from operators.dead_letter import SourceRef
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
)
from operators.evm.chain_records import KeyedOutput
from operators.evm.etl_logs import log_record_from_export
from operators.evm.normalize import LogNormalizer
from operators.evm.tokens import scaled
from tests.evm_support import LOGS_2023, TOPICS, expected_events, json_lines, topic_of, word

LOGS = json_lines(LOGS_2023)
SOURCE = SourceRef(topic="ethereum_logs", partition=0, offset=7)


def _normalize(rows: list[dict[str, Any]], removed: bool = False) -> list[KeyedOutput]:
    records = [log_record_from_export(row, "ethereum") | {"removed": removed} for row in rows]
    return LogNormalizer(TokenMetadata(None))([(record, SOURCE) for record in records])


def _by_position(outputs: list[KeyedOutput], topic: str, **match: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        (rec["transaction_hash"], rec["log_index"]): rec
        for _, (t, rec) in outputs
        if t == topic and all(rec[k] == v for k, v in match.items())
    }


def _log(**fields: Any) -> dict[str, Any]:
    return {**LOGS[0], **fields}


def test_every_transfer_and_swap_of_the_2023_blocks_is_decoded_with_exact_amounts() -> None:
    expected = expected_events(LOGS)
    assert {kind: len(found) for kind, found in expected.items()} == {"erc20": 282, "erc721": 9, "v2": 69, "v3": 10}
    outputs = _normalize(LOGS)
    decoded = {
        "erc20": _by_position(outputs, "token_transfers", standard="erc20"),
        "erc721": _by_position(outputs, "token_transfers", standard="erc721"),
        "v2": _by_position(outputs, "dex_swaps", protocol="uniswap_v2"),
        "v3": _by_position(outputs, "dex_swaps", protocol="uniswap_v3"),
    }
    for kind, records in expected.items():
        assert decoded[kind].keys() == records.keys(), kind
        for at, fields in records.items():
            assert {k: decoded[kind][at][k] for k in fields} == fields, (kind, at)
    assert len(outputs) == 282 + 9 + 69 + 10
    by_log = {(row["transaction_hash"], row["log_index"]): row for row in LOGS}
    for key, (_, record) in outputs:
        row = by_log[(record["transaction_hash"], record["log_index"])]
        assert key == row["address"] == record.get("token_address", record.get("pool_address"))
        assert record["block_number"] == row["block_number"] and record["removed"] is False


def test_int256_amounts_keep_their_sign_and_uint256_amounts_their_size() -> None:
    outputs = _normalize(LOGS)
    v3 = list(_by_position(outputs, "dex_swaps", protocol="uniswap_v3").values())
    negative = [int(r["amount0"]) for r in v3 if int(r["amount0"]) < 0] + [
        int(r["amount1"]) for r in v3 if int(r["amount1"]) < 0
    ]
    # Every V3 swap moves one token in and the other out: exactly one negative amount per swap.
    assert len(negative) == len(v3) == 10
    assert all(int(r["amount0"]) * int(r["amount1"]) < 0 for r in v3)
    huge = [r for r in _by_position(outputs, "token_transfers").values() if int(r["value"]) >= 2**63]
    assert huge, "the data holds transfer values beyond a signed 64-bit long"
    v2 = list(_by_position(outputs, "dex_swaps", protocol="uniswap_v2").values())
    assert all(int(r["amount0"]) * int(r["amount1"]) < 0 for r in v2)


def test_topic0_of_every_decoded_event_is_the_one_in_event_signatures_md() -> None:
    layouts = [ERC20_TRANSFER, ERC721_TRANSFER, V2_SWAP, V2_MINT, V2_BURN, V3_SWAP, V3_MINT, V3_BURN]
    for layout in [*layouts, PAIR_CREATED, POOL_CREATED]:
        assert layout.topic0 == TOPICS[layout.signature], layout.signature


def test_logs_that_do_not_fit_their_event_become_dead_letters_with_the_reason() -> None:
    transfer = next(row for row in LOGS if row["topics"][0] == ERC20_TRANSFER.topic0 and len(row["topics"]) == 3)
    swap = next(row for row in LOGS if row["topics"] and row["topics"][0] == V3_SWAP.topic0)
    bad = [
        {**transfer, "data": transfer["data"][:-2]},  # 31 bytes
        {**transfer, "topics": transfer["topics"][:2]},  # no recipient
        {**swap, "data": swap["data"] + word(1)},  # an extra word
        {**swap, "topics": [swap["topics"][0], "0x" + "ff" * 32, swap["topics"][2]]},  # not an address
        {**transfer, "data": "0xzz" + transfer["data"][4:]},
    ]
    outputs = _normalize([*bad, transfer])
    dead = [rec for _, (topic, rec) in outputs if topic == "dead_letter"]
    assert [d["error_type"] for d in dead] == ["undecodable_log"] * len(bad)
    reasons = [d["reason"] for d in dead]
    assert "31 data bytes" in reasons[0] and "3 topics and 32 data bytes (erc20_transfer)" in reasons[0]
    assert "2 topics" in reasons[1]
    assert "192 data bytes" in reasons[2] and "160 data bytes (uniswap_v3_swap)" in reasons[2]
    assert "Padding bytes" in reasons[3]
    assert "not hex" in reasons[4]
    assert all(d["flow"] == "normalize_evm" and d["source_topic"] == "ethereum_logs" for d in dead)
    assert all(d["source_offset"] == 7 and b'"transaction_hash"' in d["payload"] for d in dead)
    assert [t for _, (t, _) in outputs].count("token_transfers") == 1, "the good log still decodes"


def test_logs_of_other_events_produce_nothing() -> None:
    deposit = "0xe1fffcc4923d04b559f4d29a8bfc6cda04eb5b0d3c460751c2402c5c5cc9109c"  # WETH Deposit(address,uint256)
    other = {TOPICS["Approval(address,address,uint256)"], TOPICS["Sync(uint112,uint112)"], deposit}
    rows = [row for row in LOGS if row["topics"] and row["topics"][0] in other]
    counts = Counter(row["topics"][0] for row in rows)
    assert len(counts) == 3 and sum(counts.values()) > 100
    assert _normalize(rows) == []
    assert _normalize([_log(topics=[], data="0x")]) == []


def test_uniswap_mint_and_burn_and_pool_creation() -> None:
    # The shipped blocks hold no Mint, Burn or pool creation: these logs are encoded here, from the layouts in
    # event_signatures.md (topic0 from the same table).
    pool, factory = "0x8ad599c3a0ff1de082011efddc58f1908eb6e6d8", "0x1f98431c8ad98523631ae4a59f267346ea31f984"
    token0, token1 = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
    owner, sender = "0xc36442b4a4522e871399cd717abdd847ab11fe88", "0x1111111254eeb25477b68fb85ed929f73a960582"
    big = 2**255 + 12345
    pool_created_topic = TOPICS["PoolCreated(address,address,uint24,int24,address)"]
    v3_mint_topic = TOPICS["Mint(address,address,int24,int24,uint128,uint256,uint256)"]
    v3_burn_topic = TOPICS["Burn(address,int24,int24,uint128,uint256,uint256)"]
    v2_mint_topic = TOPICS["Mint(address,uint256,uint256)"]
    v2_burn_topic = TOPICS["Burn(address,uint256,uint256,address)"]
    rows = [
        _log(
            address=factory,
            log_index=1,
            topics=[pool_created_topic, topic_of(token0), topic_of(token1), topic_of(3000)],
            data="0x" + word(60) + word(int(pool, 16)),
        ),
        _log(
            address=pool,
            log_index=2,
            topics=[v3_mint_topic, topic_of(owner), topic_of(-887220), topic_of(-60)],
            data="0x" + word(int(sender, 16)) + word(10**20) + word(big) + word(7),
        ),
        _log(
            address=pool,
            log_index=3,
            topics=[v3_burn_topic, topic_of(owner), topic_of(-60), topic_of(887220)],
            data="0x" + word(5) + word(0) + word(2**256 - 1),
        ),
        _log(address=token1, log_index=4, topics=[v2_mint_topic, topic_of(sender)], data="0x" + word(1) + word(2)),
        _log(
            address=token1,
            log_index=5,
            topics=[v2_burn_topic, topic_of(sender), topic_of(owner)],
            data="0x" + word(3) + word(4),
        ),
    ]
    outputs = _normalize(rows)
    liquidity = [rec for _, (topic, rec) in outputs if topic == "dex_liquidity"]
    assert [key for key, _ in outputs] == [pool, pool, token1, token1], "pool creation is learned, not published"
    mint, burn, v2_mint, v2_burn = liquidity
    assert (mint["protocol"], mint["action"], mint["owner"]) == ("uniswap_v3", "mint", owner)
    assert (mint["tick_lower"], mint["tick_upper"], mint["liquidity"]) == (-887220, -60, str(10**20))
    assert (mint["amount0"], mint["amount1"]) == (str(big), "7")
    assert (mint["token0_address"], mint["token1_address"]) == (token0, token1)
    assert (burn["action"], burn["tick_lower"], burn["tick_upper"]) == ("burn", -60, 887220)
    assert (burn["liquidity"], burn["amount0"], burn["amount1"]) == ("5", "0", str(2**256 - 1))
    assert (v2_mint["protocol"], v2_mint["action"], v2_mint["owner"], v2_mint["recipient"]) == (
        "uniswap_v2",
        "mint",
        sender,
        None,
    )
    assert (v2_mint["amount0"], v2_mint["amount1"], v2_mint["liquidity"], v2_mint["tick_lower"]) == (
        "1",
        "2",
        None,
        None,
    )
    assert (v2_burn["action"], v2_burn["owner"], v2_burn["recipient"]) == ("burn", sender, owner)
    assert v2_burn["token0_address"] is None, "an unknown pool leaves its tokens null"


def test_a_retracted_log_retracts_what_was_decoded_from_it() -> None:
    outputs = _normalize(LOGS[:50], removed=True)
    assert outputs and all(record["removed"] is True for _, (_, record) in outputs)


def test_scaling_is_exact_division_rounded_once_and_null_when_decimals_are_unknown() -> None:
    assert scaled(10**30 + 1, 18) == 1_000_000_000_000.0
    assert scaled(-123456789, 6) == -123.456789
    assert scaled(2**256 - 1, 0) == float(2**256 - 1)
    assert scaled(5, None) is None


@pytest.mark.parametrize(
    ("answer", "symbol"),
    [
        ("0x" + word(32) + word(4) + "55534443".ljust(64, "0"), "USDC"),  # ABI string
        ("0x" + "4d4b52".ljust(64, "0"), "MKR"),  # bytes32, as MKR answers
        ("0x", None),  # no such function
    ],
)
def test_tokensymbol_from_answers_are_read_as_strings_or_bytes32(answer: str, symbol: str | None) -> None:
    assert symbol_from_answer(answer) == symbol
