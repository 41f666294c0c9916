"""Ethereum settings: environment variables, validated at start-up with every problem named."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.config import ConfigError
from connectors.evm.settings import EvmSettings, evm_settings


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    evm_settings.cache_clear()
    yield
    evm_settings.cache_clear()


def test_environment_variables_set_the_fields_and_the_retry_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVM_RPC_URL", "https://node.example:8545")
    monkeypatch.setenv("EVM_CONFIRMATIONS", "64")
    monkeypatch.setenv("EVM_RPC_ATTEMPTS", "7")
    monkeypatch.setenv("EVM_RPC_TIMEOUT_S", "2.5")
    config = evm_settings()
    assert (config.evm_rpc_url, config.evm_confirmations) == ("https://node.example:8545", 64)
    policy = config.retry_policy()
    assert (policy.attempts, policy.timeout_s, policy.backoff_max_s) == (7, 2.5, 8.0)
    assert config.evm_metadata_rpc_url is None


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"EVM_RPC_URL": "ws://node:8546"}, "EVM_RPC_URL 'ws://node:8546' must start with http"),
        ({"EVM_CONFIRMATIONS": "-1"}, "EVM_CONFIRMATIONS"),
        ({"EVM_START_BLOCK": "10", "EVM_END_BLOCK": "9"}, "EVM_END_BLOCK 9 is below EVM_START_BLOCK 10"),
        ({"EVM_BATCH_SIZE": "0"}, "EVM_BATCH_SIZE"),
        ({"EVM_RPC_BACKOFF_INITIAL_S": "9"}, "EVM_RPC_BACKOFF_INITIAL_S is larger than EVM_RPC_BACKOFF_MAX_S"),
        ({"EVM_METADATA_RPC_URL": "node:8545"}, "EVM_METADATA_RPC_URL"),
    ],
)
def test_invalid_settings_stop_the_flow_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=problem):
        evm_settings()


def test_field_names_do_not_clash_with_the_pipeline_settings() -> None:
    from connectors.config import Settings

    assert not set(EvmSettings.model_fields) & set(Settings.model_fields)
    assert all(name.startswith("evm_") for name in EvmSettings.model_fields)
