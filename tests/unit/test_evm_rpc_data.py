"""What the local JSON-RPC server serves: the recordings as recorded, the 2023 exports re-encoded, forks."""

from __future__ import annotations

import json
from functools import cache

import pytest

from evm_rpc.chain import RpcFailure, ServedChain
from evm_rpc.recordings import ChainData, load_chain_data, load_recordings, recorded_call
from tests.evm_support import BLOCKS_2023, ETHEREUM, RPC, TRANSFER, json_lines


@cache
def _data() -> ChainData:
    return load_chain_data(ETHEREUM)


def _chain(head: int | None = None) -> ServedChain:
    return ServedChain(_data(), head)


def test_recording_file_names_encode_method_and_params() -> None:
    assert recorded_call("web3_response.eth_getBlockByNumber_0x1ac9f3_true.json") == (
        "eth_getBlockByNumber",
        ("0x1ac9f3", True),
    )
    assert recorded_call("web3_response.eth_getBlockByNumber_latest_false.json") == (
        "eth_getBlockByNumber",
        ("latest", False),
    )
    with pytest.raises(ValueError, match="is not named"):
        recorded_call("expected_blocks.json")
    recordings = load_recordings(RPC)
    assert len(recordings) == len(list(RPC.rglob("web3_response.*.json"))) == 10
    for rec in recordings:
        if rec.method == "eth_getTransactionReceipt":
            assert rec.result["transactionHash"] == rec.params[0]


def test_recorded_blocks_and_receipts_are_served_exactly_as_recorded() -> None:
    chain = _chain()
    for path in RPC.rglob("web3_response.eth_getBlockByNumber_0x*_true.json"):
        number = path.name.split("_")[3]
        assert chain.block_by_number(number, True) == json.loads(path.read_text())["result"]
    for path in RPC.rglob("web3_response.eth_getTransactionReceipt_*.json"):
        recorded = json.loads(path.read_text())["result"]
        assert chain.receipt(recorded["transactionHash"]) == recorded


def test_the_2023_exports_are_re_encoded_consistently_with_the_block_headers() -> None:
    chain = _chain()
    blocks = json_lines(BLOCKS_2023 / "blocks.json")
    transactions = json_lines(BLOCKS_2023 / "transactions.json")
    logs = json_lines(BLOCKS_2023 / "logs.json")
    for exported in blocks:
        block = chain.block_by_number(hex(exported["number"]), True)
        assert block is not None and block["hash"] == exported["hash"]
        assert len(block["transactions"]) == exported["transaction_count"]
        assert [int(tx["transactionIndex"], 16) for tx in block["transactions"]] == list(
            range(exported["transaction_count"])
        )
        receipts = [chain.receipt(tx["hash"]) for tx in block["transactions"]]
        # The receipts' blooms are computed from the exported logs: together they must give the exported block bloom.
        bloom = 0
        for receipt in receipts:
            assert receipt is not None
            bloom |= int(receipt["logsBloom"], 16)
        assert bloom == int(exported["logs_bloom"], 16)
        last = receipts[-1]
        assert last is not None and int(last["cumulativeGasUsed"], 16) == exported["gas_used"]
        served_logs = chain.logs({"blockHash": exported["hash"]})
        mine = [g for g in logs if g["block_hash"] == exported["hash"]]
        assert [(int(g["logIndex"], 16), g["data"]) for g in served_logs] == sorted(
            (g["log_index"], g["data"]) for g in mine
        )
    value = {tx["hash"]: tx["value"] for tx in transactions}
    for exported in blocks:
        block = chain.block_by_number(hex(exported["number"]), True)
        assert block is not None
        assert all(int(tx["value"], 16) == value[tx["hash"]] for tx in block["transactions"])


def test_the_head_hides_later_blocks_and_tags_resolve_to_it() -> None:
    chain = _chain(head=17173049)
    assert chain.block_by_number(hex(17173050), False) is None
    latest = chain.block_by_number("latest", False)
    assert latest is not None and latest["number"] == hex(17173049)
    assert all(isinstance(tx, str) for tx in latest["transactions"])
    assert chain.block_by_number(hex(1755636), True) is None, "not recorded: null, like a lagging node"
    with pytest.raises(RpcFailure, match="invalid block reference"):
        chain.block_by_number("soon", False)


def test_get_logs_over_a_range_filters_by_address_and_topics() -> None:
    chain = _chain()
    weth = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
    got = chain.logs({"fromBlock": hex(17173049), "toBlock": "latest", "address": weth, "topics": [TRANSFER]})
    expected = [
        g
        for g in json_lines(BLOCKS_2023 / "logs.json")
        if g["address"] == weth and g["topics"] and g["topics"][0] == TRANSFER
    ]
    assert sorted((g["transactionHash"], int(g["logIndex"], 16)) for g in got) == sorted(
        (g["transaction_hash"], g["log_index"]) for g in expected
    )
    assert len(got) == 88


def test_logs_that_were_never_recorded_are_an_error_not_an_empty_list() -> None:
    chain = _chain()
    latest_recording = "0x7af5ba284473186783cef5ca9b5c6312e01864c5242f91a3d6c10b83358e149f"
    with pytest.raises(RpcFailure, match="not recorded"):
        chain.logs({"blockHash": latest_recording})
    with pytest.raises(RpcFailure, match="unknown block"):
        chain.logs({"blockHash": "0x" + "ab" * 32})


def test_a_fork_replaces_the_block_keeps_the_old_one_by_hash_and_extends_the_chain() -> None:
    chain = _chain(head=17173050)
    old = chain.block_by_number(hex(17173050), True)
    assert old is not None
    replaced_hash, extension_hash = chain.fork(17173050, keep_transactions=10, extend=1)
    new = chain.block_by_number(hex(17173050), True)
    assert new is not None and new["hash"] == replaced_hash != old["hash"]
    assert new["parentHash"] == old["parentHash"]
    assert [tx["hash"] for tx in new["transactions"]] == [tx["hash"] for tx in old["transactions"][:10]]
    assert chain.head == 17173051
    tip = chain.block_by_number("latest", False)
    assert tip is not None and tip["hash"] == extension_hash and tip["parentHash"] == replaced_hash
    assert chain.block_by_hash(old["hash"], True) == old, "the replaced block stays reachable by hash"
    kept = {tx["hash"] for tx in old["transactions"][:10]}
    new_logs = chain.logs({"blockHash": replaced_hash})
    assert new_logs and {g["transactionHash"] for g in new_logs} <= kept
    assert len(chain.logs({"blockHash": old["hash"]})) > len(new_logs)
    dropped = old["transactions"][10]["hash"]
    assert chain.receipt(dropped) is None
    receipt = chain.receipt(old["transactions"][0]["hash"])
    assert receipt is not None and receipt["blockHash"] == replaced_hash
