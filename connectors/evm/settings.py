"""Configuration of the Ethereum flows (``collect_evm``, ``normalize_evm``), from environment variables.

Field names are the environment variable names in lower case. Kafka settings stay in `connectors.config.Settings`;
these are only the chain side, validated once at start-up with every problem listed.
"""

from __future__ import annotations

from functools import cache
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.config import load_settings
from connectors.evm.rpc import RetryPolicy

__all__ = ["EvmSettings", "evm_settings"]


def _http_url(value: str | None, name: str) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"{name} {value!r} must start with http:// or https://")
    return value or None


class EvmSettings(BaseSettings):
    """Ethereum JSON-RPC collection and decoding settings (environment variables, case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    evm_rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC endpoint collect_evm follows.")
    evm_chain: str = Field(
        "ethereum", min_length=1, description="Chain name written in every record; also the source partition name."
    )
    evm_confirmations: int = Field(
        12, ge=0, description="Blocks below the head a block must be before it is collected (0 = the head itself)."
    )
    evm_poll_interval_s: float = Field(2.0, gt=0, description="Seconds between eth_blockNumber polls at the head.")
    evm_start_block: int | None = Field(
        None, ge=0, description="First block on a fresh start; unset = the first confirmed block. Ignored on resume."
    )
    evm_end_block: int | None = Field(
        None, ge=0, description="Stop after completing this block (backfills, tests); unset = follow the head forever."
    )
    evm_batch_size: int = Field(20, ge=1, le=1000, description="Blocks fetched per JSON-RPC batch request.")
    evm_reorg_window: int = Field(
        64, ge=1, description="Completed blocks remembered to find the common ancestor of a reorg."
    )
    evm_rpc_timeout_s: float = Field(10.0, gt=0, description="Timeout of one JSON-RPC HTTP request, seconds.")
    evm_rpc_attempts: int = Field(
        5, ge=1, description="Attempts per JSON-RPC request before the node is 'unavailable'."
    )
    evm_rpc_backoff_initial_s: float = Field(0.5, ge=0, description="First retry delay; doubles up to the maximum.")
    evm_rpc_backoff_max_s: float = Field(8.0, ge=0, description="Largest retry delay (also caps Retry-After).")
    evm_metadata_rpc_url: str | None = Field(
        None,
        description="JSON-RPC endpoint normalize_evm asks (eth_call) for token decimals/symbol and pool tokens; "
        "unset = metadata only from PairCreated/PoolCreated logs seen in the stream.",
    )
    evm_metadata_cache_size: int = Field(100_000, ge=1, description="Tokens and pools kept in the metadata cache.")
    evm_metadata_retry_s: float = Field(
        300.0, ge=0, description="After the metadata endpoint failed, seconds before normalize_evm asks it again."
    )

    @field_validator("evm_rpc_url")
    @classmethod
    def _rpc_url(cls, value: str) -> str:
        checked = _http_url(value, "EVM_RPC_URL")
        if checked is None:
            raise ValueError("EVM_RPC_URL is empty")
        return checked

    @field_validator("evm_metadata_rpc_url")
    @classmethod
    def _metadata_url(cls, value: str | None) -> str | None:
        return _http_url(value, "EVM_METADATA_RPC_URL")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        start, end = self.evm_start_block, self.evm_end_block
        if start is not None and end is not None and end < start:
            raise ValueError(f"EVM_END_BLOCK {end} is below EVM_START_BLOCK {start}")
        if self.evm_rpc_backoff_initial_s > self.evm_rpc_backoff_max_s:
            raise ValueError("EVM_RPC_BACKOFF_INITIAL_S is larger than EVM_RPC_BACKOFF_MAX_S")
        return self

    def retry_policy(self) -> RetryPolicy:
        """The JSON-RPC client's retry policy."""
        return RetryPolicy(
            attempts=self.evm_rpc_attempts,
            backoff_initial_s=self.evm_rpc_backoff_initial_s,
            backoff_max_s=self.evm_rpc_backoff_max_s,
            timeout_s=self.evm_rpc_timeout_s,
        )


@cache
def evm_settings() -> EvmSettings:
    """The process's Ethereum settings; raises ConfigError listing every invalid variable."""
    return load_settings(EvmSettings, "Ethereum configuration")
