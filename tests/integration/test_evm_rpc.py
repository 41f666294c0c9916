"""The JSON-RPC client and the token-metadata lookup against the real local JSON-RPC server (a child process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.evm.rpc import JsonRpcClient, RetryPolicy, RpcCall, RpcError, RpcUnavailable
from connectors.evm.token_metadata import TokenMetadata
from embedded.process import free_port
from evm_rpc import RecordedRpcServer
from evm_rpc.faults import FaultKind
from operators.evm.tokens import PoolInfo, TokenInfo
from tests.evm_support import word

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=4, backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=1.0)
WETH, USDT = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", "0xdac17f958d2ee523a2206206994597c13d831ec7"
WETH_USDT_V2 = "0x0d4a11d5eeaac28ec3f61d100daf4d40471f1852"
NOT_A_TOKEN = "0x000000000000000000000000000000000000dead"


def _string(text: str) -> str:
    return "0x" + word(32) + word(len(text)) + text.encode().hex().ljust(64, "0")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRpcServer]:
    with RecordedRpcServer(tmp_path_factory.mktemp("evm-rpc")) as server:
        yield server


@pytest.fixture
def client(node: RecordedRpcServer) -> Iterator[JsonRpcClient]:
    node.clear_faults()
    rpc = JsonRpcClient(node.url, FAST)
    yield rpc
    rpc.close()
    node.clear_faults()


def test_a_batch_is_answered_in_request_order(client: JsonRpcClient) -> None:
    numbers = [17173050, 1755634, 17173049, 483920]
    blocks = client.batch([RpcCall("eth_getBlockByNumber", (hex(n), False)) for n in numbers])
    assert [int(block["number"], 16) for block in blocks] == numbers
    assert client.call("eth_chainId") == "0x1"


@pytest.mark.parametrize("kind", ["rate_limit", "http_429", "http_503", "timeout"])
def test_transient_errors_are_retried_until_the_answer_comes(
    node: RecordedRpcServer, client: JsonRpcClient, kind: FaultKind
) -> None:
    before = node.faults_served().get(kind, 0)
    node.inject(kind, count=2, delay_s=3 * FAST.timeout_s)
    assert client.call("eth_blockNumber") == hex(17173050)
    assert node.faults_served()[kind] == before + 2


def test_retries_run_out_with_an_error_saying_what_failed(node: RecordedRpcServer, client: JsonRpcClient) -> None:
    node.inject("rate_limit", count=FAST.attempts)
    with pytest.raises(RpcUnavailable, match=r"eth_blockNumber failed after 4 attempts: .*rate limited \(-32005"):
        client.call("eth_blockNumber")


def test_a_request_the_node_refuses_is_not_retried(node: RecordedRpcServer, client: JsonRpcClient) -> None:
    before = len(node.requests())
    with pytest.raises(RpcError) as refused:
        client.call("eth_sendRawTransaction", "0x00")
    assert refused.value.code == -32601 and refused.value.fatal
    assert len(node.requests()) == before + 1


def test_an_unreachable_node_is_unavailable_after_the_retries() -> None:
    client = JsonRpcClient(f"http://127.0.0.1:{free_port()}", FAST)
    with pytest.raises(RpcUnavailable, match="connection failed"):
        client.call("eth_chainId")


def test_token_metadata_is_asked_once_per_contract_and_cached(node: RecordedRpcServer, client: JsonRpcClient) -> None:
    # Mainnet facts about these contracts (WETH9, Tether USD, the Uniswap V2 WETH/USDT pair), answered as
    # eth_call would; test_evm_normalize checks them against the transfers in the recorded blocks.
    node.set_calls(
        [
            {"to": WETH, "data": "0x313ce567", "result": "0x" + word(18)},
            {"to": WETH, "data": "0x95d89b41", "result": _string("WETH")},
            {"to": USDT, "data": "0x313ce567", "result": "0x" + word(6)},
            {"to": WETH_USDT_V2, "data": "0x0dfe1681", "result": "0x" + word(int(WETH, 16))},
            {"to": WETH_USDT_V2, "data": "0xd21220a7", "result": "0x" + word(int(USDT, 16))},
        ]
    )
    metadata = TokenMetadata(client)
    assert metadata.pools({WETH_USDT_V2, NOT_A_TOKEN}) == {WETH_USDT_V2: PoolInfo(WETH_USDT_V2, WETH, USDT)}
    tokens = metadata.tokens({WETH, USDT, NOT_A_TOKEN})
    assert tokens == {
        WETH: TokenInfo(WETH, "WETH", 18),
        USDT: TokenInfo(USDT, None, 6),
        NOT_A_TOKEN: TokenInfo(NOT_A_TOKEN, None, None),
    }
    asked = len(node.requests())
    assert metadata.tokens({WETH, NOT_A_TOKEN}) == {k: tokens[k] for k in (WETH, NOT_A_TOKEN)}
    assert metadata.pools({WETH_USDT_V2, NOT_A_TOKEN}) == {WETH_USDT_V2: PoolInfo(WETH_USDT_V2, WETH, USDT)}
    assert len(node.requests()) == asked, "answers, reverts included, are cached"


def test_an_unavailable_metadata_endpoint_leaves_metadata_unknown_and_is_not_asked_again_at_once(
    tmp_path: Path,
) -> None:
    with RecordedRpcServer(tmp_path) as node:
        node.inject("http_503", count=FAST.attempts)
        metadata = TokenMetadata(JsonRpcClient(node.url, FAST), retry_s=3600)
        assert metadata.tokens({WETH}) == {}
        assert node.faults_served() == {"http_503": FAST.attempts}
        assert metadata.tokens({WETH}) == {}
        assert [r for r in node.requests() if r["method"] == "eth_call"] == [], "within the retry delay nobody is asked"
