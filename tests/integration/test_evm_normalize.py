"""normalize_evm for real: the offline command, token metadata over eth_call, and the Kafka flow after collect_evm."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from connectors.evm.token_metadata import TokenMetadata
from connectors.kafka import read_topic
from embedded.kafka import TansuBroker
from evm_rpc import RecordedRpcServer
from operators.dead_letter import SourceRef
from operators.evm.etl_logs import log_record_from_export
from operators.evm.normalize import LogNormalizer
from schemas.serde import codec_for
from tests.evm_support import LOGS_2023, TRANSFER, expected_events, json_lines, topic_address, word, words
from tests.harness import flow_env, run_flow, settings_for

pytestmark = pytest.mark.integration

DECODED = ("token_transfers", "dex_swaps", "dex_liquidity")
WETH, USDT = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", "0xdac17f958d2ee523a2206206994597c13d831ec7"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH_USDT_V2 = "0x0d4a11d5eeaac28ec3f61d100daf4d40471f1852"
USDC_USDT_V3 = "0x3416cf6c708da44db2624d63ea0aaef7113527c6"


def _offline(tmp_path: Path, **env: str) -> list[dict[str, Any]]:
    out = tmp_path / "decoded.jsonl"
    run_flow(f"flows.normalize_evm:offline('{LOGS_2023}', '{out}')", flow_env("127.0.0.1:9", **env))
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_offline_command_decodes_an_ethereum_etl_export(tmp_path: Path) -> None:
    rows = _offline(tmp_path)
    kinds = Counter((r["topic"], r["value"].get("standard") or r["value"].get("protocol")) for r in rows)
    assert kinds == {
        ("token_transfers", "erc20"): 282,
        ("token_transfers", "erc721"): 9,
        ("dex_swaps", "uniswap_v2"): 69,
        ("dex_swaps", "uniswap_v3"): 10,
    }
    expected = expected_events(json_lines(LOGS_2023))
    kind_of = {"erc20": "erc20", "erc721": "erc721", "uniswap_v2": "v2", "uniswap_v3": "v3"}
    for row in rows:
        value = row["value"]
        fields = expected[kind_of[value.get("standard") or value["protocol"]]][
            (value["transaction_hash"], value["log_index"])
        ]
        assert {k: value[k] for k in fields} == fields
        assert row["key"] == value.get("token_address", value.get("pool_address"))
        assert all(isinstance(value[k], str) for k in ("value", "amount0", "amount1") if k in value)


def _string(text: str) -> str:
    return "0x" + word(32) + word(len(text)) + text.encode().hex().ljust(64, "0")


def test_known_tokens_and_pools_get_scaled_amounts_that_agree_with_the_transfers(tmp_path: Path) -> None:
    # Mainnet facts (decimals and symbols of WETH9, Tether USD and USD Coin; the tokens of the Uniswap V2 WETH/USDT
    # pair and the V3 USDC/USDT 0.01% pool), answered as eth_call would. The test checks the pools' tokens against
    # the recorded Transfer logs of the same transactions, so a wrong "fact" would fail it.
    calls = []
    for token, symbol, places in ((WETH, "WETH", 18), (USDT, "USDT", 6), (USDC, "USDC", 6)):
        calls += [
            {"to": token, "data": "0x313ce567", "result": "0x" + word(places)},
            {"to": token, "data": "0x95d89b41", "result": _string(symbol)},
        ]
    for pool, token0, token1 in ((WETH_USDT_V2, WETH, USDT), (USDC_USDT_V3, USDC, USDT)):
        calls += [
            {"to": pool, "data": "0x0dfe1681", "result": "0x" + word(int(token0, 16))},
            {"to": pool, "data": "0xd21220a7", "result": "0x" + word(int(token1, 16))},
        ]
    with RecordedRpcServer(tmp_path) as node:
        node.set_calls(calls)
        rows = _offline(tmp_path, EVM_METADATA_RPC_URL=node.url)
    decimals = {WETH: 18, USDT: 6, USDC: 6}
    transfers = [r["value"] for r in rows if r["topic"] == "token_transfers"]
    for transfer in transfers:
        token = transfer["token_address"]
        known = token in decimals and transfer["standard"] == "erc20"
        assert transfer["token_decimals"] == (decimals[token] if known else None)
        assert transfer["value_scaled"] == (int(transfer["value"]) / 10 ** decimals[token] if known else None)
    assert sum(1 for t in transfers if t["token_symbol"] == "WETH") == 88
    logs = json_lines(LOGS_2023)
    swaps = [r["value"] for r in rows if r["topic"] == "dex_swaps"]
    scaled = [s for s in swaps if s["pool_address"] in (WETH_USDT_V2, USDC_USDT_V3)]
    assert len(scaled) == 6
    for swap in scaled:
        pool = swap["pool_address"]
        moved = {
            (g["address"], topic_address(g["topics"][1]), topic_address(g["topics"][2]), words(g["data"])[0])
            for g in logs
            if g["transaction_hash"] == swap["transaction_hash"] and g["topics"][:1] == [TRANSFER]
        }
        for side in ("0", "1"):
            token, amount = swap[f"token{side}_address"], int(swap[f"amount{side}"])
            if amount > 0:  # into the pool: a transfer of this token to the pool, of this amount
                assert any(m[0] == token and m[2] == pool and m[3] == amount for m in moved), (swap, side)
            else:
                assert any(m[0] == token and m[1] == pool and m[3] == -amount for m in moved), (swap, side)
            assert swap[f"amount{side}_scaled"] == amount / 10 ** decimals[token]
    assert all(s["amount0_scaled"] is None and s["token0_address"] is None for s in swaps if s not in scaled)


def _consumed(env: dict[str, str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for topic in DECODED:
        for row in sorted(read_topic(settings_for(env), topic), key=lambda r: (r.partition, r.offset)):
            found[(topic, row.key or "")].append({k: v for k, v in row.value.items() if k != "receipt_timestamp"})
    return found


def test_collected_logs_decode_through_kafka_like_the_offline_step(kafka: TansuBroker, tmp_path: Path) -> None:
    with RecordedRpcServer(tmp_path, head=17173050) as node:
        env = flow_env(
            kafka.bootstrap,
            EVM_RPC_URL=node.url,
            EVM_CONFIRMATIONS="0",
            EVM_START_BLOCK="17173049",
            EVM_END_BLOCK="17173050",
            KAFKA_STOP_AT_END="true",
        )
        run_flow("flows.collect_evm:flow", env)
    collected = read_topic(settings_for(env), "ethereum_logs")
    transfer = next(r.value for r in collected if r.value["topics"][:1] == [TRANSFER] and len(r.value["topics"]) == 3)
    bad = dict(transfer, data=transfer["data"] + "00", log_index=9999)
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    producer.produce("ethereum_logs", key=bad["address"].encode(), value=codec_for("ethereum_logs").encode(bad))
    assert producer.flush(10) == 0
    run_flow("flows.normalize_evm:flow", env)

    records = [log_record_from_export(row, "ethereum") for row in json_lines(LOGS_2023)]
    expected: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for key, (topic, record) in LogNormalizer(TokenMetadata(None))([(r, SourceRef()) for r in records]):
        expected[(topic, key)].append({k: v for k, v in record.items() if k != "receipt_timestamp"})
    assert _consumed(env) == expected
    (dead,) = read_topic(settings_for(env), "dead_letter")
    assert dead.value["error_type"] == "undecodable_log" and dead.value["source_topic"] == "ethereum_logs"
    assert "3 topics and 33 data bytes" in dead.value["reason"]
    assert orjson.loads(dead.value["payload"])["log_index"] == 9999
